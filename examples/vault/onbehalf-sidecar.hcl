# The least privilege the onbehalf Vault store needs, for KV v2 mounted at
# secret/, the default prefix "onbehalf" and the Transit key onbehalf-grants.
# Grants and leases: read, create by CAS, update by CAS.
path "secret/data/onbehalf/grants/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/data/onbehalf/leases/*" {
  capabilities = ["create", "read", "update"]
}
# When each grant was last used and by which agent, and when it was revoked
# (sidecars note uses, the connect server reads them and notes revocations).
path "secret/data/onbehalf/activity/*" {
  capabilities = ["create", "read", "update"]
}
# The change feed: one entry naming the grants revoked or replaced lately.
# Whoever deletes or replaces a grant appends to it; sidecars read it every
# few seconds, so that they can keep a cached token until it expires and
# still stop using a revoked one within the token cache's TTL.
path "secret/data/onbehalf/changes" {
  capabilities = ["create", "read", "update"]
}
# List uses metadata LIST; Delete reads metadata and destroys old versions.
# Metadata delete is deliberately not granted (see the package doc).
path "secret/metadata/onbehalf/grants/*" {
  capabilities = ["read", "list"]
}
path "secret/destroy/onbehalf/grants/*" {
  capabilities = ["update"]
}
# Provider revocations that failed transiently wait here for a retry (the
# connect server and the CLI queue them; the grant is already deleted).
# Their ids are random and never reused, so deleting their metadata is safe
# and keeps the folder from growing.
path "secret/data/onbehalf/revocations/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/onbehalf/revocations/*" {
  capabilities = ["read", "list", "delete"]
}
# MCP servers connected by their URL: the discovered authorization server
# and the OAuth client registered there (its secret Transit-encrypted like
# grant tokens). The connect server creates and replaces them and, when it
# must register anew, deletes them by a tombstone and destroys the older
# versions; sidecars only read them (a sidecar-only policy may grant "read"
# on the data path alone).
path "secret/data/onbehalf/registrations/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/onbehalf/registrations/*" {
  capabilities = ["read"]
}
path "secret/destroy/onbehalf/registrations/*" {
  capabilities = ["update"]
}
# Provider client secrets (ReadSecret).
path "secret/data/onbehalf/providers/*" {
  capabilities = ["read"]
}
# Transit envelope: encrypt and decrypt only ("update"; no "create", so the
# key is never created implicitly), and read the key's settings to check
# that it is derived.
path "transit/encrypt/onbehalf-grants" {
  capabilities = ["update"]
}
path "transit/decrypt/onbehalf-grants" {
  capabilities = ["update"]
}
path "transit/keys/onbehalf-grants" {
  capabilities = ["read"]
}
