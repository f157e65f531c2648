// Flight restmapping asks the host for the REST mapping of spec.group ("" for
// core, "apps" or "apps/v1") and spec.kind with the SDK's k8s.GetRestMapping
// (host function host.k8s_rest_mapping) and outputs one ConfigMap
// "<name>-mapping" with data group, version, kind, resource and namespaced
// ("true"/"false"), or state and message on error (state names as in lookup).
package main

import (
	"strconv"

	"github.com/yokecd/yoke/pkg/flight/wasi/k8s"

	"atc.test/flights/internal/hoststate"
	"atc.test/flights/internal/testflight"
)

type input struct {
	Metadata testflight.Meta `json:"metadata"`
	Spec     struct {
		Group string `json:"group"`
		Kind  string `json:"kind"`
	} `json:"spec"`
}

func main() {
	var in input
	testflight.ReadInput(&in)

	var data map[string]string
	mapping, err := k8s.GetRestMapping(in.Spec.Group, in.Spec.Kind)
	if err != nil {
		data = map[string]string{"state": hoststate.Of(err), "message": err.Error()}
	} else {
		data = map[string]string{
			"group":      mapping.Group,
			"version":    mapping.Version,
			"kind":       mapping.Kind,
			"resource":   mapping.Resource,
			"namespaced": strconv.FormatBool(mapping.Namespaced),
		}
	}
	testflight.WriteJSON([]testflight.Object{testflight.ConfigMap(in.Metadata, in.Metadata.Name+"-mapping", data)})
}
