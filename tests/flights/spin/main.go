// Flight spin never returns: a busy loop with no I/O (used for execution timeouts).
package main

var counter uint64

func main() {
	for {
		counter++
	}
}
