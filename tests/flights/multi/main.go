// Flight multi emits children chosen by its input, for prune and scale tests:
// one ConfigMap "<name>-<key>" per entry of spec.configMaps (a map of key to
// value, stored as data.value), plus an apps/v1 Deployment "<name>" when
// spec.replicas is set. With spec.children N (and no configMaps) it emits N
// ConfigMaps "<name>-0".."<name>-(N-1)".
package main

import (
	"slices"
	"strconv"

	"atc.test/flights/internal/testflight"
)

type input struct {
	Metadata testflight.Meta `json:"metadata"`
	Spec     struct {
		ConfigMaps map[string]string `json:"configMaps"`
		Children   int               `json:"children"`
		Replicas   *int              `json:"replicas"`
	} `json:"spec"`
}

func main() {
	var in input
	testflight.ReadInput(&in)
	values := in.Spec.ConfigMaps
	if len(values) == 0 && in.Spec.Children > 0 {
		values = map[string]string{}
		for i := range in.Spec.Children {
			values[strconv.Itoa(i)] = "child " + strconv.Itoa(i)
		}
	}
	keys := make([]string, 0, len(values))
	for key := range values {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	objects := []testflight.Object{}
	for _, key := range keys {
		name := in.Metadata.Name + "-" + key
		objects = append(objects, testflight.ConfigMap(in.Metadata, name, map[string]string{"value": values[key]}))
	}
	if in.Spec.Replicas != nil {
		objects = append(objects, deployment(in.Metadata, *in.Spec.Replicas))
	}
	testflight.WriteJSON(objects)
}

func deployment(meta testflight.Meta, replicas int) testflight.Object {
	labels := map[string]string{"app": meta.Name}
	return testflight.Object{
		"apiVersion": "apps/v1",
		"kind":       "Deployment",
		"metadata":   testflight.ObjectMeta(meta, meta.Name, labels),
		"spec": map[string]any{
			"replicas": replicas,
			"selector": map[string]any{"matchLabels": labels},
			"template": map[string]any{
				"metadata": map[string]any{"labels": labels},
				"spec":     map[string]any{"containers": []any{map[string]any{"name": "app", "image": "nginx"}}},
			},
		},
	}
}
