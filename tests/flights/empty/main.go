// Flight empty prints nothing and exits 0.
package main

func main() {}
