// Flight stages outputs two stages: first the CustomResourceDefinition
// gadgets.stages.test (kind Gadget, namespaced, v1 with a schema that keeps
// unknown fields but requires spec.size, when set, to be an integer of at least
// 0), then a Gadget named after the input's metadata.name with spec.size from
// the input's spec.size.
package main

import "atc.test/flights/internal/testflight"

type input struct {
	Metadata testflight.Meta `json:"metadata"`
	Spec     struct {
		Size any `json:"size"`
	} `json:"spec"`
}

func main() {
	var in input
	testflight.ReadInput(&in)

	crd := testflight.Object{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   testflight.Object{"name": "gadgets.stages.test"},
		"spec": testflight.Object{
			"group": "stages.test",
			"scope": "Namespaced",
			"names": testflight.Object{
				"kind":     "Gadget",
				"listKind": "GadgetList",
				"plural":   "gadgets",
				"singular": "gadget",
			},
			"versions": []testflight.Object{{
				"name":    "v1",
				"served":  true,
				"storage": true,
				"schema": testflight.Object{
					"openAPIV3Schema": testflight.Object{
						"type":                                 "object",
						"x-kubernetes-preserve-unknown-fields": true,
						"properties": testflight.Object{
							"spec": testflight.Object{
								"type":                                 "object",
								"x-kubernetes-preserve-unknown-fields": true,
								"properties": testflight.Object{
									"size": testflight.Object{"type": "integer", "minimum": 0},
								},
							},
						},
					},
				},
			}},
		},
	}

	gadget := testflight.Object{
		"apiVersion": "stages.test/v1",
		"kind":       "Gadget",
		"metadata":   testflight.ObjectMeta(in.Metadata, in.Metadata.Name, nil),
		"spec":       testflight.Object{"size": in.Spec.Size},
	}

	testflight.WriteJSON([][]testflight.Object{{crd}, {gadget}})
}
