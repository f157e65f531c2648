// Flight echo prints the objects its input lists under spec.objects, unchanged, as one stage.
// It stands for a flight whose author chose what to create: tests use it to see what the ATC
// refuses to apply (cluster-scoped kinds, RBAC, webhook configurations) whatever a flight prints.
package main

import "atc.test/flights/internal/testflight"

type input struct {
	Spec struct {
		Objects []testflight.Object `json:"objects"`
	} `json:"spec"`
}

func main() {
	var in input
	testflight.ReadInput(&in)
	if in.Spec.Objects == nil {
		in.Spec.Objects = []testflight.Object{}
	}
	testflight.WriteJSON(in.Spec.Objects)
}
