{{/* Chart name ("atc" unless nameOverride). */}}
{{- define "atc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: also the webhook Service name, i.e. SVC_NAME. */}}
{{- define "atc.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "atc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object; pass (dict "ctx" $ "component" "controller"). */}}
{{- define "atc.labels" -}}
helm.sh/chart: {{ include "atc.chart" .ctx }}
{{ include "atc.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "atc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "atc.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* SVC_NAME: the webhook Service. */}}
{{- define "atc.svcName" -}}
{{- include "atc.fullname" . -}}
{{- end -}}

{{/* The controller's ServiceAccount: "<SVC_NAME>-service-account", the name the webhooks' match
conditions exempt (atc.model.webhook_configs.atc_service_account). Any other name would make the ATC's own writes
go through its own webhooks, so the chart refuses it. */}}
{{- define "atc.controller.serviceAccountName" -}}
{{- $want := printf "%s-service-account" (include "atc.svcName" .) -}}
{{- $name := default $want .Values.controller.serviceAccount.name -}}
{{- if ne $name $want -}}
{{- fail (printf "controller.serviceAccount.name must be %q (SVC_NAME + \"-service-account\": the webhooks' match conditions exempt that account), got %q" $want $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* The webhook's ServiceAccount: "<SVC_NAME>-webhook", the name atc-resources' match condition
exempts for the webhook's own dry runs (atc.model.webhook_configs.webhook_service_account). */}}
{{- define "atc.webhook.serviceAccountName" -}}
{{- $want := printf "%s-webhook" (include "atc.svcName" .) -}}
{{- $name := default $want .Values.webhook.serviceAccount.name -}}
{{- if ne $name $want -}}
{{- fail (printf "webhook.serviceAccount.name must be %q (SVC_NAME + \"-webhook\": atc-resources exempts that account's dry runs), got %q" $want $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{- define "atc.tlsSecretName" -}}
{{- if eq .Values.tls.mode "existingSecret" -}}
{{- required "tls.secretName is required with tls.mode=existingSecret" .Values.tls.secretName -}}
{{- else -}}
{{- default (printf "%s-webhook-tls" (include "atc.fullname" .)) .Values.tls.secretName -}}
{{- end -}}
{{- end -}}

{{- define "atc.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* The Service's DNS names, the serving certificate's SANs. */}}
{{- define "atc.serviceDNSNames" -}}
{{- $svc := include "atc.svcName" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson -}}
{{- end -}}

{{/* Environment both services read (atc.service.settings.CommonSettings). */}}
{{- define "atc.commonEnv" -}}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: VERBOSE
  value: {{ .Values.verbose | quote }}
- name: CACHE_FS
  value: /tmp
- name: MODULE_ALLOW_LIST
  value: {{ join "," .Values.moduleAllowList | quote }}
- name: TARGET_SERVER_ALLOW_LIST
  value: {{ join "," .Values.targetServerAllowList | quote }}
- name: FLIGHT_STDOUT_LIMIT_MIB
  value: {{ .Values.flightStdoutLimitMib | quote }}
- name: FLIGHT_DEFAULT_MEMORY_MIB
  value: {{ .Values.flightDefaultMemoryMib | quote }}
- name: MODULE_COMPILER
  value: {{ .Values.moduleCompiler | quote }}
- name: MODULE_FETCH_ALLOWED_NETWORKS
  value: {{ join "," .Values.moduleFetchAllowedNetworks | quote }}
{{- with .Values.yokeVersion }}
- name: YOKE_VERSION
  value: {{ . | quote }}
{{- end }}
- name: SVC_NAME
  value: {{ include "atc.svcName" . | quote }}
- name: SVC_NAMESPACE
  value: {{ .Release.Namespace | quote }}
- name: SVC_PORT
  value: {{ .Values.webhook.service.port | quote }}
- name: TLS_CA_CERT
  value: /etc/atc/tls/ca.crt
{{- if .Values.moduleVerificationKeys }}
- name: MODULE_VERIFICATION_KEYS_PATH
  value: /etc/atc/module-keys/keys.json
{{- end }}
{{- with .Values.dockerConfigSecretName }}
- name: DOCKER_CONFIG_SECRET_NAME
  value: {{ . | quote }}
- name: DOCKER_CONFIG_FILE
  value: /var/run/atc/docker/config.json
{{- end }}
{{- end -}}

{{/* The Secret holding moduleVerificationKeys as keys.json. */}}
{{- define "atc.moduleKeysSecretName" -}}
{{- printf "%s-module-verification-keys" (include "atc.fullname" .) -}}
{{- end -}}

{{/* Mounts both services need for moduleVerificationKeys and dockerConfigSecretName. */}}
{{- define "atc.sharedVolumeMounts" -}}
{{- if .Values.moduleVerificationKeys }}
- name: module-keys
  mountPath: /etc/atc/module-keys
  readOnly: true
{{- end }}
{{- if .Values.dockerConfigSecretName }}
- name: docker-config
  mountPath: /var/run/atc/docker
{{- end }}
{{- end -}}

{{/* The volumes behind atc.sharedVolumeMounts: the keys Secret, and a writable emptyDir for the
docker config file the services write from DOCKER_CONFIG_SECRET_NAME (the root filesystem is read-only). */}}
{{- define "atc.sharedVolumes" -}}
{{- if .Values.moduleVerificationKeys }}
- name: module-keys
  secret:
    secretName: {{ include "atc.moduleKeysSecretName" . }}
{{- end }}
{{- if .Values.dockerConfigSecretName }}
- name: docker-config
  emptyDir:
    sizeLimit: 2Mi
{{- end }}
{{- end -}}

{{/* The rules flights' output gets (controller.rbac.flightResources) with the given verbs. */}}
{{- define "atc.flightRules" -}}
{{- $verbs := .verbs -}}
{{- range .rules }}
- apiGroups: {{ .apiGroups | toJson }}
  resources: {{ .resources | toJson }}
  verbs: {{ $verbs | toJson }}
{{- end }}
{{- end -}}

{{/* TLS material for tls.mode=selfSigned, computed once per render and shared by the Secret and
the webhook configurations: the existing Secret's (lookup, so upgrades keep the CA), else a new CA
and serving certificate. Returns JSON {ca, crt, key} as PEM. With `helm template` lookup returns
nothing, so every render generates a fresh pair. */}}
{{- define "atc.selfSignedTLS" -}}
{{- if not (hasKey .Values "__atcTLS") -}}
{{- $name := include "atc.tlsSecretName" . -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name -}}
{{- $tls := dict -}}
{{- if and $existing (index ($existing.data | default dict) "ca.crt") (index ($existing.data | default dict) "tls.crt") (index ($existing.data | default dict) "tls.key") -}}
{{- $tls = dict "ca" (index $existing.data "ca.crt" | b64dec) "crt" (index $existing.data "tls.crt" | b64dec) "key" (index $existing.data "tls.key" | b64dec) -}}
{{- else -}}
{{- $days := int .Values.tls.selfSigned.validityDays -}}
{{- $ca := genCA (printf "%s-ca" (include "atc.fullname" .)) $days -}}
{{- $svc := include "atc.svcName" . -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc .Release.Namespace) nil (include "atc.serviceDNSNames" . | fromJsonArray) $days $ca -}}
{{- $tls = dict "ca" $ca.Cert "crt" $cert.Cert "key" $cert.Key -}}
{{- end -}}
{{- $_ := set .Values "__atcTLS" $tls -}}
{{- end -}}
{{- toJson (get .Values "__atcTLS") -}}
{{- end -}}

{{/* caBundle for the webhook configurations (base64 PEM), empty when cert-manager injects it. */}}
{{- define "atc.caBundle" -}}
{{- if eq .Values.tls.mode "selfSigned" -}}
{{- (include "atc.selfSignedTLS" . | fromJson).ca | b64enc -}}
{{- else if eq .Values.tls.mode "existingSecret" -}}
{{- if .Values.tls.caBundle -}}
{{- .Values.tls.caBundle -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "atc.tlsSecretName" .) -}}
{{- if $existing -}}{{- index ($existing.data | default dict) "ca.crt" | default "" -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Annotations of the webhook configurations: cert-manager's cainjector fills the caBundle. */}}
{{- define "atc.webhookAnnotations" -}}
{{- if eq .Values.tls.mode "certManager" -}}
cert-manager.io/inject-ca-from: {{ printf "%s/%s-webhook" .Release.Namespace (include "atc.fullname" .) }}
{{- end -}}
{{- end -}}

{{/* clientConfig of a static webhook: the Service, the path, the caBundle. */}}
{{- define "atc.clientConfig" -}}
service:
  namespace: {{ .ctx.Release.Namespace }}
  name: {{ include "atc.svcName" .ctx }}
  port: {{ .ctx.Values.webhook.service.port }}
  path: {{ .path }}
{{- with include "atc.caBundle" .ctx }}
caBundle: {{ . }}
{{- end }}
{{- end -}}
