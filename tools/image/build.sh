#!/usr/bin/env bash
# Build the onbehalf image without a registry or a base image, with buildah:
#   tools/image/build.sh BINARY IMAGE [VERSION] [COMMIT]
# BINARY is a static onbehalf (CGO_ENABLED=0). The image holds what the
# Dockerfile's final stage (gcr.io/distroless/static-debian12:nonroot) gives
# the binary: the CA bundle at /etc/ssl/certs/ca-certificates.crt (this
# machine's, from Debian's ca-certificates), /etc/passwd and /etc/group with
# root, nobody and nonroot (65532), the nonroot home and a world-writable
# /tmp; and nothing else: no shell, no package manager, no libc. It runs as
# 65532:65532 with /onbehalf as its entrypoint. (distroless also carries
# tzdata and /etc/os-release; the binary reads neither.)
set -euo pipefail
bin=${1:?usage: build.sh BINARY IMAGE [VERSION] [COMMIT]}
image=${2:?usage: build.sh BINARY IMAGE [VERSION] [COMMIT]}
version=${3:-dev}
commit=${4:-unknown}
bundle=/etc/ssl/certs/ca-certificates.crt

command -v buildah >/dev/null || { echo "build.sh: buildah is not installed (apt-get install buildah)" >&2; exit 1; }
[[ -r $bundle ]] || { echo "build.sh: no CA bundle at $bundle (apt-get install ca-certificates)" >&2; exit 1; }
if file_out=$(head -c 4 "$bin" | od -An -tx1 | tr -d ' \n'); [[ $file_out != 7f454c46 ]]; then
	echo "build.sh: $bin is not an ELF binary" >&2
	exit 1
fi

root=$(mktemp -d)
ctr=
cleanup() {
	[[ -n $ctr ]] && buildah rm "$ctr" >/dev/null 2>&1 || true
	rm -rf "$root"
}
trap cleanup EXIT

# The root file system, laid out here and copied in one layer.
install -d -m 0755 "$root/etc/ssl/certs" "$root/home"
install -d -m 0700 "$root/home/nonroot"
install -d -m 1777 "$root/tmp"
install -m 0644 "$bundle" "$root/etc/ssl/certs/ca-certificates.crt"
install -m 0755 "$bin" "$root/onbehalf"
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
GROUP
chmod 0644 "$root/etc/passwd" "$root/etc/group"

# Owners as in distroless: root, except the nonroot home. A tar archive
# (numeric owners) carries them into the layer.
chown -R 0:0 "$root"
chown 65532:65532 "$root/home/nonroot"
tar --numeric-owner -C "$root" -cf "$root.tar" .
trap 'cleanup; rm -f "$root.tar"' EXIT

ctr=$(buildah from --quiet scratch)
buildah add --quiet "$ctr" "$root.tar" / >/dev/null
buildah config \
	--os linux --arch "$(go env GOARCH 2>/dev/null || echo amd64)" \
	--entrypoint '["/onbehalf"]' --cmd '["--help"]' \
	--user 65532:65532 --workingdir / \
	--label org.opencontainers.image.title=onbehalf \
	--label org.opencontainers.image.source=https://github.com/onbehalf-dev/onbehalf \
	--label org.opencontainers.image.version="$version" \
	--label org.opencontainers.image.revision="$commit" \
	"$ctr"
old=$(buildah inspect --type image --format '{{.FromImageID}}' "$image" 2>/dev/null || true)
buildah commit --quiet --rm --format oci "$ctr" "$image" >/dev/null
ctr=
# The image this build replaced under the same name, if nothing else uses it.
new=$(buildah inspect --type image --format '{{.FromImageID}}' "$image")
if [[ -n $old && $old != "$new" ]]; then
	buildah rmi "$old" >/dev/null 2>&1 || true
fi
echo "built $image"
