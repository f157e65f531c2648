// Flight membomb allocates memory in 1 MiB blocks and touches every page,
// keeping all of it, until the runtime dies (used with a memory cap: Go prints
// "fatal error: out of memory" and exits 2).
package main

var blocks [][]byte

func main() {
	for {
		block := make([]byte, 1<<20)
		for i := 0; i < len(block); i += 4096 {
			block[i] = byte(len(blocks) + 1)
		}
		blocks = append(blocks, block)
	}
}
