// Flight app waits for a connection Secret that someone else creates:
// spec.connectionSecret (default "<name>-connection") in the parent's
// namespace, read with k8s.Lookup (the Airway grants access to it with a
// resourceAccessMatchers entry such as "Secret:<name>").
// When the Secret exists the flight outputs Deployment "<name>" whose pod
// template has annotation app.test/connection-hash (sha256 of the Secret's
// data as sorted "key=value\n" lines) and echoes the parent with status
// {phase: Running, message: connected}. When it is missing (NotFound),
// forbidden or cluster access is not granted, it outputs only the parent with
// status {phase: Waiting, message: "waiting for secret <connectionSecret>"}.
package main

import (
	"errors"

	"github.com/yokecd/yoke/pkg/flight/wasi/k8s"

	"atc.test/flights/internal/testflight"
)

type input struct {
	Metadata testflight.Meta `json:"metadata"`
	Spec     struct {
		ConnectionSecret string `json:"connectionSecret"`
	} `json:"spec"`
}

func main() {
	var in input
	testflight.ReadInput(&in)
	parent := testflight.Object{}
	testflight.ReadInput(&parent)

	name := in.Metadata.Name
	secretName := in.Spec.ConnectionSecret
	if secretName == "" {
		secretName = name + "-connection"
	}

	connection, err := k8s.Lookup[testflight.Secret](k8s.ResourceIdentifier{
		ApiVersion: "v1",
		Kind:       "Secret",
		Name:       secretName,
		Namespace:  in.Metadata.Namespace,
	})
	if err != nil {
		if !k8s.IsErrNotFound(err) && !k8s.IsErrForbidden(err) && !errors.Is(err, k8s.ErrorClusterAccessNotGranted) {
			testflight.Fail(err)
		}
		parent["status"] = testflight.Object{"phase": "Waiting", "message": "waiting for secret " + secretName}
		testflight.WriteJSON([]testflight.Object{parent})
		return
	}

	labels := map[string]string{"app": name}
	deployment := testflight.Object{
		"apiVersion": "apps/v1",
		"kind":       "Deployment",
		"metadata":   testflight.ObjectMeta(in.Metadata, name, labels),
		"spec": testflight.Object{
			"replicas": 1,
			"selector": testflight.Object{"matchLabels": labels},
			"template": testflight.Object{
				"metadata": testflight.Object{
					"labels":      labels,
					"annotations": map[string]string{"app.test/connection-hash": testflight.HashData(connection.Data)},
				},
				"spec": testflight.Object{"containers": []testflight.Object{{
					"name":    "app",
					"image":   "nginx",
					"envFrom": []testflight.Object{{"secretRef": testflight.Object{"name": secretName}}},
				}}},
			},
		},
	}
	parent["status"] = testflight.Object{"phase": "Running", "message": "connected"}
	testflight.WriteJSON([]testflight.Object{deployment, parent})
}
