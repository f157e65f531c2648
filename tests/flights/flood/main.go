// Flight flood writes 'x' to stdout forever in 64 KiB chunks (used for the
// stdout cap); it exits 1 when a write fails.
package main

import (
	"bytes"
	"os"
)

func main() {
	chunk := bytes.Repeat([]byte{'x'}, 64<<10)
	for {
		if _, err := os.Stdout.Write(chunk); err != nil {
			os.Exit(1)
		}
	}
}
