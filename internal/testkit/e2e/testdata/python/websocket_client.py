"""A WebSocket client run through the sidecar by the end-to-end tests.

python3 websocket_client.py URL — with the websockets library (Debian's
python3-websockets). That version has no proxy support of its own, so the
client opens the CONNECT tunnel itself from HTTPS_PROXY, as a proxy-aware
client does, and hands the socket to websockets, which does TLS (trusting
ONBEHALF_CA) and the handshake. It waits for the greeting, sends an echo,
asks for the upgrade request's headers and for close 4001, and prints one
JSON object with what it received.
"""
import asyncio
import json
import os
import socket
import ssl
import sys
from urllib.parse import urlsplit

import websockets


def connect_tunnel(proxy, host, port):
    p = urlsplit(proxy)
    sock = socket.create_connection((p.hostname, p.port), timeout=10)
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("proxy closed the connection")
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise RuntimeError(f"CONNECT refused: {status!r}")
    sock.settimeout(None)
    return sock


async def main(url):
    u = urlsplit(url)
    sock = connect_tunnel(os.environ["HTTPS_PROXY"], u.hostname, u.port)
    ctx = ssl.create_default_context(cafile=os.environ["ONBEHALF_CA"])
    headers = {
        "Onbehalf-Assertion": os.environ["ONBEHALF_ASSERTION"],
        "Authorization": "Bearer agent-own-credential",
    }
    got = {"messages": []}
    async with websockets.connect(url, sock=sock, ssl=ctx, server_hostname=u.hostname,
                                  extra_headers=headers) as ws:
        for step in ["echo from python", "headers", "close 4001"]:
            got["messages"].append(await ws.recv())
            await ws.send(step)
        try:
            got["messages"].append(await ws.recv())
            await ws.recv()
        except websockets.ConnectionClosed as e:
            got["close_code"] = e.code
            got["close_reason"] = e.reason
    print(json.dumps(got))


asyncio.run(asyncio.wait_for(main(sys.argv[1]), 20))
