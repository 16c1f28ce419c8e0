{{/* Names. */}}
{{- define "onbehalf.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 55 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 55 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "onbehalf.webhookName" -}}{{ include "onbehalf.fullname" . }}-webhook{{- end -}}
{{- define "onbehalf.connectName" -}}{{ include "onbehalf.fullname" . }}-connect{{- end -}}

{{/* Objects in agent namespaces have fixed names: the webhook configuration
refers to them by these names, and pods may override config and policy by
annotation. */}}
{{- define "onbehalf.sidecarConfigMap" -}}onbehalf-sidecar{{- end -}}
{{- define "onbehalf.trustConfigMap" -}}onbehalf-trust{{- end -}}
{{- define "onbehalf.policyConfigMap" -}}onbehalf-policy{{- end -}}
{{- define "onbehalf.auditSecret" -}}{{ .Values.audit.existingSecret | default "onbehalf-audit" }}{{- end -}}
{{- define "onbehalf.caSecret" -}}{{ .Values.interceptionCA.existingSecret | default "onbehalf-ca" }}{{- end -}}

{{/* Mount paths fixed by the webhook (package webhook). */}}
{{- define "onbehalf.configDir" -}}/etc/onbehalf/config{{- end -}}
{{- define "onbehalf.policyDir" -}}/etc/onbehalf/policy{{- end -}}
{{- define "onbehalf.secretDir" -}}/etc/onbehalf/secret{{- end -}}
{{- define "onbehalf.vaultTokenFile" -}}/var/run/secrets/vault/token{{- end -}}

{{- define "onbehalf.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: onbehalf
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels; the component label also keeps the chart's own pods out
of the webhook's reach (objectSelector). */}}
{{- define "onbehalf.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
onbehalf.dev/component: {{ .component }}
{{- end -}}

{{- define "onbehalf.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The agent namespaces as a JSON list. */}}
{{- define "onbehalf.agentNamespaces" -}}
{{- if .Values.agentNamespaces -}}
{{ .Values.agentNamespaces | uniq | toJson }}
{{- else -}}
{{ list .Release.Namespace | toJson }}
{{- end -}}
{{- end -}}

{{/* "true" when pods get a native sidecar. */}}
{{- define "onbehalf.native" -}}
{{- $mode := .Values.webhook.nativeSidecar -}}
{{- if eq $mode "always" -}}true
{{- else if eq $mode "never" -}}false
{{- else -}}{{ semverCompare ">=1.29.0-0" .Capabilities.KubeVersion.Version }}
{{- end -}}
{{- end -}}

{{/* "true" when cert-manager issues the webhook certificate. */}}
{{- define "onbehalf.certManager" -}}
{{- $cm := .Values.webhook.tls.certManager -}}
{{- if eq (toString $cm) "auto" -}}{{ .Capabilities.APIVersions.Has "cert-manager.io/v1" }}
{{- else -}}{{ $cm }}
{{- end -}}
{{- end -}}

{{/* "true" when the store logs in to Vault with a projected token. */}}
{{- define "onbehalf.vaultKubernetesAuth" -}}
{{- $v := .Values.store.vault | default dict -}}
{{- $auth := $v.auth | default dict -}}
{{- and (eq .Values.store.backend "vault") (eq ($auth.method | default "kubernetes") "kubernetes") -}}
{{- end -}}

{{/* The store section with the projected token file filled in. */}}
{{- define "onbehalf.storeConfig" -}}
{{- $store := deepCopy .Values.store -}}
{{- if eq (include "onbehalf.vaultKubernetesAuth" .) "true" -}}
{{- $vault := $store.vault | default dict -}}
{{- $auth := $vault.auth | default dict -}}
{{- $_ := set $auth "kubernetes_token_file" (include "onbehalf.vaultTokenFile" .) -}}
{{- $_ := set $vault "auth" $auth -}}
{{- $_ := set $store "vault" $vault -}}
{{- end -}}
{{- toYaml $store -}}
{{- end -}}

{{/* The policy section of the sidecar configuration. */}}
{{- define "onbehalf.policyConfig" -}}
{{- $p := .Values.policy -}}
{{- $out := dict "query" $p.query "timeout" $p.timeout -}}
{{- if $p.bundle.url -}}
{{- $b := dict "url" $p.bundle.url "poll_min" $p.bundle.pollMin "poll_max" $p.bundle.pollMax -}}
{{- if $p.bundle.publicKey -}}
{{- $_ := set $b "public_key_file" (printf "%s/bundle-public-key.pem" (include "onbehalf.configDir" .)) -}}
{{- end -}}
{{- $_ := set $out "bundle" $b -}}
{{- else -}}
{{- $_ := set $out "paths" (list (include "onbehalf.policyDir" .)) -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* The sidecar's configuration file. */}}
{{- define "onbehalf.sidecarConfig" -}}
{{- $cfgDir := include "onbehalf.configDir" . -}}
{{- $secretDir := include "onbehalf.secretDir" . -}}
{{- $keys := list -}}
{{- range .Values.identity.keys -}}
{{- $keys = append $keys (dict "id" .id "file" (printf "%s/identity-%s.pem" $cfgDir .id)) -}}
{{- end -}}
{{- $identity := dict "audience" .Values.identity.audience "issuers" .Values.identity.issuers "algorithms" .Values.identity.algorithms -}}
{{- if $keys -}}{{- $_ := set $identity "keys" $keys -}}{{- end -}}
{{- if .Values.identity.jwksUrl -}}{{- $_ := set $identity "jwks_url" .Values.identity.jwksUrl -}}{{- end -}}
{{- if .Values.identity.idps -}}{{- $_ := set $identity "idps" .Values.identity.idps -}}{{- end -}}
{{- $cfg := dict
  "proxy" (dict "listen" (printf "127.0.0.1:%v" .Values.sidecar.proxyPort) "unrouted" "refuse")
  "admin" (dict "listen" (printf ":%v" .Values.sidecar.adminPort))
  "ca" (dict "cert" (printf "%s/ca.crt" $secretDir) "key" (printf "%s/ca.key" $secretDir) "leaf_names" .Values.interceptionCA.leafNames)
  "identity" $identity
  "routes" .Values.routes
  "policy" (include "onbehalf.policyConfig" . | fromYaml)
  "store" (include "onbehalf.storeConfig" . | fromYaml)
  "audit" (dict "sink" .Values.audit.sink "fail_closed" .Values.audit.failClosed "fingerprint_key_file" (printf "%s/fingerprint.key" $secretDir))
  "log" (dict "level" .Values.log.level "format" .Values.log.format)
-}}
{{- if .Values.providers -}}
{{- $_ := set $cfg "providers" .Values.providers -}}
{{- /* The refresh journal lives in the sidecar's own emptyDir (mounted at
/tmp, never into an agent container), which survives container restarts:
a sidecar killed with refreshed tokens not yet in Vault replays them when
it comes back. */ -}}
{{- $_ := set $cfg "refresh" (dict "journal" (dict "dir" "/tmp/onbehalf-journal" "key_file" "/tmp/onbehalf-journal.key")) -}}
{{- end -}}
{{- if .Values.connectServer.enabled -}}
{{- with .Values.connectServer.config.external_url -}}
{{- $_ := set $cfg.proxy "connect_url" . -}}
{{- end -}}
{{- end -}}
{{- $cfg = mergeOverwrite $cfg (deepCopy .Values.sidecar.config) -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The connect server's configuration file. */}}
{{- define "onbehalf.connectConfig" -}}
{{- $connect := mergeOverwrite (deepCopy .Values.connectServer.config) (dict
  "listen" (printf ":%v" .Values.connectServer.port)
  "session_key_file" "/etc/onbehalf/connect-session/session.key") -}}
{{- $cfg := dict
  "connect" $connect
  "store" (include "onbehalf.storeConfig" . | fromYaml)
  "audit" (dict "sink" .Values.audit.sink "fail_closed" .Values.audit.failClosed)
  "log" (dict "level" .Values.log.level "format" .Values.log.format)
-}}
{{- if .Values.providers -}}{{- $_ := set $cfg "providers" .Values.providers -}}{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The hardened security context every chart container shares. */}}
{{- define "onbehalf.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
