{{- define "edgefleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "edgefleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "edgefleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "edgefleet.selectorLabels" -}}
app.kubernetes.io/name: edgefleet-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "edgefleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "edgefleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "edgefleet.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/* The operator's --ingress mode. */}}
{{- define "edgefleet.ingressMode" -}}
{{- if .Values.ingress.enabled -}}enabled
{{- else if .Values.ingress.removeWhenDisabled -}}remove
{{- else -}}disabled
{{- end -}}
{{- end -}}

{{/* The TLS Secret name template, refused here when it cannot name a Secret (the operator would
     refuse it at start). */}}
{{- define "edgefleet.ingressTlsSecret" -}}
{{- $literal := .Values.ingress.tls.secretName | replace "{ingress}" "a" | replace "{distribution}" "a" -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$" $literal) -}}
{{- fail (printf "ingress.tls.secretName %q cannot name a Secret: use lower-case letters, digits, '-', '.' and the placeholders {ingress} and {distribution}" .Values.ingress.tls.secretName) -}}
{{- end -}}
{{- .Values.ingress.tls.secretName -}}
{{- end -}}

{{/* Ingress annotations as a JSON object of strings (YAML may have made a value a bool or number). */}}
{{- define "edgefleet.ingressAnnotations" -}}
{{- $annotations := dict -}}
{{- range $key, $value := .Values.ingress.annotations -}}
{{- $_ := set $annotations $key (toString $value) -}}
{{- end -}}
{{- toJson $annotations -}}
{{- end -}}

{{/* The names of a list of {name: ...} references, comma-separated (e.g. pull Secrets). */}}
{{- define "edgefleet.names" -}}
{{- $names := list -}}
{{- range . }}{{ $names = append $names .name }}{{ end -}}
{{- join "," $names -}}
{{- end }}
