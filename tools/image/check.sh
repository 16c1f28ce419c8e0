#!/usr/bin/env bash
# Check the image tools/image/build.sh built:
#   tools/image/check.sh IMAGE BINARY [MAX_MB]
# Its configuration (entrypoint /onbehalf, user 65532:65532), its files
# (exactly the binary, the CA bundle, passwd, group, the nonroot home and
# /tmp: no shell), its size (at most MAX_MB, default 64), and, where podman
# can run containers, `onbehalf --version` and `onbehalf serve --check` in
# it with a read-only root file system, no network, no capabilities and no
# new privileges. BINARY (the same static build, run on this machine)
# prepares the configuration serve --check reads.
set -euo pipefail
image=${1:?usage: check.sh IMAGE BINARY [MAX_MB]}
bin=${2:?usage: check.sh IMAGE BINARY [MAX_MB]}
max_mb=${3:-64}
fail=0
bad() { echo "check: $*" >&2; fail=1; }

# Configuration.
entrypoint=$(podman image inspect --format '{{json .Config.Entrypoint}}' "$image")
user=$(podman image inspect --format '{{.Config.User}}' "$image")
cmd=$(podman image inspect --format '{{json .Config.Cmd}}' "$image")
[[ $entrypoint == '["/onbehalf"]' ]] || bad "entrypoint is $entrypoint; want [\"/onbehalf\"]"
[[ $user == 65532:65532 ]] || bad "user is $user; want 65532:65532"
echo "entrypoint $entrypoint, cmd $cmd, user $user"

# Files: exactly these, and no shell.
ctr=$(buildah from --quiet "$image")
trap 'buildah umount "$ctr" >/dev/null 2>&1 || true; buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
mnt=$(buildah mount "$ctr")
files=$(cd "$mnt" && find . -mindepth 1 -printf '%p %m %U:%G\n' | sort)
want=$(sort <<'FILES'
./etc 755 0:0
./etc/group 644 0:0
./etc/passwd 644 0:0
./etc/ssl 755 0:0
./etc/ssl/certs 755 0:0
./etc/ssl/certs/ca-certificates.crt 644 0:0
./home 755 0:0
./home/nonroot 700 65532:65532
./onbehalf 755 0:0
./tmp 1777 0:0
FILES
)
if [[ $files != "$want" ]]; then
	bad "the image's files differ from the expected set:"
	diff <(echo "$want") <(echo "$files") >&2 || true
fi
for sh in bin/sh bin/bash bin/busybox usr/bin/env; do
	[[ ! -e $mnt/$sh ]] || bad "the image has /$sh"
done
cmp -s "$mnt/onbehalf" "$bin" || bad "/onbehalf is not $bin"
grep -q '^nonroot:x:65532:65532:' "$mnt/etc/passwd" || bad "/etc/passwd lacks nonroot (65532)"
buildah umount "$ctr" >/dev/null

# Size.
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "size $((size / 1024 / 1024)) MiB ($size bytes; the binary is $(stat -c %s "$bin") bytes)"
((size <= max_mb * 1024 * 1024)) || bad "the image is over $max_mb MiB"

# Running it. podman's defaults may not work in a container: raising
# RLIMIT_NOFILE/NPROC needs CAP_SYS_RESOURCE (so the limits are set to what
# this shell has, or lower), and crun refuses cgroup v1/v2 hybrid hosts (so
# runc is used when crun fails).
cfg=$(mktemp -d)
trap 'rm -rf "$cfg"; buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
"$bin" ca init --dir "$cfg" >/dev/null
"$bin" assert keygen --private "$cfg/orchestrator.key" --public "$cfg/orchestrator.pub" >/dev/null
mkdir -p "$cfg/policy" "$cfg/state"
cat >"$cfg/policy/policy.rego" <<'REGO'
package onbehalf.authz

decision := {"allow": true, "reason": "image check"}
REGO
head -c 32 /dev/urandom >"$cfg/state/grants.key"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$cfg/state/fingerprint.key"
chmod 0600 "$cfg/state/grants.key" "$cfg/state/fingerprint.key"
cat >"$cfg/onbehalf.yaml" <<'YAML'
proxy: {listen: 127.0.0.1:15080}
admin: {listen: ":15090"}
ca: {cert: /etc/onbehalf/ca.pem, key: /etc/onbehalf/ca-key.pem}
identity:
  audience: onbehalf-sidecar
  issuers: [https://orchestrator.example.com]
  keys: [{id: orchestrator, file: /etc/onbehalf/orchestrator.pub}]
routes: [{host: api.github.com, provider: github}]
policy: {paths: [/etc/onbehalf/policy]}
store:
  backend: embedded
  embedded: {path: /etc/onbehalf/state/grants.db, key_file: /etc/onbehalf/state/grants.key}
audit: {sink: stdout, fingerprint_key_file: /etc/onbehalf/state/fingerprint.key}
YAML
chown -R 65532:65532 "$cfg"
nofile=$(ulimit -Hn)
run_opts=(--rm --read-only --network none --cap-drop ALL --security-opt no-new-privileges
	--ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)
podman_run() {
	local out
	if out=$(podman "${runtime[@]}" run "${run_opts[@]}" "$@" 2>&1); then
		printf '%s\n' "$out"
		return 0
	fi
	printf '%s\n' "$out"
	return 1
}
runtime=()
if ! out=$(podman_run "$image" --version); then
	echo "podman (default runtime) cannot run the image here: $out" >&2
	if command -v runc >/dev/null; then
		runtime=(--runtime runc)
		if ! out=$(podman_run "$image" --version); then
			echo "podman with runc cannot run it either: $out" >&2
			echo "check: not run (see above); configuration, files and size checked" >&2
			exit $fail
		fi
	else
		echo "check: not run (install runc to try it); configuration, files and size checked" >&2
		exit $fail
	fi
fi
echo "podman ${runtime[*]} run --read-only $image --version: $out"
[[ $out == "onbehalf version "* ]] || bad "--version printed: $out"
if out=$(podman_run -v "$cfg:/etc/onbehalf:ro" "$image" serve --check --config /etc/onbehalf/onbehalf.yaml); then
	echo "serve --check in the image: $out"
	[[ $out == *"is valid and every file it names loads"* ]] || bad "serve --check printed: $out"
else
	bad "serve --check in the image failed: $out"
fi
# Without the key files serve --check names them (the mount is read-only:
# the sidecar could not create them either).
rm "$cfg/state/grants.key" "$cfg/state/fingerprint.key"
if out=$(podman_run -v "$cfg:/etc/onbehalf:ro" "$image" serve --check --config /etc/onbehalf/onbehalf.yaml); then
	bad "serve --check without its key files passed: $out"
elif [[ $out != *"store.embedded.key_file"* || $out != *"audit.fingerprint_key_file"* ]]; then
	bad "serve --check without its key files: $out"
else
	echo "serve --check in the image without its key files: refused, naming both"
fi
if out=$(podman_run --entrypoint /bin/sh "$image" -c true); then
	bad "/bin/sh ran in the image"
else
	echo "no shell: $(tail -1 <<<"$out")"
fi
exit $fail
