// Flight medium is a mid-sized realistic flight (about 20 MB of wasm) for the
// warm-load benchmark: it builds typed k8s.io/api objects (Deployment, Service,
// Ingress, HorizontalPodAutoscaler, PodDisruptionBudget, ServiceAccount, Role,
// RoleBinding, CronJob) for the input's name and prints them as a JSON list.
package main

import (
	"encoding/json"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/yokecd/yoke/pkg/flight"

	"atc.test/flights/internal/testflight"
)

type input struct {
	Metadata testflight.Meta `json:"metadata"`
}

func main() {
	var in input
	testflight.ReadInput(&in)
	name := in.Metadata.Name
	if name == "" {
		name = flight.Release()
	}
	labels := map[string]string{"app": name}
	meta := func(kind, apiVersion string) (metav1.TypeMeta, metav1.ObjectMeta) {
		return metav1.TypeMeta{Kind: kind, APIVersion: apiVersion}, metav1.ObjectMeta{Name: name, Labels: labels}
	}
	deployTM, deployOM := meta("Deployment", "apps/v1")
	svcTM, svcOM := meta("Service", "v1")
	ingTM, ingOM := meta("Ingress", "networking.k8s.io/v1")
	hpaTM, hpaOM := meta("HorizontalPodAutoscaler", "autoscaling/v2")
	pdbTM, pdbOM := meta("PodDisruptionBudget", "policy/v1")
	saTM, saOM := meta("ServiceAccount", "v1")
	roleTM, roleOM := meta("Role", "rbac.authorization.k8s.io/v1")
	bindTM, bindOM := meta("RoleBinding", "rbac.authorization.k8s.io/v1")
	cronTM, cronOM := meta("CronJob", "batch/v1")
	pod := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{
			ServiceAccountName: name,
			Containers:         []corev1.Container{{Name: "app", Image: "nginx", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}},
		},
	}
	pathType := networkingv1.PathTypePrefix
	minAvailable := intstr.FromInt32(1)
	objects := []any{
		appsv1.Deployment{TypeMeta: deployTM, ObjectMeta: deployOM, Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: pod}},
		corev1.Service{TypeMeta: svcTM, ObjectMeta: svcOM, Spec: corev1.ServiceSpec{
			Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}},
		networkingv1.Ingress{TypeMeta: ingTM, ObjectMeta: ingOM, Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{
			Host: name + ".example.com",
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{
				Path: "/", PathType: &pathType,
				Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
					Name: name, Port: networkingv1.ServiceBackendPort{Number: 80}}},
			}}}},
		}}}},
		autoscalingv2.HorizontalPodAutoscaler{TypeMeta: hpaTM, ObjectMeta: hpaOM, Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{Kind: "Deployment", Name: name, APIVersion: "apps/v1"},
			MaxReplicas:    5}},
		policyv1.PodDisruptionBudget{TypeMeta: pdbTM, ObjectMeta: pdbOM, Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: &minAvailable, Selector: &metav1.LabelSelector{MatchLabels: labels}}},
		corev1.ServiceAccount{TypeMeta: saTM, ObjectMeta: saOM},
		rbacv1.Role{TypeMeta: roleTM, ObjectMeta: roleOM, Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch"}}}},
		rbacv1.RoleBinding{TypeMeta: bindTM, ObjectMeta: bindOM,
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name}}},
		batchv1.CronJob{TypeMeta: cronTM, ObjectMeta: cronOM, Spec: batchv1.CronJobSpec{Schedule: "*/5 * * * *",
			JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: pod}}}},
	}
	if err := json.NewEncoder(os.Stdout).Encode(objects); err != nil {
		testflight.Fail(err)
	}
}
