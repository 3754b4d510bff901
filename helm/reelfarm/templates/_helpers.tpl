{{/*
Names, labels and the small pieces shared by several templates. Each object has its own
template file; what they have in common lives here.
*/}}

{{/*
The chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "reelfarm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: <release>-<chart>, or the release name when it already contains the chart
name. Truncated to 63 characters; component suffixes are added by the callers, so the base is
kept to 50 to leave room for "-coordinator".
*/}}
{{- define "reelfarm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
chart: name-version, as used in the helm.sh/chart label.
*/}}
{{- define "reelfarm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "reelfarm.labels" -}}
helm.sh/chart: {{ include "reelfarm.chart" . }}
{{ include "reelfarm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: reelfarm
{{- end }}

{{/*
Selector labels of the release (add app.kubernetes.io/component to select one component).
*/}}
{{- define "reelfarm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "reelfarm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Component names and labels. Call with (dict "ctx" $ "component" "coordinator").
*/}}
{{- define "reelfarm.componentName" -}}
{{- printf "%s-%s" (include "reelfarm.fullname" .ctx) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "reelfarm.componentLabels" -}}
{{ include "reelfarm.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "reelfarm.componentSelectorLabels" -}}
{{ include "reelfarm.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The ServiceAccount of the coordinator and the workers.
*/}}
{{- define "reelfarm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "reelfarm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "reelfarm.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The worker's image: GPU workers run the CUDA build (tag "<tag>-cuda" unless
worker.gpu.imageTag says otherwise), CPU workers the main image.
*/}}
{{- define "reelfarm.workerImage" -}}
{{- $w := .Values.worker }}
{{- if $w.gpu.enabled }}
{{- $tag := default (printf "%s-cuda" (default .Chart.AppVersion .Values.image.tag)) $w.gpu.imageTag }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- else }}
{{- include "reelfarm.image" . }}
{{- end }}
{{- end }}

{{/*
The farm Secret's name: the existing one, or the chart-created one.
*/}}
{{- define "reelfarm.farmSecretName" -}}
{{- if .Values.farmSecret.existingSecret }}
{{- .Values.farmSecret.existingSecret }}
{{- else }}
{{- include "reelfarm.componentName" (dict "ctx" . "component" "farm") }}
{{- end }}
{{- end }}

{{/*
The join token Secret's name: the existing one, or the chart-created one.
*/}}
{{- define "reelfarm.joinTokenSecretName" -}}
{{- if .Values.joinToken.existingSecret }}
{{- .Values.joinToken.existingSecret }}
{{- else }}
{{- include "reelfarm.componentName" (dict "ctx" . "component" "join-token") }}
{{- end }}
{{- end }}

{{/*
The bootstrap admin key Secret's name: the existing one, or the chart-created one.
*/}}
{{- define "reelfarm.adminKeySecretName" -}}
{{- if .Values.auth.bootstrapAdminKey.existingSecret }}
{{- .Values.auth.bootstrapAdminKey.existingSecret }}
{{- else }}
{{- include "reelfarm.componentName" (dict "ctx" . "component" "admin-key") }}
{{- end }}
{{- end }}

{{/*
The flag that points a coordinator or a worker at the mounted join token.
*/}}
{{- define "reelfarm.joinTokenArg" -}}
{{- if .Values.joinToken.enabled }}
- --join-token-file=/etc/reelfarm/join-token/join-token
{{- end }}
{{- end }}

{{/*
The S3 credentials Secret's name: the existing one, or the chart-created one.
*/}}
{{- define "reelfarm.s3SecretName" -}}
{{- if .Values.artifacts.s3.existingSecret }}
{{- .Values.artifacts.s3.existingSecret }}
{{- else }}
{{- include "reelfarm.componentName" (dict "ctx" . "component" "s3") }}
{{- end }}
{{- end }}

{{/*
The artifact PVC's name: the existing claim, or the chart-created one.
*/}}
{{- define "reelfarm.artifactsClaimName" -}}
{{- if .Values.artifacts.pvc.existingClaim }}
{{- .Values.artifacts.pvc.existingClaim }}
{{- else }}
{{- include "reelfarm.componentName" (dict "ctx" . "component" "artifacts") }}
{{- end }}
{{- end }}

{{/*
etcd client endpoints for --etcd, comma-separated: the in-chart etcd's client Service, or the
external endpoints. Fails the render when neither is set (the schema checks it too).
*/}}
{{- define "reelfarm.etcdEndpoints" -}}
{{- if .Values.etcd.enabled }}
{{- printf "http://%s:2379" (include "reelfarm.componentName" (dict "ctx" . "component" "etcd")) }}
{{- else }}
{{- required "etcd.external.endpoints is required when etcd.enabled is false" (join "," .Values.etcd.external.endpoints) }}
{{- end }}
{{- end }}

{{/*
The coordinator's gRPC address as the workers dial it: the Service over every replica. A
follower refuses a worker's session naming the leader; the worker dials again (each new
connection is balanced anew) until it reaches the leader.
*/}}
{{- define "reelfarm.coordinatorAddress" -}}
{{- printf "%s://%s:%d" (ternary "https" "http" (ne .Values.tls.secretName "")) (include "reelfarm.componentName" (dict "ctx" . "component" "coordinator")) (int .Values.coordinator.grpcPort) }}
{{- end }}

{{/*
The coordinators' probe: grpc.health.v1 on the gRPC port, or /healthz over HTTPS with TLS.
*/}}
{{- define "reelfarm.coordinatorProbe" -}}
{{- if .Values.tls.secretName }}
httpGet:
  path: /healthz
  port: metrics
  scheme: HTTPS
{{- else }}
grpc:
  port: {{ .Values.coordinator.grpcPort }}
{{- end }}
{{- end }}

{{/*
The etcd TLS and user flags, the same on coordinators and workers.
*/}}
{{- define "reelfarm.etcdSecurityArgs" -}}
{{- if and (not .Values.etcd.enabled) .Values.etcd.external.tlsSecret }}
- --etcd-ca-cert=/etc/reelfarm/etcd-tls/ca.crt
- --etcd-cert=/etc/reelfarm/etcd-tls/tls.crt
- --etcd-key=/etc/reelfarm/etcd-tls/tls.key
{{- end }}
{{- if and (not .Values.etcd.enabled) .Values.etcd.external.user }}
- --etcd-user={{ .Values.etcd.external.user }}
- --etcd-password-file=/etc/reelfarm/etcd-password/password
{{- end }}
{{- end }}

{{/*
The --artifacts value: the PVC's mount path, or s3://bucket[/prefix].
*/}}
{{- define "reelfarm.artifactsLocation" -}}
{{- if eq .Values.artifacts.type "s3" }}
{{- $prefix := trimAll "/" (default "" .Values.artifacts.s3.prefix) }}
{{- if $prefix }}
{{- printf "s3://%s/%s" .Values.artifacts.s3.bucket $prefix }}
{{- else }}
{{- printf "s3://%s" .Values.artifacts.s3.bucket }}
{{- end }}
{{- else }}
{{- .Values.artifacts.mountPath }}
{{- end }}
{{- end }}

{{/*
Environment shared by the coordinator and the workers: log settings and, for S3 artifacts,
the bucket settings (only those set) and credentials. The farm secret is the workers' alone
(they sign and they run VerifyContent's check): see the worker pod below.
*/}}
{{- define "reelfarm.commonEnv" -}}
- name: RUST_LOG
  value: {{ .Values.rustLog | quote }}
{{- if eq .Values.artifacts.type "s3" }}
{{- /* The bucket and prefix are in --artifacts (reelfarm.artifactsLocation). */}}
{{- with .Values.artifacts.s3.region }}
- name: REELFARM_S3_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.artifacts.s3.endpoint }}
- name: REELFARM_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: REELFARM_S3_FORCE_PATH_STYLE
  value: {{ .Values.artifacts.s3.forcePathStyle | quote }}
- name: REELFARM_S3_ALLOW_HTTP
  value: {{ .Values.artifacts.s3.allowHttp | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "reelfarm.s3SecretName" . }}
      key: {{ .Values.artifacts.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "reelfarm.s3SecretName" . }}
      key: {{ .Values.artifacts.s3.secretAccessKeyKey }}
{{- end }}
{{- end }}

{{/*
Volumes shared by the coordinator and the workers: /tmp and, for PVC artifacts, the artifact
store (S3 artifacts need no volume).
*/}}
{{- define "reelfarm.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- if and (not .Values.etcd.enabled) .Values.etcd.external.tlsSecret }}
- name: etcd-tls
  secret:
    secretName: {{ .Values.etcd.external.tlsSecret }}
{{- end }}
{{- if and (not .Values.etcd.enabled) .Values.etcd.external.user }}
- name: etcd-password
  secret:
    secretName: {{ required "etcd.external.passwordSecret is required with etcd.external.user" .Values.etcd.external.passwordSecret }}
    items:
      - key: {{ .Values.etcd.external.passwordKey }}
        path: password
{{- end }}
{{- if .Values.joinToken.enabled }}
- name: join-token
  secret:
    secretName: {{ include "reelfarm.joinTokenSecretName" . }}
    items:
      - key: {{ .Values.joinToken.key }}
        path: join-token
{{- end }}
{{- if eq .Values.artifacts.type "pvc" }}
- name: artifacts
  persistentVolumeClaim:
    claimName: {{ include "reelfarm.artifactsClaimName" . }}
{{- end }}
{{- end }}

{{- define "reelfarm.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if and (not .Values.etcd.enabled) .Values.etcd.external.tlsSecret }}
- name: etcd-tls
  mountPath: /etc/reelfarm/etcd-tls
  readOnly: true
{{- end }}
{{- if and (not .Values.etcd.enabled) .Values.etcd.external.user }}
- name: etcd-password
  mountPath: /etc/reelfarm/etcd-password
  readOnly: true
{{- end }}
{{- if .Values.joinToken.enabled }}
- name: join-token
  mountPath: /etc/reelfarm/join-token
  readOnly: true
{{- end }}
{{- if eq .Values.artifacts.type "pvc" }}
- name: artifacts
  mountPath: {{ .Values.artifacts.mountPath }}
{{- end }}
{{- end }}

{{/*
The worker pod template, shared by the worker Deployment and the worker DaemonSet.
*/}}
{{- define "reelfarm.worker.podTemplate" -}}
{{- $component := dict "ctx" . "component" "worker" -}}
{{- $w := .Values.worker -}}
metadata:
  labels:
    {{- include "reelfarm.componentLabels" $component | nindent 4 }}
    {{- with $w.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $w.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "reelfarm.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $w.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- if and $w.gpu.enabled $w.gpu.runtimeClassName }}
  runtimeClassName: {{ $w.gpu.runtimeClassName }}
  {{- end }}
  terminationGracePeriodSeconds: {{ $w.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: worker
      image: {{ include "reelfarm.workerImage" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command:
        - /usr/local/bin/reelfarm-worker
      args:
        - --coordinator={{ include "reelfarm.coordinatorAddress" . }}
        - --etcd={{ include "reelfarm.etcdEndpoints" . }}
        - --cluster={{ .Values.cluster }}
        - --engine={{ $w.engine }}
        - --slots={{ $w.slots }}
        - --max-batch={{ $w.maxBatch }}
        - --max-queue-delay-ms={{ $w.maxQueueDelayMs }}
        - --artifacts={{ include "reelfarm.artifactsLocation" . }}
        - --http-listen=0.0.0.0:{{ $w.metricsPort }}
        - --lease-ttl={{ $w.leaseTtlSeconds }}
        {{- include "reelfarm.joinTokenArg" . | nindent 8 }}
        {{- include "reelfarm.etcdSecurityArgs" . | nindent 8 }}
        {{- if .Values.tls.secretName }}
        - --ca-cert=/etc/reelfarm/tls/ca.crt
        {{- end }}
        {{- if $w.models.enabled }}
        - --models={{ $w.models.mountPath }}
        {{- end }}
        {{- if .Values.logJson }}
        - --log-json
        {{- end }}
        {{- with $w.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      env:
        # The pod name is unique and stable for the pod's life: a good worker id.
        - name: REELFARM_WORKER_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        # Keys the watermark and signs manifests; only workers hold it.
        - name: REELFARM_FARM_SECRET
          valueFrom:
            secretKeyRef:
              name: {{ include "reelfarm.farmSecretName" . }}
              key: {{ .Values.farmSecret.key }}
        {{- if $w.gpu.enabled }}
        # The NVIDIA container runtime mounts libcuda (compute) and libnvidia-ml, which the
        # worker's GPU gauges read (utility), only when asked.
        - name: NVIDIA_DRIVER_CAPABILITIES
          value: compute,utility
        {{- end }}
        {{- include "reelfarm.commonEnv" . | nindent 8 }}
        {{- with $w.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: metrics
          containerPort: {{ $w.metricsPort }}
          protocol: TCP
      # The worker serves no gRPC: its health is /healthz on the metrics port.
      startupProbe:
        httpGet:
          path: /healthz
          port: metrics
        periodSeconds: 2
        failureThreshold: 30
      livenessProbe:
        httpGet:
          path: /healthz
          port: metrics
        periodSeconds: 10
        timeoutSeconds: 3
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /healthz
          port: metrics
        periodSeconds: 5
        timeoutSeconds: 3
      resources:
        {{- $resources := deepCopy $w.resources }}
        {{- if $w.gpu.enabled }}
        {{- $limits := default (dict) $resources.limits }}
        {{- $_ := set $limits "nvidia.com/gpu" $w.gpu.count }}
        {{- $_ := set $resources "limits" $limits }}
        {{- end }}
        {{- toYaml $resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- include "reelfarm.volumeMounts" . | nindent 8 }}
        {{- if .Values.tls.secretName }}
        - name: tls-ca
          mountPath: /etc/reelfarm/tls
          readOnly: true
        {{- end }}
        {{- if $w.models.enabled }}
        - name: models
          mountPath: {{ $w.models.mountPath }}
          readOnly: true
        {{- end }}
  volumes:
    {{- include "reelfarm.volumes" . | nindent 4 }}
    {{- if .Values.tls.secretName }}
    # Workers get the CA only, never the coordinators' key.
    - name: tls-ca
      secret:
        secretName: {{ .Values.tls.secretName }}
        items:
          - key: ca.crt
            path: ca.crt
    {{- end }}
    {{- if $w.models.enabled }}
    - name: models
      {{- toYaml $w.models.volume | nindent 6 }}
    {{- end }}
  {{- /* worker.nodeSelector wins over the GPU defaults on the same key. */}}
  {{- $nodeSelector := merge (dict) $w.nodeSelector }}
  {{- if $w.gpu.enabled }}
  {{- $nodeSelector = merge $nodeSelector $w.gpu.nodeSelector }}
  {{- end }}
  {{- with $nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $tolerations := $w.tolerations }}
  {{- if $w.gpu.enabled }}
  {{- $tolerations = concat $w.gpu.tolerations $w.tolerations }}
  {{- end }}
  {{- with $tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $w.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
