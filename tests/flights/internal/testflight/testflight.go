// Package testflight holds what the test flights share: reading the input
// object from stdin, building ConfigMaps, writing JSON to stdout and failing
// the way yoke flights do (a message on stderr and a non-zero exit), and
// reading and hashing looked-up Secrets.
package testflight

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
)

// Object is an untyped Kubernetes object, encoded with sorted keys.
type Object = map[string]any

// Meta is the part of an input object's metadata the flights use.
type Meta struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// Input returns the bytes on stdin; it reads them once, so flights may decode them more than once.
var Input = sync.OnceValue(func() []byte {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		Fail(fmt.Errorf("cannot read stdin: %w", err))
	}
	return data
})

// ReadInput decodes the JSON object on stdin into v. Empty stdin leaves v as it is.
// Numbers in untyped (any) fields stay exact (json.Number), so echoed values round-trip.
func ReadInput(v any) {
	data := Input()
	if len(bytes.TrimSpace(data)) == 0 {
		return
	}
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.UseNumber()
	if err := decoder.Decode(v); err != nil {
		Fail(fmt.Errorf("invalid input: %w", err))
	}
}

// ObjectMeta returns metadata for an output object named name, in meta's namespace if it has one.
func ObjectMeta(meta Meta, name string, labels map[string]string) Object {
	out := Object{"name": name}
	if meta.Namespace != "" {
		out["namespace"] = meta.Namespace
	}
	if len(labels) > 0 {
		out["labels"] = labels
	}
	return out
}

// ConfigMap returns a core/v1 ConfigMap named name, in meta's namespace if it has one.
func ConfigMap(meta Meta, name string, data map[string]string) Object {
	if data == nil {
		data = map[string]string{}
	}
	return Object{
		"apiVersion": "v1",
		"kind":       "ConfigMap",
		"metadata":   ObjectMeta(meta, name, nil),
		"data":       data,
	}
}

// WriteJSON writes v to stdout as one line of JSON.
func WriteJSON(v any) {
	if err := json.NewEncoder(os.Stdout).Encode(v); err != nil {
		Fail(fmt.Errorf("cannot write output: %w", err))
	}
}

// Fail prints "flight failed: <err>" to stderr and exits with code 1.
func Fail(err error) {
	fmt.Fprintf(os.Stderr, "flight failed: %v\n", err)
	os.Exit(1)
}

// Secret is the part of a core/v1 Secret the flights read (data values are base64 in JSON).
type Secret struct {
	Data map[string][]byte `json:"data"`
}

// SortedKeys are the keys of data in byte order.
func SortedKeys(data map[string][]byte) []string {
	keys := make([]string, 0, len(data))
	for key := range data {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	return keys
}

// HashData is the sha256 (hex) of data as sorted "key=value\n" lines of the decoded values.
func HashData(data map[string][]byte) string {
	digest := sha256.New()
	for _, key := range SortedKeys(data) {
		digest.Write([]byte(key + "=" + string(data[key]) + "\n"))
	}
	return hex.EncodeToString(digest.Sum(nil))
}
