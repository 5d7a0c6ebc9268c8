{{/* The chart's name, or nameOverride. */}}
{{- define "thermocline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: fullnameOverride, or "<release>-<chart>" (just the
release name when it already contains the chart's name). At most 63
characters, the limit of a DNS label.
*/}}
{{- define "thermocline.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "thermocline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "thermocline.labels" -}}
helm.sh/chart: {{ include "thermocline.chart" . }}
{{ include "thermocline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the release's pods; never change them after install. */}}
{{- define "thermocline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "thermocline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "thermocline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "thermocline.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ConfigMap of thermocline.toml, and the one of the tier definitions. */}}
{{- define "thermocline.configName" -}}
{{- printf "%s-config" (include "thermocline.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "thermocline.catalogName" -}}
{{- printf "%s-catalog" (include "thermocline.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "thermocline.claimName" -}}
{{- default (printf "%s-lake" (include "thermocline.fullname" .) | trunc 63 | trimSuffix "-") .Values.persistence.existingClaim }}
{{- end }}

{{/*
Refuses values that would deploy something that loses data or cannot start.
Included by the Deployment, so `helm template` and `helm install` both stop.
*/}}
{{- define "thermocline.validate" -}}
{{- if and (not .Values.postgres.existingSecret) (not .Values.postgres.url) }}
{{- fail "thermocline needs a Postgres: set postgres.existingSecret (a Secret holding the URL) or postgres.url" }}
{{- end }}
{{- range $file, $_ := .Values.tiers }}
{{- if not (regexMatch "^[-._a-zA-Z0-9]+[.]toml$" $file) }}
{{- fail (printf "tiers: %q is not a valid file name: letters, digits, '-', '_' and '.', ending in .toml" $file) }}
{{- end }}
{{- end }}
{{- if .Values.tiers }}
{{- if not .Values.persistence.enabled }}
{{- fail "tiers needs persistence.enabled=true: the mover deletes rows from Postgres once the lake holds them, and a lake on an emptyDir is lost with its pod" }}
{{- end }}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}
{{- fail "tiers needs replicaCount=1 and autoscaling.enabled=false: the lake is on one pod's volume, and other pods would not see the history moved there" }}
{{- end }}
{{- end }}
{{- $timeout := .Values.config.shutdownTimeoutSeconds }}
{{- if or (ne (toString (int $timeout)) (toString $timeout)) (lt (int $timeout) 0) }}
{{- fail (printf "config.shutdownTimeoutSeconds must be a whole number of seconds (0 or more), not %v" $timeout) }}
{{- end }}
{{- end }}
