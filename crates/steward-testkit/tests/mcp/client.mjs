// An MCP client on the official TypeScript SDK, driven by the gateway tests
// (and the benchmark). Usage:
//
//   node client.mjs URL KEY SCRIPT_JSON [ON_BEHALF_OF]
//
// SCRIPT_JSON is a list of steps:
//   {"op": "list_tools"} | {"op": "list_prompts"} | {"op": "list_resources"}
//   {"op": "call", "name": "echo", "arguments": {...}, "progress": true}
//   {"op": "read_resource", "uri": "..."} | {"op": "get_prompt", "name": "..."}
//   {"op": "bench", "name": "echo", "arguments": {...}, "warmup": 200, "calls": 2000}
// It prints one JSON object: {"steps": [...]} with each step's result or
// error, or {"connect_error": "..."} when the session cannot start.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, key, scriptJson, onBehalfOf] = process.argv.slice(2);
const script = JSON.parse(scriptJson);
const headers = {};
if (key) headers["Authorization"] = `Bearer ${key}`;
if (onBehalfOf) headers["X-Steward-On-Behalf-Of"] = onBehalfOf;

const client = new Client({ name: "steward-gateway-test", version: "1.0.0" });
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers },
});

function describe(err) {
  return { code: err?.code ?? null, message: String(err?.message ?? err) };
}

try {
  await client.connect(transport);
} catch (err) {
  process.stdout.write(JSON.stringify({ connect_error: describe(err) }) + "\n");
  process.exit(0);
}

async function step(s) {
  switch (s.op) {
    case "list_tools":
      return (await client.listTools()).tools.map((t) => t.name);
    case "list_prompts":
      return (await client.listPrompts()).prompts.map((p) => p.name);
    case "list_resources":
      return (await client.listResources()).resources.map((r) => r.uri);
    case "read_resource":
      return await client.readResource({ uri: s.uri });
    case "get_prompt":
      return await client.getPrompt({ name: s.name, arguments: s.arguments ?? {} });
    case "call": {
      const progress = [];
      const options = s.progress ? { onprogress: (p) => progress.push(p.progress) } : {};
      const result = await client.callTool(
        { name: s.name, arguments: s.arguments ?? {} },
        undefined,
        options,
      );
      return s.progress ? { ...result, progress } : result;
    }
    case "bench": {
      const call = () => client.callTool({ name: s.name, arguments: s.arguments ?? {} });
      for (let i = 0; i < (s.warmup ?? 200); i++) await call();
      const latencies = [];
      const started = process.hrtime.bigint();
      for (let i = 0; i < (s.calls ?? 2000); i++) {
        const t0 = process.hrtime.bigint();
        const r = await call();
        latencies.push(Number(process.hrtime.bigint() - t0) / 1000);
        if (r.isError) throw new Error(`bench call failed: ${JSON.stringify(r.content)}`);
      }
      const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
      // Throughput with `concurrency` calls in flight on the same session.
      const concurrency = s.concurrency ?? 8;
      const total = s.calls ?? 2000;
      let next = 0;
      const t1 = process.hrtime.bigint();
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (next < total) {
            next++;
            await call();
          }
        }),
      );
      const concurrentElapsed = Number(process.hrtime.bigint() - t1) / 1e9;
      latencies.sort((a, b) => a - b);
      const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
      return {
        calls: latencies.length,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        sequential_per_sec: latencies.length / elapsed,
        concurrency,
        concurrent_per_sec: total / concurrentElapsed,
      };
    }
    default:
      throw new Error(`unknown step ${s.op}`);
  }
}

const steps = [];
for (const s of script) {
  try {
    steps.push({ ok: await step(s) });
  } catch (err) {
    steps.push({ error: describe(err) });
  }
}
process.stdout.write(JSON.stringify({ steps }) + "\n");
try {
  await transport.terminateSession();
} catch {
  // The session may be gone already.
}
await client.close();
process.exit(0);
