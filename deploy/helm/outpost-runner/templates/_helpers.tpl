{{/* The namespace of the runner and its step pods: the chart's own (namespace.create) or the release's. */}}
{{- define "outpost-runner.namespace" -}}
{{- if .Values.namespace.create -}}{{ .Values.namespace.name }}{{- else -}}{{ .Release.Namespace }}{{- end -}}
{{- end -}}

{{- define "outpost-runner.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "outpost-runner.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "outpost-runner.labels" -}}
{{ include "outpost-runner.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "outpost-runner.tokenSecret" -}}
{{- if .Values.existingSecret -}}{{ .Values.existingSecret }}{{- else -}}{{ include "outpost-runner.fullname" . }}-token{{- end -}}
{{- end -}}

{{- define "outpost-runner.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The engine pods' image: engine.image, else the runner's. */}}
{{- define "outpost-runner.engineImage" -}}
{{ .Values.engine.image.repository | default .Values.image.repository }}:{{ .Values.engine.image.tag | default .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The egress rules of the runner's and the engine pods' NetworkPolicies: DNS, the control plane, the API server,
then the user's egressTo. */}}
{{- define "outpost-runner.egress" -}}
- ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
- to:
    {{- range .Values.networkPolicy.controlPlaneCIDRs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - {protocol: TCP, port: {{ .Values.networkPolicy.controlPlanePort }}}
- to:
    {{- range .Values.networkPolicy.apiServerCIDRs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - {protocol: TCP, port: {{ .Values.networkPolicy.apiServerPort }}}
{{- with .Values.networkPolicy.egressTo }}
{{ toYaml . }}
{{- end }}
{{- end -}}
