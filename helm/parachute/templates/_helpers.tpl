{{- define "parachute.labels" -}}
app.kubernetes.io/name: parachute
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "parachute.selectorLabels" -}}
app.kubernetes.io/name: parachute
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- /* The rules of each traffic router whose toggle is on, in the order rbac.py lists them. */}}
{{- define "parachute.routerRules" -}}
{{- range $router := list "gatewayAPI" "istio" "nginx" }}
{{- if index $.Values.rbac $router }}
{{ $.Files.Get (printf "files/%s-rules.yaml" $router) }}
{{- end }}
{{- end }}
{{- end }}
