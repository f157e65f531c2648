// Flight pipeline runs three Jobs in sequence: "<name>-one", "<name>-two" and
// "<name>-three" (busybox, backoffLimit 0, restartPolicy Never). It emits job
// one, reads each emitted job back with k8s.Lookup and emits the next job only
// once the previous one has condition Complete True; emitted jobs stay in the
// output so nothing is pruned. A job with condition Failed True stops the
// pipeline. spec.fail names a job suffix ("two") whose container runs "exit 1"
// and which is annotated pipeline.test/fail: "true".
//
// The parent is echoed with status.message ("waiting for job <job> to
// complete", "job <job> failed" or "all jobs have completed") and a Ready
// condition (False/Waiting, False/Failed or True/Completed).
package main

import (
	"errors"
	"time"

	"github.com/yokecd/yoke/pkg/flight/wasi/k8s"

	"atc.test/flights/internal/testflight"
)

var steps = []string{"one", "two", "three"}

type input struct {
	Metadata testflight.Meta `json:"metadata"`
	Spec     struct {
		Fail string `json:"fail"`
	} `json:"spec"`
	Status struct {
		Conditions []condition `json:"conditions"`
	} `json:"status"`
}

type condition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	LastTransitionTime string `json:"lastTransitionTime"`
}

// job is the part of a batch/v1 Job the flight reads.
type job struct {
	Status struct {
		Conditions []condition `json:"conditions"`
	} `json:"status"`
}

func (j *job) has(conditionType string) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == conditionType && c.Status == "True" {
			return true
		}
	}
	return false
}

func main() {
	var in input
	testflight.ReadInput(&in)
	parent := testflight.Object{}
	testflight.ReadInput(&parent)

	resources := []testflight.Object{}
	ready, reason, message := "True", "Completed", "all jobs have completed"
	for _, step := range steps {
		name := in.Metadata.Name + "-" + step
		resources = append(resources, jobObject(in.Metadata, name, step == in.Spec.Fail))

		current, err := k8s.Lookup[job](k8s.ResourceIdentifier{
			ApiVersion: "batch/v1",
			Kind:       "Job",
			Name:       name,
			Namespace:  in.Metadata.Namespace,
		})
		if err != nil && !k8s.IsErrNotFound(err) && !errors.Is(err, k8s.ErrorClusterAccessNotGranted) {
			testflight.Fail(err)
		}
		if current != nil && current.has("Failed") {
			ready, reason, message = "False", "Failed", "job "+name+" failed"
			break
		}
		if current == nil || !current.has("Complete") {
			ready, reason, message = "False", "Waiting", "waiting for job "+name+" to complete"
			break
		}
	}

	parent["status"] = testflight.Object{
		"message": message,
		"conditions": []testflight.Object{{
			"type":               "Ready",
			"status":             ready,
			"reason":             reason,
			"message":            message,
			"lastTransitionTime": transitionTime(in.Status.Conditions, ready),
		}},
	}
	testflight.WriteJSON(append(resources, parent))
}

func jobObject(meta testflight.Meta, name string, fail bool) testflight.Object {
	command := []string{"sh", "-c", "echo " + name}
	metadata := testflight.ObjectMeta(meta, name, nil)
	podMetadata := testflight.Object{}
	if fail {
		command = []string{"sh", "-c", "exit 1"}
		metadata["annotations"] = map[string]string{"pipeline.test/fail": "true"}
		// KWOK runs no containers; the test cluster fails pods carrying this annotation instead.
		podMetadata["annotations"] = map[string]string{"kwok.test/fail": "true"}
	}
	return testflight.Object{
		"apiVersion": "batch/v1",
		"kind":       "Job",
		"metadata":   metadata,
		"spec": testflight.Object{
			"backoffLimit": 0,
			"template": testflight.Object{
				"metadata": podMetadata,
				"spec": testflight.Object{
					"restartPolicy": "Never",
					"containers": []testflight.Object{{
						"name":    "busybox",
						"image":   "busybox",
						"command": command,
					}},
				},
			},
		},
	}
}

// transitionTime keeps the parent's Ready lastTransitionTime while its status is unchanged, else now.
func transitionTime(previous []condition, status string) string {
	for _, c := range previous {
		if c.Type == "Ready" && c.Status == status && c.LastTransitionTime != "" {
			return c.LastTransitionTime
		}
	}
	return time.Now().UTC().Format(time.RFC3339)
}
