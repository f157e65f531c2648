// Flight lookup reads the core/v1 Secret spec.secretNamespace/spec.secretName
// with the SDK's k8s.Lookup (host function host.k8s_lookup), spec.lookups times
// (default 1), and outputs one ConfigMap "<name>-lookup" reporting the last
// outcome: data.state is found, notfound, forbidden, unauthenticated,
// notgranted or error; data.message is the error text; when found, data.hash
// is the sha256 of the Secret's data as sorted "key=value\n" lines.
// spec.lookups 0 makes no host call and reports state "none" (a benchmark baseline).
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
		SecretName      string `json:"secretName"`
		SecretNamespace string `json:"secretNamespace"`
		Lookups         *int   `json:"lookups"`
	} `json:"spec"`
}

func main() {
	var in input
	testflight.ReadInput(&in)

	lookups := 1
	if in.Spec.Lookups != nil {
		lookups = *in.Spec.Lookups
	}

	var found *testflight.Secret
	var err error
	for range lookups {
		found, err = k8s.Lookup[testflight.Secret](k8s.ResourceIdentifier{
			ApiVersion: "v1",
			Kind:       "Secret",
			Name:       in.Spec.SecretName,
			Namespace:  in.Spec.SecretNamespace,
		})
	}

	data := map[string]string{"lookups": strconv.Itoa(lookups), "state": hoststate.Of(err), "message": ""}
	switch {
	case lookups < 1:
		data["state"] = "none"
	case err != nil:
		data["message"] = err.Error()
	default:
		data["hash"] = testflight.HashData(found.Data)
	}
	testflight.WriteJSON([]testflight.Object{testflight.ConfigMap(in.Metadata, in.Metadata.Name+"-lookup", data)})
}
