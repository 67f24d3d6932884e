{{/*
Object names are fixed (vworkspace-operator, ...), not derived from the release name: the RBAC is
rendered from manifests/rbac (files/rbac), the one source of truth shared with the kustomize
install, and there is one operator per cluster anyway (its CRDs and ClusterRoles are cluster-wide).
*/}}
{{- define "vworkspace.labels" -}}
app.kubernetes.io/name: vworkspace-operator
app.kubernetes.io/part-of: vworkspace
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "vworkspace.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "vworkspace.registrationSecret" -}}
{{- if .Values.agent.registration.existingSecret -}}
{{ .Values.agent.registration.existingSecret }}
{{- else -}}
{{ .Values.agent.registration.clusterName }}-registration-token
{{- end }}
{{- end }}

{{/*
Render one object read from files/ (a manifests/ file): the release namespace for namespaced
kinds and ServiceAccount subjects, the chart's labels merged in. Argument: (list $ $doc).
*/}}
{{- define "vworkspace.fromManifest" -}}
{{- $root := index . 0 -}}
{{- $doc := index . 1 -}}
{{- $meta := $doc.metadata -}}
{{- if not (has $doc.kind (list "ClusterRole" "ClusterRoleBinding" "ValidatingWebhookConfiguration")) -}}
{{- $_ := set $meta "namespace" $root.Release.Namespace -}}
{{- end -}}
{{- $_ := set $meta "labels" (merge (include "vworkspace.labels" $root | fromYaml) ($meta.labels | default dict)) -}}
{{- range $doc.subjects -}}
{{- if eq .kind "ServiceAccount" -}}
{{- $_ := set . "namespace" $root.Release.Namespace -}}
{{- end -}}
{{- end -}}
{{- toYaml $doc -}}
{{- end }}
