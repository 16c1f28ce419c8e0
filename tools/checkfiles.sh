#!/usr/bin/env bash
# Fails when a tracked file is build output: an executable binary (ELF,
# Mach-O, PE or a `#!`-less file with the executable bit) or larger than
# 1 MiB. Files that must be big or executable are listed in ALLOW.
# Run by `make lint`.
set -euo pipefail
cd "$(dirname "$0")/.."

max=$((1 << 20))
# Paths (exact) allowed to break the rules, each with its reason.
ALLOW=(
)

bad=0
while IFS= read -r -d '' f; do
	[[ -f $f ]] || continue # deleted in the work tree
	for a in "${ALLOW[@]}"; do [[ $f == "$a" ]] && continue 2; done
	size=$(stat -c %s -- "$f")
	if ((size > max)); then
		echo "checkfiles: $f is $size bytes (over 1 MiB); build output and large fixtures do not belong in git" >&2
		bad=1
	fi
	magic=$(head -c 4 -- "$f" | od -An -tx1 | tr -d ' \n')
	case $magic in
	7f454c46 | cffaedfe | cefaedfe | feedfacf | feedface | 4d5a*)
		echo "checkfiles: $f is an executable binary; build output does not belong in git" >&2
		bad=1
		continue
		;;
	esac
	if [[ -x $f && $(head -c 2 -- "$f") != '#!' ]]; then
		echo "checkfiles: $f has the executable bit but is not a script" >&2
		bad=1
	fi
done < <(git ls-files -z)
exit $bad
