// Flight status echoes its input (the parent custom resource) with a status
// set ({phase: Echoed, observed: spec.value, conditions: [Ready True]}) and
// outputs a JSON list of the parent and a ConfigMap "<name>-child".
// spec.onlyParent true outputs only the parent (a list of one); spec.fail true
// outputs the parent alone with its status and exits 1, as yoke flights do
// with flight.JSONEncodeWithError.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/yokecd/yoke/pkg/flight"

	"atc.test/flights/internal/testflight"
)

type input struct {
	Metadata testflight.Meta `json:"metadata"`
	Spec     struct {
		Value      any  `json:"value"`
		OnlyParent bool `json:"onlyParent"`
		Fail       bool `json:"fail"`
	} `json:"spec"`
}

func main() {
	var in input
	testflight.ReadInput(&in)
	parent := testflight.Object{}
	testflight.ReadInput(&parent)

	parent["status"] = testflight.Object{
		"phase":    "Echoed",
		"observed": in.Spec.Value,
		"conditions": []testflight.Object{{
			"type":               "Ready",
			"status":             "True",
			"reason":             "Echoed",
			"message":            "status set by flight",
			"lastTransitionTime": "2020-01-01T00:00:00Z",
		}},
	}

	if in.Spec.Fail {
		err := errors.New("status flight asked to fail")
		if err := flight.JSONEncodeWithError(os.Stdout, parent, err); err != nil {
			fmt.Fprintf(os.Stderr, "flight failed: %v\n", err)
			os.Exit(1)
		}
	}

	resources := []testflight.Object{parent}
	if !in.Spec.OnlyParent {
		child := testflight.ConfigMap(in.Metadata, in.Metadata.Name+"-child", map[string]string{"parent": in.Metadata.Name})
		resources = append(resources, child)
	}
	testflight.WriteJSON(resources)
}
