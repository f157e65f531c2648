// Flight backend is the "Backend" scenario of yoke's dynamic-mode write-up.
// It outputs:
//   - Secret spec.secretName (default "<name>-secret"). The flight reads it
//     back with k8s.Lookup: once it exists its current data is the truth (a
//     user may have edited it) and is emitted unchanged as data; before that it
//     is emitted with stringData from spec.secretData (default password: changeme).
//   - Deployment "<name>" (spec.image default nginx, spec.replicas default 1)
//     whose pod template carries annotation backend.test/secret-hash, the
//     sha256 of the Secret's data as sorted "key=value\n" lines, and an env var
//     read from the Secret, so the pods roll when the Secret changes.
//   - ExternalSecret "<name>-external" (external-secrets.io/v1), only when the
//     host knows a REST mapping for it (k8s.GetRestMapping).
//   - the parent, echoed with status {secretHash, externalSecret: created|skipped}.
//
// Without cluster access the Secret counts as absent and the ExternalSecret is skipped.
package main

import (
	"errors"

	"github.com/yokecd/yoke/pkg/flight/wasi/k8s"

	"atc.test/flights/internal/testflight"
)

type input struct {
	Metadata testflight.Meta `json:"metadata"`
	Spec     struct {
		Image      string            `json:"image"`
		Replicas   *int              `json:"replicas"`
		SecretName string            `json:"secretName"`
		SecretData map[string]string `json:"secretData"`
	} `json:"spec"`
}

func main() {
	var in input
	testflight.ReadInput(&in)
	parent := testflight.Object{}
	testflight.ReadInput(&parent)

	name := in.Metadata.Name
	image := in.Spec.Image
	if image == "" {
		image = "nginx"
	}
	replicas := 1
	if in.Spec.Replicas != nil {
		replicas = *in.Spec.Replicas
	}
	secretName := in.Spec.SecretName
	if secretName == "" {
		secretName = name + "-secret"
	}

	current, err := k8s.Lookup[testflight.Secret](k8s.ResourceIdentifier{
		ApiVersion: "v1",
		Kind:       "Secret",
		Name:       secretName,
		Namespace:  in.Metadata.Namespace,
	})
	if err != nil && !k8s.IsErrNotFound(err) && !errors.Is(err, k8s.ErrorClusterAccessNotGranted) {
		testflight.Fail(err)
	}

	secretObject := testflight.Object{
		"apiVersion": "v1",
		"kind":       "Secret",
		"metadata":   testflight.ObjectMeta(in.Metadata, secretName, nil),
		"type":       "Opaque",
	}
	var data map[string][]byte
	if current != nil {
		// The Secret exists: keep whatever is in the cluster.
		data = current.Data
		if data == nil {
			data = map[string][]byte{}
		}
		secretObject["data"] = data
	} else {
		stringData := in.Spec.SecretData
		if len(stringData) == 0 {
			stringData = map[string]string{"password": "changeme"}
		}
		data = map[string][]byte{}
		for key, value := range stringData {
			data[key] = []byte(value)
		}
		secretObject["stringData"] = stringData
	}
	hash := testflight.HashData(data)

	container := testflight.Object{"name": "backend", "image": image}
	if keys := testflight.SortedKeys(data); len(keys) > 0 {
		container["env"] = []testflight.Object{{
			"name": "BACKEND_SECRET",
			"valueFrom": testflight.Object{
				"secretKeyRef": testflight.Object{"name": secretName, "key": keys[0]},
			},
		}}
	}
	labels := map[string]string{"app": name}
	deployment := testflight.Object{
		"apiVersion": "apps/v1",
		"kind":       "Deployment",
		"metadata":   testflight.ObjectMeta(in.Metadata, name, labels),
		"spec": testflight.Object{
			"replicas": replicas,
			"selector": testflight.Object{"matchLabels": labels},
			"template": testflight.Object{
				"metadata": testflight.Object{
					"labels":      labels,
					"annotations": map[string]string{"backend.test/secret-hash": hash},
				},
				"spec": testflight.Object{"containers": []testflight.Object{container}},
			},
		},
	}

	resources := []testflight.Object{secretObject, deployment}

	externalSecret := "skipped"
	if _, err := k8s.GetRestMapping("external-secrets.io/v1", "ExternalSecret"); err == nil {
		externalSecret = "created"
		resources = append(resources, testflight.Object{
			"apiVersion": "external-secrets.io/v1",
			"kind":       "ExternalSecret",
			"metadata":   testflight.ObjectMeta(in.Metadata, name+"-external", nil),
			"spec": testflight.Object{
				"refreshInterval": "1h",
				"secretStoreRef":  testflight.Object{"name": name + "-store", "kind": "SecretStore"},
				"target":          testflight.Object{"name": name + "-from-store"},
				"data": []testflight.Object{{
					"secretKey": "token",
					"remoteRef": testflight.Object{"key": "token"},
				}},
			},
		})
	}

	parent["status"] = testflight.Object{"secretHash": hash, "externalSecret": externalSecret}
	resources = append(resources, parent)
	testflight.WriteJSON(resources)
}
