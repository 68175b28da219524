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

{{/* The Redpanda chart's fullname as the operator renders it (release = the Redpanda resource's
     name): it names the broker Service and the certificate Secrets. */}}
{{- define "rtvi.redpandaFullname" -}}
{{- dig "fullnameOverride" "" .Values.redpanda.clusterSpec | default (include "rtvi.redpandaName" .) }}
{{- end }}

{{- define "rtvi.consumerGroup" -}}
{{- .Values.consumer.group | default (printf "%s-consumer" (include "rtvi.fullname" .)) }}
{{- end }}

{{/* The v2 model name: inference.modelName, else what the server derives (the architecture
name, or the model directory's folder name). */}}
{{- define "rtvi.modelName" -}}
{{- .Values.inference.modelName | default (base .Values.inference.model) -}}
{{- end -}}

{{- define "rtvi.inferenceHeadless" -}}
{{- printf "%s-inference-headless" (include "rtvi.fullname" .) }}
{{- end }}

{{/* Bootstrap servers: the chart's Redpanda (its internal Kafka listener), or the external Kafka. */}}
{{- define "rtvi.bootstrapServers" -}}
{{- if .Values.redpanda.enabled }}
{{- $port := dig "listeners" "kafka" "port" 9093 .Values.redpanda.clusterSpec | int }}
{{- printf "%s.%s.svc.cluster.local:%d" (include "rtvi.redpandaFullname" .) .Release.Namespace $port }}
{{- else }}
{{- required "kafka.bootstrapServers is required when redpanda.enabled is false" .Values.kafka.bootstrapServers }}
{{- end }}
{{- end }}

{{/* How clients reach Kafka, as YAML: protocol, sasl (mechanism, username, secret, key; or empty)
     and ca (secret, key; or empty). With the chart's Redpanda, TLS and SASL follow its clusterSpec
     with the Redpanda chart's defaults (TLS on, SASL off): TLS from listeners.kafka.tls.enabled,
     else tls.enabled; the CA from the listener certificate's Secret (ca.crt when the certificate
     has caEnabled, else its tls.crt). Credentials always come from kafka.sasl. */}}
{{- define "rtvi.kafkaSecurity" -}}
{{- $k := .Values.kafka }}
{{- $tls := false }}
{{- $sasl := false }}
{{- $mechanism := $k.sasl.mechanism }}
{{- $ca := dict "secret" $k.tls.caSecret.name "key" $k.tls.caSecret.key }}
{{- if .Values.redpanda.enabled }}
{{- $spec := .Values.redpanda.clusterSpec }}
{{- $tls = dig "listeners" "kafka" "tls" "enabled" (dig "tls" "enabled" true $spec) $spec }}
{{- $sasl = dig "auth" "sasl" "enabled" false $spec }}
{{- if $sasl }}
{{- $mechanism = default (dig "auth" "sasl" "mechanism" "SCRAM-SHA-512" $spec) $mechanism }}
{{- else if $mechanism }}
{{- fail "kafka.sasl.mechanism is set but the chart's Redpanda has SASL off: set redpanda.clusterSpec.auth.sasl.enabled, or clear the mechanism" }}
{{- end }}
{{- if and $tls (not $ca.secret) }}
{{- $cert := dig "listeners" "kafka" "tls" "cert" "default" $spec }}
{{- $certValues := dig "tls" "certs" $cert (dict) $spec }}
{{- $secret := dig "secretRef" "name" (printf "%s-%s-cert" (include "rtvi.redpandaFullname" .) $cert) $certValues }}
{{- $ca = dict "secret" $secret "key" (ternary "ca.crt" "tls.crt" (dig "caEnabled" true $certValues)) }}
{{- end }}
{{- else }}
{{- $tls = has $k.securityProtocol (list "SSL" "SASL_SSL") }}
{{- $sasl = hasPrefix "SASL_" $k.securityProtocol }}
{{- if and $sasl (not $mechanism) }}
{{- fail (printf "kafka.securityProtocol %s needs kafka.sasl.mechanism" $k.securityProtocol) }}
{{- end }}
{{- if and $mechanism (not $sasl) }}
{{- fail (printf "kafka.sasl.mechanism is set but kafka.securityProtocol %s has no SASL: use SASL_PLAINTEXT or SASL_SSL" $k.securityProtocol) }}
{{- end }}
{{- end }}
protocol: {{ printf "%s%s" (ternary "SASL_" "" $sasl) (ternary "SSL" "PLAINTEXT" $tls) }}
{{- if $sasl }}
sasl:
  mechanism: {{ $mechanism }}
  username: {{ required "kafka.sasl.username is required when Kafka uses SASL" $k.sasl.username | quote }}
  secret: {{ required "kafka.sasl.passwordSecret.name is required when Kafka uses SASL" $k.sasl.passwordSecret.name | quote }}
  key: {{ $k.sasl.passwordSecret.key | quote }}
{{- end }}
{{- if and $tls $ca.secret }}
ca:
  secret: {{ $ca.secret | quote }}
  key: {{ $ca.key | quote }}
{{- end }}
{{- end }}

