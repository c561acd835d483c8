{{/* Snippets shared by the containers of a Redis pod. */}}

{{- define "inventory.redis.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- if .Values.redis.auth }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "inventory.secretName" . }}
      key: REDIS_PASSWORD
{{- end }}
{{- end -}}

{{- define "inventory.redis.mounts" -}}
- name: data
  mountPath: /data
- name: config
  mountPath: /etc/redis
- name: runtime
  mountPath: /run/redis
- name: tmp
  mountPath: /tmp
{{- end -}}


{{/* The container securityContext of the restricted Pod Security Standard. */}}
{{- define "inventory.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end -}}
