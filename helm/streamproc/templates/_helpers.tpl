{{/* Names and labels, as `helm create` makes them. */}}
{{- define "streamproc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "streamproc.fullname" -}}
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

{{- define "streamproc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "streamproc.instanceLabels" -}}
app.kubernetes.io/name: {{ include "streamproc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object, without a component (the topics Job's pod must not match the workers' selector). */}}
{{- define "streamproc.commonLabels" -}}
helm.sh/chart: {{ include "streamproc.chart" . }}
{{ include "streamproc.instanceLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "streamproc.selectorLabels" -}}
{{ include "streamproc.instanceLabels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "streamproc.labels" -}}
{{ include "streamproc.commonLabels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "streamproc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "streamproc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "streamproc.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Where the pods find the topics file and the CA bundle. */}}
{{- define "streamproc.topicsDir" -}}/etc/streamproc/topics{{- end }}
{{- define "streamproc.caDir" -}}/etc/streamproc/tls{{- end }}

{{/* The topics file, rendered once for the ConfigMap and its checksum. */}}
{{- define "streamproc.topicsYaml" -}}
{{- toYaml .Values.topics }}
{{- end }}

{{/* Kafka's security.protocol from the two switches. */}}
{{- define "streamproc.securityProtocol" -}}
{{- if and .Values.kafka.sasl.enabled .Values.kafka.tls.enabled }}SASL_SSL
{{- else if .Values.kafka.sasl.enabled }}SASL_PLAINTEXT
{{- else if .Values.kafka.tls.enabled }}SSL
{{- else }}PLAINTEXT
{{- end }}
{{- end }}

{{/* KEDA's spelling of the SASL mechanism (its `sasl` parameter). */}}
{{- define "streamproc.kedaSasl" -}}
{{- $names := dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512" }}
{{- get $names .Values.kafka.sasl.mechanism }}
{{- end }}

{{/*
The KEDA triggers as JSON: [{name, partitions}], one per intake topic (<prefix>.<priority>, in
priority order) and one per route, named exactly as streamproc.topology derives them. Retry tiers
are not triggers: their lag includes retries that are not due yet. A route without `partitions`
is owned by its producer; its partition count is unknown here (0).
*/}}
{{- define "streamproc.triggerTopics" -}}
{{- $topics := .Values.topics }}
{{- $triggers := list }}
{{- range $topics.priorities }}
{{- $triggers = append $triggers (dict "name" (printf "%s.%s" $topics.prefix .) "partitions" (int $topics.intake.partitions)) }}
{{- end }}
{{- range $topics.routes }}
{{- $triggers = append $triggers (dict "name" .topic "partitions" (int (.partitions | default 0))) }}
{{- end }}
{{- toJson $triggers }}
{{- end }}

{{/* A PromQL regex matching exactly the trigger topics (dots escaped, backslashes doubled for the PromQL string). */}}
{{- define "streamproc.triggerTopicsRegex" -}}
{{- $names := list }}
{{- range (include "streamproc.triggerTopics" . | fromJsonArray) }}
{{- $names = append $names (regexQuoteMeta .name | replace "\\" "\\\\") }}
{{- end }}
{{- join "|" $names }}
{{- end }}

{{/*
The most replicas that can do work: KEDA caps each trigger's replicas at its topic's partitions and
the HPA takes the largest trigger, so the largest partition count among the trigger topics.
*/}}
{{- define "streamproc.replicaCeiling" -}}
{{- $ceiling := 0 }}
{{- range (include "streamproc.triggerTopics" . | fromJsonArray) }}
{{- $ceiling = max $ceiling (int .partitions) }}
{{- end }}
{{- $ceiling }}
{{- end }}

{{/* autoscaling.maxReplicas, or the ceiling when null; above the ceiling or below minReplicas fails. */}}
{{- define "streamproc.maxReplicas" -}}
{{- $ceiling := include "streamproc.replicaCeiling" . | int }}
{{- $max := .Values.autoscaling.maxReplicas }}
{{- if kindIs "invalid" $max }}
{{- $max = $ceiling }}
{{- else if gt (int $max) $ceiling }}
{{- fail (printf "autoscaling.maxReplicas (%d) is above %d, the largest partition count among the trigger topics (intake topics and routes): KEDA caps each trigger at its topic's partitions and takes the largest, so more replicas would never be used. Lower autoscaling.maxReplicas, leave it null for %d, or raise topics.intake.partitions." (int $max) $ceiling $ceiling) }}
{{- end }}
{{- if lt (int $max) (int .Values.autoscaling.minReplicas) }}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int $max)) }}
{{- end }}
{{- int $max }}
{{- end }}

{{/* The label matchers that pick this release's worker series (the ServiceMonitor's job is the Service name). */}}
{{- define "streamproc.promSelector" -}}
namespace="{{ .Release.Namespace }}",job="{{ include "streamproc.fullname" . }}"
{{- end }}

{{/* Lag of the trigger topics, one series per partition even while two pods report it during a rebalance. */}}
{{- define "streamproc.triggerLag" -}}
max by (topic, partition) (streamproc_consumer_lag{ {{- include "streamproc.promSelector" . }},group="{{ .Values.worker.group }}",topic=~"{{ include "streamproc.triggerTopicsRegex" . }}"})
{{- end }}

{{/* Connection settings shared by the workers and the topics Job. */}}
{{- define "streamproc.kafkaEnv" -}}
- name: STREAMPROC_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: STREAMPROC_SECURITY_PROTOCOL
  value: {{ include "streamproc.securityProtocol" . }}
- name: STREAMPROC_TOPICS_FILE
  value: {{ include "streamproc.topicsDir" . }}/topics.yaml
- name: STREAMPROC_LOG_FORMAT
  value: {{ .Values.worker.logFormat | quote }}
- name: STREAMPROC_LOG_LEVEL
  value: {{ .Values.worker.logLevel | quote }}
{{- if .Values.kafka.sasl.enabled }}
- name: STREAMPROC_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: STREAMPROC_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.sasl.secretName is required when kafka.sasl.enabled" .Values.kafka.sasl.secretName }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: STREAMPROC_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.secretName }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.caSecretName }}
- name: STREAMPROC_SSL_CAFILE
  value: {{ include "streamproc.caDir" . }}/{{ .Values.kafka.tls.caKey }}
{{- end }}
{{- end }}

{{/* Volumes shared by the workers and the topics Job: the topics file, the CA bundle, a writable /tmp. */}}
{{- define "streamproc.volumeMounts" -}}
- name: topics
  mountPath: {{ include "streamproc.topicsDir" . }}
  readOnly: true
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.caSecretName }}
- name: kafka-ca
  mountPath: {{ include "streamproc.caDir" . }}
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "streamproc.volumes" -}}
- name: topics
  configMap:
    name: {{ .topicsConfigMap }}
{{- if and .root.Values.kafka.tls.enabled .root.Values.kafka.tls.caSecretName }}
- name: kafka-ca
  secret:
    secretName: {{ .root.Values.kafka.tls.caSecretName }}
    items:
      - key: {{ .root.Values.kafka.tls.caKey }}
        path: {{ .root.Values.kafka.tls.caKey }}
{{- end }}
- name: tmp
  emptyDir: {}
{{- end }}

{{/*
The live monitor (`streamproc web`, web.enabled): its own name and component, so none of the
workers' selectors (Deployment, Service, PDB, ServiceMonitor, and so KEDA and the HPA) picks its
pod. The full name is cut to 59 characters first, so "-web" always fits in 63 and never
truncates back to the workers' name.
*/}}
{{- define "streamproc.webName" -}}
{{- printf "%s-web" (include "streamproc.fullname" . | trunc 59 | trimSuffix "-") }}
{{- end }}

{{- define "streamproc.webSelectorLabels" -}}
{{ include "streamproc.instanceLabels" . }}
app.kubernetes.io/component: web
{{- end }}

{{- define "streamproc.webLabels" -}}
{{ include "streamproc.commonLabels" . }}
app.kubernetes.io/component: web
{{- end }}

{{/* Where `streamproc web` keeps its SQLite view (an emptyDir: rebuilt from Kafka when missing). */}}
{{- define "streamproc.webDataDir" -}}/var/lib/streamproc/web{{- end }}
