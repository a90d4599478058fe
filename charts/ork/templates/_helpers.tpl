{{/*
The chart name, or nameOverride.
*/}}
{{- define "ork.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name used as the prefix of every resource: fullnameOverride, else RELEASE when the
release name already contains the chart name, else RELEASE-NAME. Truncated to 63 characters
(DNS label limit).
*/}}
{{- define "ork.fullname" -}}
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

{{/*
The value of the helm.sh/chart label: NAME-VERSION.
*/}}
{{- define "ork.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the controller Pods (Deployment selector, Service, PDB, ServiceMonitor).
Never change them: a Deployment's selector is immutable.
*/}}
{{- define "ork.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ork.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
Standard labels on every resource the chart creates.
*/}}
{{- define "ork.labels" -}}
helm.sh/chart: {{ include "ork.chart" . }}
{{ include "ork.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ork
{{- end }}

{{/*
The image tag: image.tag, else the chart's appVersion.
*/}}
{{- define "ork.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
The ServiceAccount the controller runs as.
*/}}
{{- define "ork.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ork.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The leader-election Lease name.
*/}}
{{- define "ork.leaseName" -}}
{{- default (include "ork.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The PodDisruptionBudget API: policy/v1 where the cluster serves it (Kubernetes >= 1.21), else
policy/v1beta1 (Kubernetes 1.20 has only v1beta1). Helm's offline default API list always
contains policy/v1, so the Kubernetes version is checked too (helm template --kube-version).
*/}}
{{- define "ork.pdbApiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "policy/v1") (semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end }}
{{- end }}

{{/*
Checks of combinations of values that the schema cannot express; renders nothing.
*/}}
{{- define "ork.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 needs leaderElection.enabled=true: without it every replica would reconcile" }}
{{- end }}
{{- end }}

{{/*
The controller's permissions on the resources it manages, shared by the ClusterRole
(cluster-wide mode) and the per-namespace Roles (watchNamespaces mode).
*/}}
{{- define "ork.controllerRules" -}}
# The Workflow, Run and Schedule controllers watch their kinds; a Run reads its referenced
# Workflow.
- apiGroups: ["ork.dev"]
  resources: ["workflows", "runs", "schedules"]
  verbs: ["get", "list", "watch"]
# Status is written only through the status subresource, with JSON merge patches.
- apiGroups: ["ork.dev"]
  resources: ["workflows/status", "runs/status", "schedules/status"]
  verbs: ["patch"]
# A Schedule makes a Run at each tick, cancels the one it replaces (concurrencyPolicy Replace)
# and deletes finished ones past its history limits.
- apiGroups: ["ork.dev"]
  resources: ["runs"]
  verbs: ["create", "patch", "delete"]
# One Job per task attempt: create makes it, get reads one that already exists to check its
# owner, delete stops attempts; list/watch feed the Job index.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Exit codes, termination messages (a task's outputs) and why an attempt waits are read from
# the Jobs' Pods, through the watch-fed cache.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Why a Job has no Pod (a quota, an admission webhook): its FailedCreate Events, shown in the
# task's message.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
# A run of more than 1,000 tasks keeps its task records (and pinned tasks) in RunShards: created
# and patched as tasks change, listed back after a restart, read when one already exists.
- apiGroups: ["ork.dev"]
  resources: ["runshards"]
  verbs: ["get", "list", "create", "patch"]
# A workspace bound with a volumeClaimTemplate gets a PersistentVolumeClaim per run, owned by
# the Run (deleted with it): created before the first Job that mounts it, read when it exists
# already to check that it is the run's.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "create"]
# Kubernetes Events for a run starting and finishing and for each task that fails.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
