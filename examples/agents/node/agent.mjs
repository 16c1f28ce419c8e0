// The smallest agent: call an API through the onbehalf sidecar with fetch and
// undici's ProxyAgent. The agent holds no token, only the assertion naming the
// user it acts for.
import { readFileSync } from 'node:fs';
import { fetch, ProxyAgent } from 'undici';

const [url, json] = process.argv.slice(2);
if (!url) {
  console.error('usage: node agent.mjs URL [JSON-BODY]');
  process.exit(2);
}

const dispatcher = new ProxyAgent({
  uri: process.env.HTTPS_PROXY,
  // Trust the sidecar's interception CA for the tunnelled TLS.
  requestTls: { ca: readFileSync(process.env.ONBEHALF_CA) },
});

const resp = await fetch(url, {
  dispatcher,
  method: json ? 'POST' : 'GET',
  headers: {
    'Onbehalf-Assertion': process.env.ONBEHALF_ASSERTION,
    ...(json ? { 'Content-Type': 'application/json' } : {}),
  },
  body: json,
});
const text = await resp.text();
console.log(text);
if (!resp.ok) {
  let code = '';
  try { code = JSON.parse(text).error ?? ''; } catch {}
  console.error(`HTTP ${resp.status} ${code}`.trim());
  process.exit(1);
}
