// A WebSocket client run through the sidecar by the end-to-end tests:
// node websocket.mjs ws|undici URL. It reads the proxy from HTTPS_PROXY,
// the sidecar CA from ONBEHALF_CA and the assertion from
// ONBEHALF_ASSERTION; it waits for the server's greeting, sends an echo,
// asks for the upgrade request's headers and for close 4001, and prints
// one JSON object with what it received.
import { readFileSync } from 'node:fs';

const [kind, url] = process.argv.slice(2);
const proxy = process.env.HTTPS_PROXY;
const ca = readFileSync(process.env.ONBEHALF_CA);
const headers = {
  'Onbehalf-Assertion': process.env.ONBEHALF_ASSERTION,
  Authorization: 'Bearer agent-own-credential',
};

let ws;
if (kind === 'ws') {
  const { default: WebSocket } = await import('ws');
  const { HttpsProxyAgent } = await import('https-proxy-agent');
  ws = new WebSocket(url, { agent: new HttpsProxyAgent(proxy), ca, headers, perMessageDeflate: true });
} else {
  const { WebSocket, ProxyAgent } = await import('undici');
  ws = new WebSocket(url, { dispatcher: new ProxyAgent({ uri: proxy, requestTls: { ca } }), headers });
}

const got = { messages: [] };
const steps = ['echo from ' + kind, 'headers', 'close 4001'];
const text = (d) => (typeof d === 'string' ? d : Buffer.from(d).toString());
const onMessage = (data) => {
  got.messages.push(text(data));
  const next = steps.shift();
  if (next) ws.send(next);
};
const onClose = (code, reason) => {
  got.close_code = code;
  got.close_reason = text(reason ?? '');
  console.log(JSON.stringify(got));
  process.exit(0);
};
const fail = (err) => {
  console.error('websocket error:', err?.message ?? err);
  process.exit(1);
};
if (kind === 'ws') {
  ws.on('message', onMessage);
  ws.on('close', onClose);
  ws.on('error', fail);
  ws.on('unexpected-response', (_req, res) => {
    console.log(JSON.stringify({ status: res.statusCode, error: res.headers['onbehalf-error'] }));
    process.exit(0);
  });
} else {
  ws.binaryType = 'arraybuffer';
  ws.onmessage = (ev) => onMessage(ev.data);
  ws.onclose = (ev) => onClose(ev.code, ev.reason);
  ws.onerror = (ev) => fail(ev.error ?? ev.message);
}
setTimeout(() => fail('timed out'), 20000).unref();
