// Flight converter is a CRD conversion webhook module (run by the ATC with
// argv ["converter"] and no host functions) for Gadget in group convert.test:
// v1 has spec.size (integer); v2 has spec.dimensions.size (integer) and
// spec.dimensions.unit (string, default "cm"). v1→v2 moves size into
// dimensions, v2→v1 moves it back and drops unit. It reads an
// apiextensions.k8s.io/v1 ConversionReview request on stdin and prints the
// review with response.uid = request.uid and every request.objects[i]
// converted to request.desiredAPIVersion (status untouched), or
// response.result {status: Failure, message} when an object cannot be converted.
// Metadata is what a converter written with typed Go structs returns (yoke's own
// test converter is one): only name, namespace, uid, labels and annotations, and
// no metadata at all when none of them is set (ObjectMeta with omitzero).
package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"atc.test/flights/internal/testflight"
)

// group is the Gadget group; subdomains of it (t1234.convert.test) are accepted too, so
// tests can give every Airway a group of its own.
const group = "convert.test"

type review struct {
	Request struct {
		UID               string              `json:"uid"`
		DesiredAPIVersion string              `json:"desiredAPIVersion"`
		Objects           []testflight.Object `json:"objects"`
	} `json:"request"`
}

func main() {
	var in review
	testflight.ReadInput(&in)

	response := testflight.Object{"uid": in.Request.UID}
	converted := make([]testflight.Object, 0, len(in.Request.Objects))
	var failure error
	for i, object := range in.Request.Objects {
		if err := convert(object, in.Request.DesiredAPIVersion); err != nil {
			failure = fmt.Errorf("object %d: %w", i, err)
			break
		}
		converted = append(converted, object)
	}
	if failure != nil {
		response["result"] = testflight.Object{"status": "Failure", "message": failure.Error()}
	} else {
		response["result"] = testflight.Object{"status": "Success"}
		response["convertedObjects"] = converted
	}

	testflight.WriteJSON(testflight.Object{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "ConversionReview",
		"response":   response,
	})
}

// convert rewrites object (a Gadget) in place to apiVersion desired.
func convert(object testflight.Object, desired string) error {
	from, _ := object["apiVersion"].(string)
	fromGroup, _, fromKnown := gadgetVersion(from)
	desiredGroup, desiredVersion, desiredKnown := gadgetVersion(desired)
	if object["kind"] != "Gadget" || !fromKnown || !desiredKnown || fromGroup != desiredGroup {
		return fmt.Errorf("cannot convert %v %q to %q", object["kind"], from, desired)
	}
	spec := map[string]any{}
	if raw, ok := object["spec"]; ok && raw != nil {
		if spec, ok = raw.(map[string]any); !ok {
			return fmt.Errorf("spec must be an object, got %v", raw)
		}
	}
	switch {
	case from == desired:
	case desiredVersion == "v2": // v1 → v2
		dimensions := map[string]any{"unit": "cm"}
		if size, ok := spec["size"]; ok {
			if err := checkInteger("spec.size", size); err != nil {
				return err
			}
			dimensions["size"] = size
			delete(spec, "size")
		}
		spec["dimensions"] = dimensions
	default: // v2 → v1
		if raw, ok := spec["dimensions"]; ok {
			dimensions, isObject := raw.(map[string]any)
			if !isObject {
				return fmt.Errorf("spec.dimensions must be an object, got %v", raw)
			}
			if size, ok := dimensions["size"]; ok {
				if err := checkInteger("spec.dimensions.size", size); err != nil {
					return err
				}
				spec["size"] = size
			}
			delete(spec, "dimensions")
		}
	}
	object["spec"] = spec
	object["apiVersion"] = desired
	typedMetadata(object)
	return nil
}

// typedMetadata keeps the metadata fields a typed converter copies, and drops an empty result.
func typedMetadata(object testflight.Object) {
	metadata, _ := object["metadata"].(map[string]any)
	kept := map[string]any{}
	for _, key := range []string{"name", "namespace", "uid", "labels", "annotations"} {
		if value, ok := metadata[key]; ok && value != nil && value != "" {
			kept[key] = value
		}
	}
	if len(kept) == 0 {
		delete(object, "metadata")
		return
	}
	object["metadata"] = kept
}

// gadgetVersion splits a Gadget apiVersion (group convert.test or a subdomain of it, version v1 or v2).
func gadgetVersion(apiVersion string) (string, string, bool) {
	g, version, found := strings.Cut(apiVersion, "/")
	ours := g == group || strings.HasSuffix(g, "."+group)
	return g, version, found && ours && (version == "v1" || version == "v2")
}

func checkInteger(field string, value any) error {
	if number, ok := value.(json.Number); ok {
		if _, err := number.Int64(); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s must be an integer, got %v", field, value)
}
