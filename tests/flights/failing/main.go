// Flight failing writes "flight failed: intentional failure for <name>" to
// stderr and exits 1. With spec.partialStdout true it first writes a valid
// ConfigMap "<name>-partial" to stdout.
package main

import (
	"fmt"

	"atc.test/flights/internal/testflight"
)

type input struct {
	Metadata testflight.Meta `json:"metadata"`
	Spec     struct {
		PartialStdout bool `json:"partialStdout"`
	} `json:"spec"`
}

func main() {
	var in input
	testflight.ReadInput(&in)
	if in.Spec.PartialStdout {
		testflight.WriteJSON(testflight.ConfigMap(in.Metadata, in.Metadata.Name+"-partial", map[string]string{"partial": "true"}))
	}
	testflight.Fail(fmt.Errorf("intentional failure for %s", in.Metadata.Name))
}
