{{/* The chart name, overridable. */}}
{{- define "ferrolb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object name: the release name when it already says "ferrolb" (so the
usual `helm install ferrolb` gives ferrolb-controller, ferrolb-speaker), else
<release>-ferrolb. Kept at 50 characters so "-controller-leader-election" etc. still fit.
*/}}
{{- define "ferrolb.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ferrolb.controller.fullname" -}}
{{- printf "%s-controller" (include "ferrolb.fullname" .) -}}
{{- end -}}

{{- define "ferrolb.speaker.fullname" -}}
{{- printf "%s-speaker" (include "ferrolb.fullname" .) -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "ferrolb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "ferrolb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ferrolb
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "controller"). */}}
{{- define "ferrolb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferrolb.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The ServiceAccount of one component: call with (dict "ctx" $ "component" "controller"). */}}
{{- define "ferrolb.serviceAccountName" -}}
{{- $sa := get (get .ctx.Values .component) "serviceAccount" -}}
{{- if $sa.create -}}
{{- default (printf "%s-%s" (include "ferrolb.fullname" .ctx) .component) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* registry/repository:tag (or @digest); the tag defaults to the chart's appVersion. */}}
{{- define "ferrolb.image" -}}
{{- $image := .image -}}
{{- $repo := $image.repository -}}
{{- if $image.registry -}}
{{- $repo = printf "%s/%s" $image.registry $image.repository -}}
{{- end -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $repo $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .ctx.Chart.AppVersion $image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/* The flags both daemons share. */}}
{{- define "ferrolb.commonArgs" -}}
- --log-format={{ .Values.logFormat }}
{{- with .Values.logLevel }}
- --log-level={{ . }}
{{- end }}
- --load-balancer-class={{ .Values.loadBalancerClass }}
{{- if .Values.ignoreClassless }}
- --ignore-classless
{{- end }}
{{- end -}}