{{/* Kafka connection env shared by the consumer and the producer (RTVI_* = rtvi's KafkaConfig). */}}
{{- define "rtvi.kafkaEnv" -}}
{{- $sec := include "rtvi.kafkaSecurity" . | fromYaml }}
- name: RTVI_BOOTSTRAP_SERVERS
  value: {{ include "rtvi.bootstrapServers" . | quote }}
- name: RTVI_MAX_FRAME_BYTES
  value: {{ .Values.maxFrameBytes | int64 | quote }}
{{- if ne $sec.protocol "PLAINTEXT" }}
- name: RTVI_SECURITY_PROTOCOL
  value: {{ $sec.protocol | quote }}
{{- end }}
{{- with $sec.sasl }}
- name: RTVI_SASL_MECHANISM
  value: {{ .mechanism | quote }}
- name: RTVI_SASL_USERNAME
  value: {{ .username | quote }}
- name: RTVI_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .secret | quote }}
      key: {{ .key | quote }}
{{- end }}
{{- with $sec.ca }}
- name: RTVI_SSL_CA_LOCATION
  value: {{ printf "%s/%s" (include "rtvi.kafkaCADir" $) .key | quote }}
{{- end }}
{{- end }}

{{- define "rtvi.kafkaCADir" -}}
/etc/rtvi/kafka-ca
{{- end }}

