// Flight lookup reads the core/v1 Secret spec.secretNamespace/spec.secretName
// with the SDK's k8s.Lookup (host function host.k8s_lookup), spec.lookups times
// (default 1), and outputs one ConfigMap "<name>-lookup" reporting the last
// outcome: data.state is found, notfound, forbidden, unauthenticated,
// notgranted or error; data.message is the error text; when found, data.hash
// is the sha256 of the Secret's data as sorted "key=value\n" lines.
// spec.lookups 0 makes no host call and reports state "none" (a benchmark baseline).
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
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

// secret is the part of a core/v1 Secret the flight needs (data values are base64 in JSON).
type secret struct {
	Data map[string][]byte `json:"data"`
}

func main() {
	var in input
	testflight.ReadInput(&in)

	lookups := 1
	if in.Spec.Lookups != nil {
		lookups = *in.Spec.Lookups
	}

	var found *secret
	var err error
	for range lookups {
		found, err = k8s.Lookup[secret](k8s.ResourceIdentifier{
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
		data["hash"] = hashData(found.Data)
	}
	testflight.WriteJSON([]testflight.Object{testflight.ConfigMap(in.Metadata, in.Metadata.Name+"-lookup", data)})
}

func hashData(data map[string][]byte) string {
	keys := make([]string, 0, len(data))
	for key := range data {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	digest := sha256.New()
	for _, key := range keys {
		digest.Write([]byte(key + "=" + string(data[key]) + "\n"))
	}
	return hex.EncodeToString(digest.Sum(nil))
}
