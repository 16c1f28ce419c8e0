#!/bin/sh
# The smallest agent: curl through the onbehalf sidecar. The agent holds no
# token, only the assertion naming the user it acts for.
#   HTTPS_PROXY=http://127.0.0.1:8080 ONBEHALF_CA=ca.pem ONBEHALF_ASSERTION=... agent.sh URL [JSON]
set -eu
[ $# -ge 1 ] || { echo "usage: agent.sh URL [JSON-BODY]" >&2; exit 2; }
url=$1

if [ $# -ge 2 ]; then
	set -- --data "$2" -H 'Content-Type: application/json'
else
	set --
fi
exec curl --silent --show-error --fail-with-body \
	--proxy "$HTTPS_PROXY" \
	--cacert "$ONBEHALF_CA" \
	-H "Onbehalf-Assertion: $ONBEHALF_ASSERTION" \
	"$@" "$url"
