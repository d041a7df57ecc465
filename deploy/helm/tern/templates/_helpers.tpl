{{/*
Helpers of the tern chart. Rendered by helm, or by deploy/tools/chart-render (the subset it implements
is in its README).
*/}}

{{/* The chart's name. */}}
{{- define "tern.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 30 | trimSuffix "-" -}}
{{- end -}}

{{/* Objects are named <fullname>-<component>. Kept short: StatefulSet pods and their labels add to it. */}}
{{- define "tern.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 30 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tern.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels of every object: include "tern.labels" (dict "ctx" $ "component" "agent").
*/}}
{{- define "tern.labels" -}}
{{ include "tern.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tern
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "tern.chart" .ctx }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The labels a workload selects its pods by, and Services and PodDisruptionBudgets select them by. */}}
{{- define "tern.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tern.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* metadata: name, namespace and labels of a namespaced object: (dict "ctx" $ "component" "agent" "name" "x") */}}
{{- define "tern.metadata" -}}
name: {{ .name }}
namespace: {{ .ctx.Release.Namespace }}
labels:
  {{- include "tern.labels" . | nindent 2 }}
{{- end -}}

{{/*
An image of tern's: (dict "ctx" $ "repository" .Values.image.agent). The tag is the chart's appVersion
unless image.tag says otherwise; "latest" and an empty tag are refused.
*/}}
{{- define "tern.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .ctx.Values.image.tag | toString -}}
{{- if or (eq $tag "latest") (eq $tag "") -}}
{{- fail "image.tag: pin a version (the chart's appVersion by default), not \"latest\"" -}}
{{- end -}}
{{- printf "%s%s:%s" .ctx.Values.image.registry .repository $tag -}}
{{- end -}}

{{/* A CSI sidecar's image: (dict "ctx" $ "s" .Values.csi.sidecars.provisioner) */}}
{{- define "tern.sidecarImage" -}}
{{- $tag := .s.tag | toString -}}
{{- if or (eq $tag "latest") (eq $tag "") -}}
{{- fail (printf "csi.sidecars.%s.tag: pin a version, not \"latest\"" .s.image) -}}
{{- end -}}
{{- printf "%s/%s:%s" (.ctx.Values.csi.sidecars.registry | trimSuffix "/") .s.image $tag -}}
{{- end -}}

{{/* imagePullSecrets of a pod spec, or nothing: {{- with include "tern.imagePullSecrets" . }}{{ . | nindent 6 }}{{ end }} */}}
{{- define "tern.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets -}}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/*
etcd endpoints as tern's clients take them (host:port by address: they do not resolve names). The
bundled members are reached through one ClusterIP Service each (<fullname>-etcd-<i>), whose address
Kubernetes gives every pod of the namespace as <NAME>_SERVICE_HOST; the kubelet expands $(VAR) in
arguments. Pods that use this set enableServiceLinks: true.
*/}}
{{- define "tern.etcdEndpoints" -}}
{{- if .Values.etcd.enabled -}}
{{- $fullname := include "tern.fullname" . -}}
{{- $eps := list -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $svc := printf "%s-etcd-%d" $fullname $i | upper | replace "-" "_" -}}
{{- $eps = append $eps (printf "$(%s_SERVICE_HOST):%d" $svc (int $.Values.etcd.clientPort)) -}}
{{- end -}}
{{- join "," $eps -}}
{{- else -}}
{{- if not .Values.etcd.endpoints -}}
{{- fail "etcd.enabled=false needs etcd.endpoints (IP:port of each member)" -}}
{{- end -}}
{{- range .Values.etcd.endpoints -}}
{{- if not (regexMatch "^(\\d{1,3}(\\.\\d{1,3}){3}|\\[[0-9a-fA-F:]+\\]):\\d+$" (toString .)) -}}
{{- fail (printf "etcd.endpoints: %q is not IP:port (tern's etcd client does not resolve host names)" (toString .)) -}}
{{- end -}}
{{- end -}}
{{- join "," .Values.etcd.endpoints -}}
{{- end -}}
{{- end -}}

{{/* The agents' headless Service: each agent is <fullname>-agent-<i>.<this>.<ns>.svc.<domain>. */}}
{{- define "tern.agentHeadless" -}}
{{- printf "%s-agent-hl" (include "tern.fullname" .) -}}
{{- end -}}

{{/* One agent's DNS name: (dict "ctx" $ "i" 0) */}}
{{- define "tern.agentHost" -}}
{{- printf "%s-agent-%d.%s.%s.svc.%s" (include "tern.fullname" .ctx) (int .i) (include "tern.agentHeadless" .ctx) .ctx.Release.Namespace .ctx.Values.clusterDomain -}}
{{- end -}}

{{/* Every agent's gRPC endpoint, comma-separated (io-engine --agent takes a list). */}}
{{- define "tern.agentGrpcEndpoints" -}}
{{- $eps := list -}}
{{- range $i := until (int .Values.agent.replicas) -}}
{{- $eps = append $eps (printf "%s:%d" (include "tern.agentHost" (dict "ctx" $ "i" $i)) (int $.Values.agent.grpcPort)) -}}
{{- end -}}
{{- join "," $eps -}}
{{- end -}}

{{/* Every agent's REST URL, comma-separated: clients try them in turn and move on from a standby's 503. */}}
{{- define "tern.agentUrls" -}}
{{- $scheme := ternary "https" "http" .Values.agent.tls.enabled -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.agent.replicas) -}}
{{- $urls = append $urls (printf "%s://%s:%d" $scheme (include "tern.agentHost" (dict "ctx" $ "i" $i)) (int $.Values.agent.restPort)) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}

{{/* The reactor cores of the engine: engine.coreList, else 1..cpuCount. */}}
{{- define "tern.engineCores" -}}
{{- if .Values.engine.coreList -}}
{{- .Values.engine.coreList | toString -}}
{{- else -}}
{{- $n := int .Values.engine.cpuCount -}}
{{- if lt $n 1 -}}{{- fail "engine.cpuCount: at least 1" -}}{{- end -}}
{{- if eq $n 1 -}}1{{- else -}}{{- printf "1-%d" $n -}}{{- end -}}
{{- end -}}
{{- end -}}

{{/* Pod anti-affinity for a component: (dict "ctx" $ "component" "etcd" "mode" "hard") */}}
{{- define "tern.antiAffinity" -}}
podAntiAffinity:
{{- if eq .mode "hard" }}
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "tern.selectorLabels" . | nindent 10 }}
{{- else if eq .mode "soft" }}
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "tern.selectorLabels" . | nindent 12 }}
{{- else }}
{{- fail (printf "antiAffinity: hard or soft, not %q" .mode) }}
{{- end }}
{{- end -}}

{{/* The securityContext of a container that needs no privilege, no capability and no writable root. */}}
{{- define "tern.restrictedContainer" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end -}}
