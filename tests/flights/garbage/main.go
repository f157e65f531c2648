// Flight garbage prints "this is not yaml: [::" and some binary junk, then
// exits 0: output no parser accepts.
package main

import "os"

func main() {
	os.Stdout.WriteString("this is not yaml: [::")
	os.Stdout.Write([]byte{0x00, 0xff, 0xfe, 0x01, 0x1b, '[', '{', 0x80, 0xc3, 0x28, '\n'})
}
