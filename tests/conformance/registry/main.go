// A throwaway OCI registry for the conformance run (tests/conformance/), ours.
//
// yoke's ATC tests push flights to oci://localhost:5001 and have the ATC pull them from
// oci://registry:80. This program serves go-containerregistry's in-memory registry (the library
// yoke itself depends on) on every address given as an argument, so one registry answers both
// names. tests/conformance/yokesuite.py builds it inside the downloaded yoke module, whose go.mod
// pins the library, and stops it at the end of the run.
package main

import (
	"io"
	"log"
	"net/http"
	"os"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: registry ADDRESS [ADDRESS...]")
	}
	handler := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	failed := make(chan error, len(os.Args)-1)
	for _, address := range os.Args[1:] {
		go func() { failed <- http.ListenAndServe(address, handler) }()
	}
	log.Fatal(<-failed)
}
