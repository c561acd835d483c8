{{/* The backup CronJobs' names, their shared environment and volumes, and the checks of the backup values. */}}

{{/* A CronJob's name: the release's full name, cut so that the suffix always survives (the alert rules in
files/rules/backup.yaml find the CronJobs by it: -backup-sessions, -backup-database, -restore-drill) and the
whole stays within 52 characters (a Job adds 11). Include with (list $ "backup-sessions"). */}}
{{- define "inventory.backup.cronJobName" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $prefix := include "inventory.fullname" $root | trunc (int (sub 51 (len $suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $prefix $suffix -}}
{{- end -}}

{{/* The PVC of backup.target="" (the name of the chart's first backup job, so upgrades keep its files). */}}
{{- define "inventory.backup.pvcName" -}}
{{- printf "%s-backup" (include "inventory.fullname" .) | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "inventory.backup.serviceAccountName" -}}
{{- $sa := .Values.backup.serviceAccount -}}
{{- if $sa.create -}}
{{- default (include "inventory.backup.cronJobName" (list . "backup")) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* Where `moor` reads and writes backups: the S3 URL, or the PVC's mount point. */}}
{{- define "inventory.backup.target" -}}
{{- default "/backup" .Values.backup.target -}}
{{- end -}}

{{/* "true" when the database CronJob is rendered: backup.database.enabled, or when it is null (auto) a
bundled database whose backups can leave the cluster (backup.target set). */}}
{{- define "inventory.backup.database" -}}
{{- $b := .Values.backup -}}
{{- $wanted := $b.database.enabled -}}
{{- if kindIs "invalid" $wanted -}}
{{- $wanted = and (eq .Values.database.mode "bundled") (ne $b.target "") -}}
{{- end -}}
{{- if and $b.enabled $wanted -}}true{{- end -}}
{{- end -}}

{{/* "true" when the sessions CronJob is rendered. */}}
{{- define "inventory.backup.sessions" -}}
{{- if and .Values.backup.enabled (eq .Values.app.sessionDriver "redis") -}}true{{- end -}}
{{- end -}}

{{/* The engine name `moor backup-db --engine` takes. */}}
{{- define "inventory.backup.engine" -}}
{{- ternary "mysql" "postgres" (eq .Values.database.bundled.engine "mysql") -}}
{{- end -}}

{{/* The dump file the database CronJob's init container writes and `moor backup-db --file` reads. */}}
{{- define "inventory.backup.dumpFile" -}}
{{- ternary "/dump/database.sql" "/dump/database.dump" (eq .Values.database.bundled.engine "mysql") -}}
{{- end -}}

{{/* The environment every `moor` backup command needs beyond REDIS_*: the signing key, encryption, and the S3
settings. Secrets come as files (*_FILE) or secretKeyRef, never as literal values. */}}
{{- define "inventory.backup.env" -}}
{{- $b := .Values.backup -}}
{{- $secret := include "inventory.secretName" . -}}
- name: BACKUP_ENCRYPT
  value: {{ $b.encrypt | quote }}
{{- if $b.key.existingSecret }}
- name: BACKUP_KEY_FILE
  value: /var/run/secrets/backup-key/BACKUP_KEY
- name: BACKUP_PREVIOUS_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $b.key.existingSecret }}
      key: BACKUP_PREVIOUS_KEYS
      optional: true
{{- else }}
- name: APP_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: APP_KEY
- name: APP_PREVIOUS_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: APP_PREVIOUS_KEYS
      optional: true
{{- end }}
{{- if $b.target }}
{{- $s3 := $b.s3 }}
{{- with $s3.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with $s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
- name: BACKUP_S3_PATH_STYLE
  value: {{ $s3.pathStyle | quote }}
{{- with $s3.serverSideEncryption }}
- name: BACKUP_S3_SSE
  value: {{ . | quote }}
{{- end }}
{{- with $s3.kmsKeyId }}
- name: BACKUP_S3_KMS_KEY_ID
  value: {{ . | quote }}
{{- end }}
{{- with $s3.storageClass }}
- name: BACKUP_S3_STORAGE_CLASS
  value: {{ . | quote }}
{{- end }}
{{- if $s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID_FILE
  value: /var/run/secrets/backup-s3/AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY_FILE
  value: /var/run/secrets/backup-s3/AWS_SECRET_ACCESS_KEY
{{- end }}
{{- end }}
{{- end -}}

{{/* The volume mounts that go with inventory.backup.env (the backup/drill container; /tmp included). */}}
{{- define "inventory.backup.mounts" -}}
{{- $b := .Values.backup -}}
- name: tmp
  mountPath: /tmp
{{- if $b.key.existingSecret }}
- name: backup-key
  mountPath: /var/run/secrets/backup-key
  readOnly: true
{{- end }}
{{- if and $b.target $b.s3.existingSecret }}
- name: backup-s3
  mountPath: /var/run/secrets/backup-s3
  readOnly: true
{{- end }}
{{- end -}}

{{/* The volumes of inventory.backup.mounts. */}}
{{- define "inventory.backup.volumes" -}}
{{- $b := .Values.backup -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if $b.key.existingSecret }}
- name: backup-key
  secret:
    secretName: {{ $b.key.existingSecret }}
    defaultMode: 0400
    items:
      - key: {{ $b.key.key }}
        path: BACKUP_KEY
{{- end }}
{{- if and $b.target $b.s3.existingSecret }}
- name: backup-s3
  secret:
    secretName: {{ $b.s3.existingSecret }}
    defaultMode: 0400
    items:
      - key: AWS_ACCESS_KEY_ID
        path: AWS_ACCESS_KEY_ID
      - key: AWS_SECRET_ACCESS_KEY
        path: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- end -}}

{{/* The pod-level part shared by the three CronJobs' pods. */}}
{{- define "inventory.backup.podSpec" -}}
serviceAccountName: {{ include "inventory.backup.serviceAccountName" . }}
{{- /* IRSA needs no API token: the EKS webhook projects its own web-identity token into the pod. */}}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with .Values.backup.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.backup.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* A container securityContext for the database images (their own user, 999) and for the app image. */}}
{{- define "inventory.backup.databaseUser" -}}
runAsUser: 999
runAsGroup: 999
{{ include "inventory.restricted" . }}
{{- end -}}

{{/* Checks of the backup values that the schema cannot express. */}}
{{- define "inventory.backup.validate" -}}
{{- $b := .Values.backup -}}
{{- if $b.enabled -}}
{{- if and (not $b.target) (not $b.persistence.enabled) -}}
{{- fail "backup.target is empty and backup.persistence.enabled=false: the backups would have nowhere to go. Set backup.target=s3://BUCKET/PREFIX/ (off the cluster) or backup.persistence.enabled=true (a PVC)" -}}
{{- end -}}
{{- $irsa := get ($b.serviceAccount.annotations | default dict) "eks.amazonaws.com/role-arn" -}}
{{- if and $b.s3.existingSecret $irsa -}}
{{- fail "backup.s3.existingSecret and the IRSA annotation eks.amazonaws.com/role-arn (backup.serviceAccount.annotations) are both set: use one source of S3 credentials" -}}
{{- end -}}
{{- if and $irsa (not $b.serviceAccount.create) -}}
{{- fail "backup.serviceAccount.annotations are only applied with backup.serviceAccount.create=true; annotate your own service account instead" -}}
{{- end -}}
{{- if and $b.s3.kmsKeyId (ne $b.s3.serverSideEncryption "aws:kms") -}}
{{- fail (printf "backup.s3.kmsKeyId is set but backup.s3.serverSideEncryption is %q: a KMS key needs serverSideEncryption=aws:kms" $b.s3.serverSideEncryption) -}}
{{- end -}}
{{- if eq ($b.database.enabled | toString) "true" -}}
{{- if ne .Values.database.mode "bundled" -}}
{{- fail "backup.database.enabled=true backs up the bundled database only (database.mode=bundled): back up an external database with its provider's snapshots, or set backup.database.enabled=false" -}}
{{- end -}}
{{- if not $b.target -}}
{{- fail "backup.database.enabled=true needs backup.target=s3://BUCKET/PREFIX/: a database backup on a PVC of the same cluster is no backup of the cluster" -}}
{{- end -}}
{{- end -}}
{{- if and $b.drill.enabled (not (include "inventory.backup.sessions" .)) -}}
{{- fail "backup.drill.enabled=true needs the sessions backup (app.sessionDriver=redis): the drill restores the sessions into a scratch Redis, and the database backup beside them" -}}
{{- end -}}
{{- else -}}
{{- if $b.drill.enabled -}}
{{- fail "backup.drill.enabled=true needs backup.enabled=true (the drill restores the backups that job writes)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
