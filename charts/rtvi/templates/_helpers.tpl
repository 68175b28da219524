{{/* Names */}}
{{- define "rtvi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rtvi.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "rtvi.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "rtvi.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "rtvi.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "rtvi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: include "rtvi.selector" (list . "inference") */}}
{{- define "rtvi.selector" -}}
app.kubernetes.io/name: {{ include "rtvi.name" (index . 0) }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "rtvi.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{- define "rtvi.redpandaName" -}}
{{- printf "%s-redpanda" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rtvi.inferenceHeadless" -}}
{{- printf "%s-inference-headless" (include "rtvi.fullname" .) }}
{{- end }}

{{/* Bootstrap servers: the chart's Redpanda, or the external Kafka. */}}
{{- define "rtvi.bootstrapServers" -}}
{{- if .Values.redpanda.enabled }}
{{- printf "%s.%s.svc.cluster.local:9093" (include "rtvi.redpandaName" .) .Release.Namespace }}
{{- else }}
{{- required "kafka.bootstrapServers is required when redpanda.enabled is false" .Values.kafka.bootstrapServers }}
{{- end }}
{{- end }}

{{/* Kafka connection env shared by the consumer and the producer (RTVI_* = rtvi's KafkaConfig). */}}
{{- define "rtvi.kafkaEnv" -}}
- name: RTVI_BOOTSTRAP_SERVERS
  value: {{ include "rtvi.bootstrapServers" . | quote }}
- name: RTVI_MAX_FRAME_BYTES
  value: {{ .Values.maxFrameBytes | int64 | quote }}
{{- if not .Values.redpanda.enabled }}
- name: RTVI_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if .Values.kafka.sasl.mechanism }}
- name: RTVI_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: RTVI_SASL_USERNAME
  value: {{ .Values.kafka.sasl.username | quote }}
- name: RTVI_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.sasl.passwordSecret.name is required with SASL" .Values.kafka.sasl.passwordSecret.name }}
      key: {{ .Values.kafka.sasl.passwordSecret.key }}
{{- end }}
{{- if .Values.kafka.tls.caSecret.name }}
- name: RTVI_SSL_CA_LOCATION
  value: /etc/rtvi/kafka-ca/{{ .Values.kafka.tls.caSecret.key }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rtvi.kafkaVolumeMounts" -}}
{{- if and (not .Values.redpanda.enabled) .Values.kafka.tls.caSecret.name }}
- name: kafka-ca
  mountPath: /etc/rtvi/kafka-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "rtvi.kafkaVolumes" -}}
{{- if and (not .Values.redpanda.enabled) .Values.kafka.tls.caSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret.name }}
{{- end }}
{{- end }}

{{/* Render-time checks that the schema cannot express. */}}
{{- define "rtvi.validate" -}}
{{- $parts := int .Values.topics.frames.partitions }}
{{- if gt (int .Values.consumer.replicas) $parts }}
{{- fail (printf "consumer.replicas (%d) exceeds topics.frames.partitions (%d): extra consumers in the group would sit idle; raise the partitions or lower the replicas" (int .Values.consumer.replicas) $parts) }}
{{- end }}
{{- if and .Values.consumer.keda.enabled (gt (int .Values.consumer.keda.maxReplicaCount) $parts) }}
{{- fail (printf "consumer.keda.maxReplicaCount (%d) exceeds topics.frames.partitions (%d)" (int .Values.consumer.keda.maxReplicaCount) $parts) }}
{{- end }}
{{- if gt (int .Values.consumer.batchSize) (int .Values.inference.maxBatchSize) }}
{{- fail (printf "consumer.batchSize (%d) exceeds inference.maxBatchSize (%d): the server would reject every call" (int .Values.consumer.batchSize) (int .Values.inference.maxBatchSize)) }}
{{- end }}
{{- if le (int .Values.inference.terminationGracePeriodSeconds) (add .Values.inference.shutdownDelaySeconds .Values.inference.shutdownGraceSeconds | int) }}
{{- fail "inference.terminationGracePeriodSeconds must exceed shutdownDelaySeconds + shutdownGraceSeconds, or the kubelet kills requests mid-drain" }}
{{- end }}
{{- if and .Values.inference.autoscaling.enabled (gt (int .Values.inference.autoscaling.minReplicas) (int .Values.inference.autoscaling.maxReplicas)) }}
{{- fail "inference.autoscaling.minReplicas must not exceed maxReplicas" }}
{{- end }}
{{- end }}
