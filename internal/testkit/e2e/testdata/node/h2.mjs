// An HTTP/2 client run through the sidecar by the end-to-end tests: undici
// with allowH2 sends N concurrent GETs to URL (node h2.mjs URL N) over one
// tunnel and prints the HTTP versions and statuses it got.
import { readFileSync } from 'node:fs';
import { ProxyAgent, request } from 'undici';

const [url, n] = process.argv.slice(2);
const dispatcher = new ProxyAgent({
  uri: process.env.HTTPS_PROXY,
  // allowH2 twice: the Agent's clients speak HTTP/2 when the tunnel's TLS
  // connector (requestTls) offers it by ALPN.
  requestTls: { ca: readFileSync(process.env.ONBEHALF_CA), allowH2: true },
  allowH2: true,
});
const one = async (i) => {
  const res = await request(url + '/' + i, {
    dispatcher,
    headers: { 'onbehalf-assertion': process.env.ONBEHALF_ASSERTION },
  });
  const body = await res.body.json();
  return { status: res.statusCode, path: body.path };
};
const results = await Promise.all(Array.from({ length: Number(n) }, (_, i) => one(i)));
console.log(JSON.stringify(results));
await dispatcher.close();
