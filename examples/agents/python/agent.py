#!/usr/bin/env python3
"""The smallest agent: call an API through the onbehalf sidecar with `requests`.

The sidecar is the HTTPS proxy and its CA is trusted; the agent holds no token, only the
assertion naming the user it acts for, which it sends in the Onbehalf-Assertion header.
"""
import json
import os
import sys

import requests


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: agent.py URL [JSON-BODY]", file=sys.stderr)
        return 2
    url = sys.argv[1]
    body = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None

    proxy = os.environ["HTTPS_PROXY"]
    headers = {"Onbehalf-Assertion": os.environ["ONBEHALF_ASSERTION"]}
    resp = requests.request(
        "POST" if body is not None else "GET",
        url,
        json=body,
        headers=headers,
        proxies={"https": proxy, "http": proxy},
        verify=os.environ["ONBEHALF_CA"],  # trust the sidecar's interception CA
        timeout=30,
    )
    print(resp.text)
    if not resp.ok:
        code = resp.headers.get("Content-Type", "").startswith("application/json") and resp.json().get("error")
        print(f"HTTP {resp.status_code} {code or ''}".strip(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
