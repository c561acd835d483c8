{{/* Names, labels, computed values and the checks values.schema.json cannot express. */}}

{{- define "inventory.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "inventory.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels common to every object. */}}
{{- define "inventory.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "inventory.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: inventory
{{- end -}}

{{/* Selector of one component: include with (list $ "app"). */}}
{{- define "inventory.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "inventory.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* The Secret holding APP_KEY, REDIS_PASSWORD, DATABASE_URL, ... */}}
{{- define "inventory.secretName" -}}
{{- default (include "inventory.fullname" .) .Values.secret.existingSecret -}}
{{- end -}}

{{- define "inventory.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "inventory.redis.fullname" -}}
{{- printf "%s-redis" (include "inventory.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "inventory.redis.headless" -}}
{{- printf "%s-headless" (include "inventory.redis.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The stable DNS name of Redis pod N: include with (list $ N). */}}
{{- define "inventory.redis.podHost" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%d.%s.%s.svc.%s" (include "inventory.redis.fullname" $root) (index . 1) (include "inventory.redis.headless" $root) $root.Release.Namespace $root.Values.clusterDomain -}}
{{- end -}}

{{- define "inventory.redis.pods" -}}
{{- if eq .Values.redis.architecture "replication" -}}{{ .Values.redis.replicas }}{{- else -}}1{{- end -}}
{{- end -}}

{{/* host:port of every Sentinel, comma-separated (REDIS_SENTINELS). */}}
{{- define "inventory.redis.sentinels" -}}
{{- $hosts := list -}}
{{- range $i := until (int .Values.redis.replicas) -}}
{{- $hosts = append $hosts (printf "%s:26379" (include "inventory.redis.podHost" (list $ $i))) -}}
{{- end -}}
{{- join "," $hosts -}}
{{- end -}}

{{/* A Kubernetes memory quantity in bytes (integers with an optional binary or decimal suffix). */}}
{{- define "inventory.bytes" -}}
{{- $q := toString . -}}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 -}}
{{- $m := regexFindAll "^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$" $q -1 -}}
{{- if not $m -}}
{{- fail (printf "redis.resources.limits.memory: %q is not a whole number with an optional Ki/Mi/Gi/Ti/k/M/G/T suffix" $q) -}}
{{- end -}}
{{- $number := regexReplaceAll "[^0-9]" $q "" | int64 -}}
{{- $suffix := regexReplaceAll "^[0-9]+" $q "" -}}
{{- if $suffix -}}{{ mul $number (get $units $suffix) }}{{- else -}}{{ $number }}{{- end -}}
{{- end -}}

{{/* maxmemory from the container limit by the three-layer model (values.yaml, redis.memory). */}}
{{- define "inventory.redis.maxmemory" -}}
{{- $limit := include "inventory.bytes" .Values.redis.resources.limits.memory | int64 -}}
{{- $cow := add 100 .Values.redis.memory.cowHeadroomPercent -}}
{{- $frag := add 100 .Values.redis.memory.fragmentationHeadroomPercent -}}
{{- div (mul $limit 10000) (mul $cow $frag) -}}
{{- end -}}

{{/* requests of a Redis-pod container: the given requests, or the limits (Guaranteed QoS). */}}
{{- define "inventory.redis.sidecarResources" -}}
requests:
  cpu: {{ .cpu }}
  memory: {{ .memory }}
limits:
  cpu: {{ .cpu }}
  memory: {{ .memory }}
{{- end -}}

{{/* Checks across values that the schema cannot express; every template includes it once via NOTES/config. */}}
{{- define "inventory.validate" -}}
{{- $r := .Values.redis -}}
{{- $ext := $r.external -}}
{{- $externalKinds := 0 -}}
{{- if $ext.url }}{{ $externalKinds = add1 $externalKinds }}{{ end -}}
{{- if $ext.sentinels }}{{ $externalKinds = add1 $externalKinds }}{{ end -}}
{{- if $ext.clusterNodes }}{{ $externalKinds = add1 $externalKinds }}{{ end -}}
{{- if and $r.enabled (gt $externalKinds 0) -}}
{{- fail "redis.external is set while redis.enabled=true: set redis.enabled=false to use an external Redis" -}}
{{- end -}}
{{- if gt $externalKinds 1 -}}
{{- fail "redis.external: set only one of url, sentinels or clusterNodes" -}}
{{- end -}}
{{- if and $ext.sentinels (not $ext.sentinelMaster) -}}
{{- fail "redis.external.sentinels is set but redis.external.sentinelMaster is empty" -}}
{{- end -}}
{{- if and (eq .Values.app.sessionDriver "redis") (not $r.enabled) (eq $externalKinds 0) -}}
{{- fail "app.sessionDriver=redis needs redis.enabled=true or one of redis.external.url/sentinels/clusterNodes (or use app.sessionDriver=database)" -}}
{{- end -}}
{{- if and $r.enabled (eq $r.architecture "replication") (lt (int $r.replicas) 3) -}}
{{- fail "redis.replicas must be at least 3 with architecture=replication (Sentinel needs a majority)" -}}
{{- end -}}
{{- if and $r.enabled (eq $r.architecture "replication") (gt (int $r.sentinel.quorum) (int $r.replicas)) -}}
{{- fail "redis.sentinel.quorum cannot exceed redis.replicas" -}}
{{- end -}}
{{- if and $r.enabled (eq $r.architecture "replication") (ge (int $r.config.minReplicasToWrite) (int $r.replicas)) -}}
{{- fail "redis.config.minReplicasToWrite must be below redis.replicas (the master is not its own replica)" -}}
{{- end -}}
{{- if and (eq .Values.app.sessionDriver "redis") (hasPrefix "replicas:" .Values.app.sessionDurability) -}}
{{- $wanted := trimPrefix "replicas:" .Values.app.sessionDurability | int -}}
{{- if and $r.enabled (eq $r.architecture "standalone") -}}
{{- fail (printf "app.sessionDurability=%s needs Redis replicas: use async with redis.architecture=standalone" .Values.app.sessionDurability) -}}
{{- end -}}
{{- if and $r.enabled (eq $r.architecture "replication") (ge $wanted (int $r.replicas)) -}}
{{- fail (printf "app.sessionDurability=%s: only %d replicas exist besides the master" .Values.app.sessionDurability (sub (int $r.replicas) 1)) -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.database.mode "external") (not (or .Values.database.external.secretName .Values.secret.existingSecret)) -}}
{{- fail "database.mode=external: set database.external.secretName (or secret.existingSecret) to the Secret holding DATABASE_URL" -}}
{{- end -}}
{{- if and (not .Values.app.sessionSecureCookie) (eq .Values.app.sessionSameSite "none") -}}
{{- fail "app.sessionSameSite=none requires app.sessionSecureCookie=true" -}}
{{- end -}}
{{- if lt (int .Values.app.sessionAbsoluteLifetimeMinutes) (int .Values.app.sessionLifetimeMinutes) -}}
{{- fail "app.sessionAbsoluteLifetimeMinutes must not be shorter than app.sessionLifetimeMinutes" -}}
{{- end -}}
{{- if eq (int .Values.app.port) (int .Values.app.metricsPort) -}}
{{- fail "app.metricsPort must differ from app.port" -}}
{{- end -}}
{{- $s := .Values.app.shutdown -}}
{{- $needed := add $s.preStopSleepSeconds $s.delaySeconds $s.graceSeconds -}}
{{- if and $s.terminationGracePeriodSeconds (le (int $s.terminationGracePeriodSeconds) (int $needed)) -}}
{{- fail (printf "app.shutdown.terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + delaySeconds + graceSeconds (%d)" (int $s.terminationGracePeriodSeconds) (int $needed)) -}}
{{- end -}}
{{- if and $r.enabled (eq $r.architecture "replication") (le (int $r.terminationGracePeriodSeconds) (int $r.failoverWaitSeconds)) -}}
{{- fail "redis.terminationGracePeriodSeconds must exceed redis.failoverWaitSeconds (the master's preStop failover)" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas exceeds autoscaling.maxReplicas" -}}
{{- end -}}
{{- include "inventory.backup.validate" . -}}
{{- end -}}

{{- define "inventory.terminationGracePeriod" -}}
{{- $s := .Values.app.shutdown -}}
{{- if $s.terminationGracePeriodSeconds -}}
{{- $s.terminationGracePeriodSeconds -}}
{{- else -}}
{{- add $s.preStopSleepSeconds $s.delaySeconds $s.graceSeconds 5 -}}
{{- end -}}
{{- end -}}

{{/* The bundled database's host name and URL scheme. */}}
{{- define "inventory.db.fullname" -}}
{{- printf "%s-%s" (include "inventory.fullname" .) .Values.database.bundled.engine | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Redis connection secrets of the app's environment (the rest is in the ConfigMap): for the app's
Deployment and for the backup CronJob, which must reach the same Redis the same way. */}}
{{- define "inventory.redisSecretEnv" -}}
{{- $app := .Values.app }}
{{- $r := .Values.redis }}
{{- $secret := include "inventory.secretName" . }}
{{- if eq $app.sessionDriver "redis" }}
{{- if and $r.enabled $r.auth }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: REDIS_PASSWORD
{{- if eq $r.architecture "replication" }}
- name: REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: REDIS_PASSWORD
{{- end }}
{{- end }}
{{- if not $r.enabled }}
{{- with $r.external.passwordKey }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ . }}
{{- end }}
{{- if and $r.external.sentinels $r.external.sentinelPasswordKey }}
- name: REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $r.external.sentinelPasswordKey }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
