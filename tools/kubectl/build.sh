#!/usr/bin/env bash
# Build kubectl v1.34.0 from this wrapper module (the same pins as tools/kube-apiserver).
#   ./build.sh [OUTPUT]     (default OUTPUT: ./kubectl next to this script)
# The version variables are set as for kube-apiserver, so that `kubectl version` reports v1.34.0.
# Most packages are shared with kube-apiserver: after its build, this one takes a few minutes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/kubectl}
case $out in /*) ;; *) out=$PWD/$out ;; esac
cd "$here"
V=k8s.io/component-base/version
LDFLAGS="-s -w -X $V.gitVersion=v1.34.0 -X $V.gitMajor=1 -X $V.gitMinor=34 -X $V.gitTreeState=clean -X $V.buildDate=2025-08-27T00:00:00Z"
CGO_ENABLED=0 go build -trimpath -ldflags "$LDFLAGS" -o "$out" k8s.io/kubernetes/cmd/kubectl
"$out" version --client
