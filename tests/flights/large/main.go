// Flight large is a realistic big flight for benchmarks: it embeds the
// External Secrets chart (external-secrets-0.17.0.tgz, copied next to this file
// by tools/flightbuild.py), renders it with yoke's pkg/helm (release from
// YOKE_RELEASE or "large", namespace from YOKE_NAMESPACE; chart values from
// spec.values, e.g. fullnameOverride) and prints the resources as a JSON list.
// spec.replicas, when set, is applied to every Deployment through the typed
// k8s.io/api/apps/v1 struct, as real flights post-process charts.
package main

import (
	_ "embed"
	"fmt"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/yokecd/yoke/pkg/helm"

	"atc.test/flights/internal/testflight"
)

//go:embed external-secrets-0.17.0.tgz
var archive []byte

type input struct {
	Spec struct {
		Values   map[string]any `json:"values"`
		Replicas *int32         `json:"replicas"`
	} `json:"spec"`
}

func main() {
	var in input
	testflight.ReadInput(&in)

	chart, err := helm.LoadChartFromZippedArchive(archive)
	if err != nil {
		testflight.Fail(fmt.Errorf("cannot load chart: %w", err))
	}
	release := os.Getenv("YOKE_RELEASE")
	if release == "" {
		release = "large"
	}
	values := in.Spec.Values
	if values == nil {
		values = map[string]any{}
	}
	resources, err := chart.Render(release, os.Getenv("YOKE_NAMESPACE"), values)
	if err != nil {
		testflight.Fail(fmt.Errorf("cannot render chart: %w", err))
	}
	if in.Spec.Replicas != nil {
		for _, resource := range resources {
			if err := setReplicas(resource, *in.Spec.Replicas); err != nil {
				testflight.Fail(err)
			}
		}
	}
	testflight.WriteJSON(resources)
}

func setReplicas(resource *unstructured.Unstructured, replicas int32) error {
	if resource.GroupVersionKind() != appsv1.SchemeGroupVersion.WithKind("Deployment") {
		return nil
	}
	var deployment appsv1.Deployment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(resource.Object, &deployment); err != nil {
		return fmt.Errorf("deployment %s: %w", resource.GetName(), err)
	}
	deployment.Spec.Replicas = &replicas
	object, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&deployment)
	if err != nil {
		return fmt.Errorf("deployment %s: %w", resource.GetName(), err)
	}
	resource.Object = object
	return nil
}
