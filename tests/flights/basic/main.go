// Flight basic turns a custom resource into a ConfigMap "<name>-config" holding
// spec.data and an apps/v1 Deployment "<name>" (spec.replicas, default 1;
// spec.image, default "nginx"). The ConfigMap's flight.test/* annotations show
// the execution environment (release, namespaces, yoke version, argv).
// spec.emit "yaml" prints a YAML document stream instead of a JSON list.
package main

import (
	"encoding/json"
	"os"

	"sigs.k8s.io/yaml"

	"atc.test/flights/internal/testflight"
)

type input struct {
	Metadata testflight.Meta `json:"metadata"`
	Spec     struct {
		Replicas *int              `json:"replicas"`
		Image    string            `json:"image"`
		Data     map[string]string `json:"data"`
		Emit     string            `json:"emit"`
	} `json:"spec"`
}

func main() {
	var in input
	testflight.ReadInput(&in)

	replicas := 1
	if in.Spec.Replicas != nil {
		replicas = *in.Spec.Replicas
	}
	image := in.Spec.Image
	if image == "" {
		image = "nginx"
	}
	argv, _ := json.Marshal(os.Args)

	name := in.Metadata.Name
	labels := map[string]string{"app": name}

	config := testflight.ConfigMap(in.Metadata, name+"-config", in.Spec.Data)
	config["metadata"].(testflight.Object)["annotations"] = map[string]string{
		"flight.test/release":      os.Getenv("YOKE_RELEASE"),
		"flight.test/namespace":    os.Getenv("YOKE_NAMESPACE"),
		"flight.test/ns-env":       os.Getenv("NAMESPACE"),
		"flight.test/yoke-version": os.Getenv("YOKE_VERSION"),
		"flight.test/argv":         string(argv),
	}

	deployment := testflight.Object{
		"apiVersion": "apps/v1",
		"kind":       "Deployment",
		"metadata":   testflight.ObjectMeta(in.Metadata, name, labels),
		"spec": testflight.Object{
			"replicas": replicas,
			"selector": testflight.Object{"matchLabels": labels},
			"template": testflight.Object{
				"metadata": testflight.Object{"labels": labels},
				"spec": testflight.Object{
					"containers": []testflight.Object{{"name": "app", "image": image}},
				},
			},
		},
	}

	resources := []testflight.Object{config, deployment}
	if in.Spec.Emit != "yaml" {
		testflight.WriteJSON(resources)
		return
	}
	for i, resource := range resources {
		doc, err := yaml.Marshal(resource)
		if err != nil {
			testflight.Fail(err)
		}
		if i > 0 {
			os.Stdout.WriteString("---\n")
		}
		os.Stdout.Write(doc)
	}
}