{{- define "rtvi.kafkaVolumeMounts" -}}
{{- if (include "rtvi.kafkaSecurity" . | fromYaml).ca }}
- name: kafka-ca
  mountPath: {{ include "rtvi.kafkaCADir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "rtvi.kafkaVolumes" -}}
{{- with (include "rtvi.kafkaSecurity" . | fromYaml).ca }}
- name: kafka-ca
  secret:
    secretName: {{ .secret | quote }}
    items:
      - key: {{ .key | quote }}
        path: {{ .key | quote }}
{{- end }}
{{- end }}

{{/* Mutual TLS between the consumers and the inference server, as YAML: serverSecret, clientSecret
     and serverName, or nothing while TLS is off. Combinations that cannot work fail here, once. */}}
{{- define "rtvi.inferenceTls" -}}
{{- $inf := .Values.inference }}
{{- $t := $inf.tls }}
{{- $cm := $t.certManager }}
{{- $existing := or $t.server.secretName $t.client.secretName }}
{{- if not $t.enabled }}
{{- if or $cm.enabled $existing }}
{{- fail "inference.tls: Secrets or certManager are set but inference.tls.enabled is false, so the consumers would call the server in plaintext; set inference.tls.enabled=true or clear them" }}
{{- end }}
{{- else }}
{{- if $cm.enabled }}
{{- if $existing }}
{{- fail "inference.tls: use existing Secrets (server.secretName and client.secretName) or certManager.enabled, not both" }}
{{- end }}
{{- if not $cm.issuerRef.name }}
{{- fail "inference.tls.certManager.issuerRef.name is required: the Issuer or ClusterIssuer that signs the server's and the consumers' certificates" }}
{{- end }}
{{- if and (eq $cm.issuerRef.group "cert-manager.io") (not (has $cm.issuerRef.kind (list "Issuer" "ClusterIssuer"))) }}
{{- fail (printf "inference.tls.certManager.issuerRef.kind %s: cert-manager.io issuers are Issuer or ClusterIssuer" $cm.issuerRef.kind) }}
{{- end }}
{{- else if not (and $t.server.secretName $t.client.secretName) }}
{{- fail "inference.tls.enabled needs inference.tls.server.secretName and client.secretName (existing kubernetes.io/tls Secrets with ca.crt), or inference.tls.certManager.enabled with an issuerRef" }}
{{- end }}
{{- if has (int $inf.healthPort) (list (int $inf.port) (int $inf.metricsPort)) }}
{{- fail "inference.healthPort must differ from inference.port and inference.metricsPort" }}
{{- end }}
serverSecret: {{ $t.server.secretName | default (printf "%s-inference-tls" (include "rtvi.fullname" .)) | quote }}
clientSecret: {{ $t.client.secretName | default (printf "%s-consumer-tls" (include "rtvi.fullname" .)) | quote }}
serverName: {{ $t.serverName | quote }}
{{- end }}
{{- end }}

{{/* Where the pods mount their certificate Secrets (whole, without subPath, so rotations arrive). */}}
{{- define "rtvi.inferenceTlsDir" -}}
/etc/rtvi/tls
{{- end }}

{{- define "rtvi.consumerTlsDir" -}}
/etc/rtvi/inference-tls
{{- end }}

{{/* The consumer's volume mounts and volumes: Kafka's CA and the inference client certificate. */}}
{{- define "rtvi.consumerVolumeMounts" -}}
{{- include "rtvi.kafkaVolumeMounts" . }}
{{- if (include "rtvi.inferenceTls" . | fromYaml).clientSecret }}
- name: inference-tls
  mountPath: {{ include "rtvi.consumerTlsDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "rtvi.consumerVolumes" -}}
{{- include "rtvi.kafkaVolumes" . }}
{{- with (include "rtvi.inferenceTls" . | fromYaml).clientSecret }}
- name: inference-tls
  secret:
    secretName: {{ . | quote }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* CPU quantity (values) in millicores: "2" -> 2000, "500m" -> 500, 1.5 -> 1500; 0 when unset. */}}
{{- define "rtvi.millicpu" -}}
{{- $cpu := toString (default "0" .) }}
{{- if hasSuffix "m" $cpu }}
{{- trimSuffix "m" $cpu | int }}
{{- else }}
{{- mulf (float64 $cpu) 1000 | int }}
{{- end }}
{{- end }}

{{/* RTVI_THREADS: the value when set; else from the CPU request (one instance: the downward API,
     so the kubelet's view wins; several: request / instances, at least 1). */}}
{{- define "rtvi.threadsEnv" -}}
{{- $inf := .Values.inference }}
- name: RTVI_THREADS
{{- if gt (int $inf.threads) 0 }}
  value: {{ $inf.threads | quote }}
{{- else if eq (int $inf.instances) 1 }}
  valueFrom:
    resourceFieldRef:
      containerName: inference
      resource: requests.cpu
      divisor: "1"
{{- else }}
{{- $milli := include "rtvi.millicpu" (dig "requests" "cpu" "" $inf.resources) | int }}
{{- if not $milli }}
{{- fail "inference.threads 0 with several inference.instances derives threads from resources.requests.cpu: set that request, or set inference.threads" }}
{{- end }}
  value: {{ max 1 (div $milli (mul 1000 (int $inf.instances))) | quote }}
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
{{- if and .Values.inference.autoscaling.enabled (not (include "rtvi.millicpu" (dig "requests" "cpu" "" .Values.inference.resources) | int)) }}
{{- fail "inference.autoscaling targets CPU utilization, a percentage of inference.resources.requests.cpu: set that request (without it the HPA never scales)" }}
{{- end }}
{{- if and .Values.redpanda.enabled .Values.redpanda.portForward.enabled (gt (dig "statefulset" "replicas" 3 .Values.redpanda.clusterSpec | int) 1) }}
{{- fail "redpanda.portForward reaches one broker through kubectl port-forward: it needs redpanda.clusterSpec.statefulset.replicas 1 (turn portForward off for more brokers)" }}
{{- end }}
{{- end }}
