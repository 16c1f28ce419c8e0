#!/usr/bin/env bash
# Installs what `make bench` compares onbehalf with, when missing: Debian's
# mitmproxy and squid-openssl (the squid build with ssl-bump). As root it
# runs apt-get; otherwise it says what to install and lets the run go on
# (the table then marks those setups as not installed). `make test` never
# needs them.
#
# Note: on a machine where services start on install, Debian starts a squid
# service on port 3128; the harness runs its own squid with its own config
# and port and does not touch that one.
set -euo pipefail

missing=()
command -v mitmdump >/dev/null 2>&1 || missing+=(mitmproxy)
if ! command -v squid >/dev/null 2>&1 || ! squid -v 2>/dev/null | grep -q -- '--with-openssl'; then
	missing+=(squid-openssl)
fi
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "make bench: not installed: ${missing[*]}; install with: sudo apt-get install -y ${missing[*]}" >&2
	echo "make bench: going on without them" >&2
	exit 0
fi
echo "make bench: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
