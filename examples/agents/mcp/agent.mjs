// An MCP agent: the official TypeScript SDK's Streamable HTTP client reaching a
// remote MCP server through the onbehalf sidecar, with Node fetch from undici
// and its ProxyAgent. The agent holds no token, only the assertion naming the
// user it acts for; the sidecar injects that user's grant for the MCP server,
// decides on every tool call, and audits it.
//
//   node agent.mjs URL                 list the tools
//   node agent.mjs URL TOOL [JSON]     call TOOL with JSON arguments
//
// It prints one JSON object per line: {"tools": [...]}, {"progress": n,
// "total": m} while a tool streams, {"result": "..."} and, when the sidecar
// (or the server) refuses, {"error": {"code", "message", "data"}}. The data of
// a sidecar refusal is its error body: {"error": "policy_denied",
// "message", "decision_id", "connect_url"?}. Exit status: 0, 1 for a refused
// call, 2 for usage.
import { readFileSync } from 'node:fs';
import { fetch, ProxyAgent } from 'undici';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';

const [url, tool, json] = process.argv.slice(2);
if (!url) {
  console.error('usage: node agent.mjs URL [TOOL [JSON-ARGUMENTS]]');
  process.exit(2);
}

const dispatcher = new ProxyAgent({
  uri: process.env.HTTPS_PROXY,
  // Trust the sidecar's interception CA for the tunnelled TLS.
  requestTls: { ca: readFileSync(process.env.ONBEHALF_CA) },
});

const transport = new StreamableHTTPClientTransport(new URL(url), {
  // Every request (POSTs and the GET stream) goes through the sidecar...
  fetch: (input, init) => fetch(input, { ...init, dispatcher }),
  // ...carrying the assertion; never a token.
  requestInit: { headers: { 'Onbehalf-Assertion': process.env.ONBEHALF_ASSERTION } },
});
const client = new Client({ name: 'onbehalf-example-mcp-agent', version: '1.0.0' });
const print = (obj) => console.log(JSON.stringify(obj));

let status = 0;
try {
  await client.connect(transport);
  if (!tool) {
    const { tools } = await client.listTools();
    print({ tools: tools.map((t) => t.name).sort() });
  } else {
    const result = await client.callTool(
      { name: tool, arguments: json ? JSON.parse(json) : {} },
      undefined,
      { onprogress: ({ progress, total }) => print({ progress, total }) },
    );
    print({ result: result.content.map((c) => c.text ?? '').join('\n'), isError: result.isError ?? false });
  }
} catch (err) {
  if (!(err instanceof McpError)) throw err;
  // The sidecar's refusal: a JSON-RPC error, so the model sees why.
  print({ error: { code: err.code, message: err.message, data: err.data } });
  status = 1;
} finally {
  await transport.terminateSession().catch(() => {});
  await client.close();
}
process.exit(status);
