{{/* Names and labels */}}
{{- define "fanout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fanout.fullname" -}}
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

{{- define "fanout.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fanout.labels" -}}
helm.sh/chart: {{ include "fanout.chart" . }}
{{ include "fanout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "fanout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fanout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: call with (dict "ctx" $ "component" "dispatcher") */}}
{{- define "fanout.componentLabels" -}}
{{ include "fanout.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "fanout.componentSelector" -}}
{{ include "fanout.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "fanout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fanout.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fanout.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret holding Kafka credentials and API keys: the user's, or the chart's. */}}
{{- define "fanout.secretName" -}}
{{- default (include "fanout.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* What the hook Jobs read before the release's own Secret exists (pre-install). */}}
{{- define "fanout.hookSecretName" -}}
{{- default (printf "%s-hook" (include "fanout.fullname" .)) .Values.existingSecret }}
{{- end }}

{{- define "fanout.saslNeedsPassword" -}}
{{- if has .Values.kafka.sasl.mechanism (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512") }}true{{ end }}
{{- end }}

{{/* The Secret's data (shared by the release Secret and the hook copy). */}}
{{- define "fanout.secretData" -}}
{{- if include "fanout.saslNeedsPassword" . }}
kafka-sasl-username: {{ required "kafka.sasl.username is required for this SASL mechanism" .Values.kafka.sasl.username | b64enc | quote }}
kafka-sasl-password: {{ required "kafka.sasl.password is required for this SASL mechanism" .Values.kafka.sasl.password | b64enc | quote }}
{{- end }}
{{- with .Values.kafka.tls.keyPassword }}
kafka-ssl-key-password: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.api.keys }}
api-keys: {{ . | b64enc | quote }}
{{- end }}
{{- end }}

{{/*
Environment shared by every fanout container: Kafka connection, topics, telemetry, extra settings.
Call with (dict "ctx" $ "secret" <secret name> "service" <OTEL service name>).
*/}}
{{- define "fanout.env" -}}
{{- $ := .ctx }}
{{- $v := $.Values }}
- name: FANOUT_KAFKA__BOOTSTRAP_SERVERS
  value: {{ required "kafka.bootstrapServers is required" $v.kafka.bootstrapServers | quote }}
- name: FANOUT_KAFKA__SECURITY_PROTOCOL
  value: {{ $v.kafka.securityProtocol | quote }}
{{- with $v.kafka.sasl.mechanism }}
- name: FANOUT_KAFKA__SASL_MECHANISM
  value: {{ . | quote }}
{{- end }}
{{- if include "fanout.saslNeedsPassword" $ }}
- name: FANOUT_KAFKA__SASL_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ .secret | quote }}, key: kafka-sasl-username}
- name: FANOUT_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .secret | quote }}, key: kafka-sasl-password}
{{- end }}
{{- if $v.kafka.tls.existingSecret }}
{{- with $v.kafka.tls.caKey }}
- name: FANOUT_KAFKA__SSL_CA_LOCATION
  value: {{ printf "/etc/fanout/kafka-tls/%s" . | quote }}
{{- end }}
{{- if and $v.kafka.tls.certKey $v.kafka.tls.keyKey }}
- name: FANOUT_KAFKA__SSL_CERTIFICATE_LOCATION
  value: {{ printf "/etc/fanout/kafka-tls/%s" $v.kafka.tls.certKey | quote }}
- name: FANOUT_KAFKA__SSL_KEY_LOCATION
  value: {{ printf "/etc/fanout/kafka-tls/%s" $v.kafka.tls.keyKey | quote }}
- name: FANOUT_KAFKA__SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .secret | quote }}, key: kafka-ssl-key-password, optional: true}
{{- end }}
{{- end }}
{{- if has $v.kafka.securityProtocol (list "SSL" "SASL_SSL") }}
- name: FANOUT_KAFKA__SSL_ENDPOINT_IDENTIFICATION
  value: {{ $v.kafka.tls.verifyHostname | quote }}
{{- end }}
{{- with $v.kafka.extra }}
- name: FANOUT_KAFKA__EXTRA
  value: {{ toJson . | quote }}
{{- end }}
- name: FANOUT_TOPICS__PREFIX
  value: {{ $v.topics.prefix | quote }}
- name: FANOUT_TOPICS__PARTITIONS
  value: {{ $v.topics.partitions | quote }}
- name: FANOUT_TOPICS__REPLICATION_FACTOR
  value: {{ $v.topics.replicationFactor | quote }}
{{- with $v.topics.minInsyncReplicas }}
- name: FANOUT_TOPICS__MIN_INSYNC_REPLICAS
  value: {{ . | quote }}
{{- end }}
{{- range $section, $fields := $v.settings }}
{{- range $field, $value := $fields }}
- name: {{ printf "FANOUT_%s__%s" ($section | upper) ($field | upper) }}
  value: {{ if or (kindIs "slice" $value) (kindIs "map" $value) }}{{ toJson $value | quote }}{{ else }}{{ toString $value | quote }}{{ end }}
{{- end }}
{{- end }}
- name: FANOUT_TELEMETRY__LOG_FORMAT
  value: {{ $v.telemetry.logFormat | quote }}
- name: FANOUT_TELEMETRY__LOG_LEVEL
  value: {{ $v.telemetry.logLevel | quote }}
{{- if $v.telemetry.otlp.endpoint }}
- name: POD_NAME
  valueFrom:
    fieldRef: {fieldPath: metadata.name}
- name: OTEL_SERVICE_NAME
  value: {{ .service | quote }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $v.telemetry.otlp.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $v.telemetry.otlp.protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $v.telemetry.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $v.telemetry.samplerArg | quote }}
{{- $attrs := list (printf "service.namespace=%s" $.Release.Namespace) (printf "k8s.namespace.name=%s" $.Release.Namespace) "k8s.pod.name=$(POD_NAME)" }}
{{- range $key, $value := $v.telemetry.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $key $value) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- end }}
{{- end }}

{{/* Volumes and mounts every fanout container gets: /tmp (the root file system is read-only), Kafka TLS. */}}
{{- define "fanout.volumes" -}}
- name: tmp
  emptyDir: {}
{{- with .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ . | quote }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "fanout.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/fanout/kafka-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "fanout.podSpecCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* Validation that values.schema.json cannot express. */}}
{{- define "fanout.validate" -}}
{{- if and .Values.dispatcher.autoscaling.enabled .Values.dispatcher.keda.enabled }}
{{- fail "dispatcher.autoscaling.enabled and dispatcher.keda.enabled are mutually exclusive: pick one" }}
{{- end }}
{{- if and .Values.kafka.sasl.mechanism (not (hasPrefix "SASL_" .Values.kafka.securityProtocol)) }}
{{- fail "kafka.sasl.mechanism needs kafka.securityProtocol SASL_PLAINTEXT or SASL_SSL" }}
{{- end }}
{{- if and (hasPrefix "SASL_" .Values.kafka.securityProtocol) (not .Values.kafka.sasl.mechanism) }}
{{- fail (printf "kafka.securityProtocol %s needs kafka.sasl.mechanism" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and .Values.subscriptions.items .Values.subscriptions.existingSecret }}
{{- fail "give subscriptions.items or subscriptions.existingSecret, not both" }}
{{- end }}
{{- end }}
