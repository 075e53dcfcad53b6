// An MCP client on the official TypeScript SDK, driven by the gateway tests
// (and the benchmark). Usage:
//
//   node client.mjs URL KEY SCRIPT_JSON [ON_BEHALF_OF]
//
// SCRIPT_JSON is a list of steps:
//   {"op": "list_tools"} | {"op": "list_prompts"} | {"op": "list_resources"}
//   {"op": "call", "name": "echo", "arguments": {...}, "progress": true}
//     (with "progress", the progress seen is in the result, or in the error)
//   {"op": "read_resource", "uri": "..."} | {"op": "get_prompt", "name": "..."}
//   {"op": "wait_file", "path": "..."} (until the test creates that file; 30 s at most)
//   {"op": "ping"}
//   {"op": "ping_until_gone"} (pings until one is answered HTTP 404, the
//     session gone; 30 s at most; the result is the failures before)
//   {"op": "wait_stream_gone", "matching": "401"} (sends nothing: waits
//     until the session's event stream is refused with an error matching
//     the pattern, by default 404: the session gone; 30 s at most)
//   {"op": "roots", "uris": ["file:///..."]} (anywhere in the script: the
//     client declares the roots capability and answers roots/list with these)
//   {"op": "bench", "name": "echo", "arguments": {...}, "warmup": 200, "calls": 2000}
//   {"op": "bench_paths", "paths": [{"url": ..., "key": ...}, ...], "name": "echo",
//    "arguments": {...}, "warmup": 300, "calls": 3000, "concurrency": 8}
//     (one session per path; the sequential calls take turns between the
//     paths, `block` (100) calls at a time, so that every path is measured
//     under the same conditions)
// It prints one JSON object: {"steps": [...]} with each step's result or
// error, or {"connect_error": "..."} when the session cannot start.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ListRootsRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const [url, key, scriptJson, onBehalfOf] = process.argv.slice(2);
const script = JSON.parse(scriptJson);
const headers = {};
if (key) headers["Authorization"] = `Bearer ${key}`;
if (onBehalfOf) headers["X-Steward-On-Behalf-Of"] = onBehalfOf;

const roots = script.find?.((s) => s.op === "roots");

function connection(url, headers) {
  const client = new Client(
    { name: "steward-gateway-test", version: "1.0.0" },
    roots ? { capabilities: { roots: { listChanged: true } } } : undefined,
  );
  if (roots) {
    client.setRequestHandler(ListRootsRequestSchema, async () => ({
      roots: roots.uris.map((uri) => ({ uri, name: uri })),
    }));
  }
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers },
  });
  return { client, transport };
}

const { client, transport } = connection(url, headers);

function describe(err) {
  const described = { code: err?.code ?? null, message: String(err?.message ?? err) };
  return err?.progress ? { ...described, progress: err.progress } : described;
}

// What the transport reported going wrong, such as its event stream refused.
const transportErrors = [];
client.onerror = (err) => transportErrors.push(describe(err).message);

try {
  await client.connect(transport);
} catch (err) {
  process.stdout.write(JSON.stringify({ connect_error: describe(err) }) + "\n");
  process.exit(0);
}

// Microseconds one call takes; a tool error fails the benchmark.
async function timed(call) {
  const t0 = process.hrtime.bigint();
  const r = await call();
  const us = Number(process.hrtime.bigint() - t0) / 1000;
  if (r.isError) throw new Error(`bench call failed: ${JSON.stringify(r.content)}`);
  return us;
}

// Calls per second with `concurrency` calls in flight on one session.
async function throughput(call, s) {
  const concurrency = s.concurrency ?? 8;
  const total = s.calls ?? 2000;
  let next = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        next++;
        await call();
      }
    }),
  );
  return { concurrency, concurrent_per_sec: total / (Number(process.hrtime.bigint() - t0) / 1e9) };
}

function summary(latencies, elapsed, concurrent) {
  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
  return {
    calls: latencies.length,
    p50_us: pct(0.5),
    p99_us: pct(0.99),
    sequential_per_sec: latencies.length / elapsed,
    ...concurrent,
  };
}

async function step(s) {
  switch (s.op) {
    case "ping":
      await client.ping();
      return "pong";
    case "ping_until_gone": {
      const before = [];
      for (let i = 0; i < 600; i++) {
        try {
          await client.ping();
          before.push("pong");
        } catch (err) {
          if (err?.code === 404) return before;
          before.push(describe(err).message);
        }
        await new Promise((done) => setTimeout(done, 50));
      }
      throw new Error(`the session was never closed: ${JSON.stringify(before.slice(-3))}`);
    }
    case "roots":
      return { declared: s.uris.length };
    case "list_tools":
      return (await client.listTools()).tools.map((t) => t.name);
    case "list_prompts":
      return (await client.listPrompts()).prompts.map((p) => p.name);
    case "list_resources":
      return (await client.listResources()).resources.map((r) => r.uri);
    case "read_resource":
      return await client.readResource({ uri: s.uri });
    case "list_resource_templates":
      return (await client.listResourceTemplates()).resourceTemplates.map((t) => t.uriTemplate);
    case "subscribe":
      return await client.subscribeResource({ uri: s.uri });
    case "complete":
      return (await client.complete({ ref: s.ref, argument: s.argument })).completion.values;
    case "get_prompt":
      return await client.getPrompt({ name: s.name, arguments: s.arguments ?? {} });
    case "call": {
      const progress = [];
      const options = s.progress ? { onprogress: (p) => progress.push(p.progress) } : {};
      let result;
      try {
        result = await client.callTool(
          { name: s.name, arguments: s.arguments ?? {} },
          undefined,
          options,
        );
      } catch (err) {
        // An error answer keeps the progress that came before it.
        if (s.progress) err.progress = progress;
        throw err;
      }
      return s.progress ? { ...result, progress } : result;
    }
    case "wait_stream_gone": {
      const pattern = new RegExp(s.matching ?? "Not Found|404");
      const gone = () => transportErrors.find((m) => pattern.test(m));
      for (let i = 0; i < 1500 && !gone(); i++) {
        await new Promise((done) => setTimeout(done, 20));
      }
      if (!gone()) {
        throw new Error(`the event stream was never refused: ${JSON.stringify(transportErrors)}`);
      }
      return gone();
    }
    case "wait_file": {
      const { existsSync } = await import("node:fs");
      for (let i = 0; i < 1500 && !existsSync(s.path); i++) {
        await new Promise((done) => setTimeout(done, 20));
      }
      if (!existsSync(s.path)) throw new Error(`${s.path} never appeared`);
      return true;
    }
    case "bench": {
      const call = () => client.callTool({ name: s.name, arguments: s.arguments ?? {} });
      for (let i = 0; i < (s.warmup ?? 200); i++) await call();
      const latencies = [];
      const started = process.hrtime.bigint();
      for (let i = 0; i < (s.calls ?? 2000); i++) latencies.push(await timed(call));
      const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
      return summary(latencies, elapsed, await throughput(call, s));
    }
    case "bench_paths": {
      const sessions = [];
      for (const p of s.paths) {
        const h = p.key ? { Authorization: `Bearer ${p.key}` } : {};
        const c = connection(p.url, h);
        await c.client.connect(c.transport);
        sessions.push(c);
      }
      const calls = sessions.map(
        (c) => () => c.client.callTool({ name: s.name, arguments: s.arguments ?? {} }),
      );
      for (let i = 0; i < (s.warmup ?? 200); i++) for (const call of calls) await call();
      const latencies = calls.map(() => []);
      const elapsed = calls.map(() => 0);
      // Rounds of `block` calls on each path, starting with a different path
      // each round: a slow spell of the machine hits every path alike, and
      // what a call leaves running (a gateway's outcome record) weighs on
      // the next call of its own path, not another's.
      const block = s.block ?? 100;
      const total = s.calls ?? 2000;
      for (let round = 0; round * block < total; round++) {
        for (let j = 0; j < calls.length; j++) {
          const k = (round + j) % calls.length;
          for (let i = 0; i < block && latencies[k].length < total; i++) {
            const us = await timed(calls[k]);
            latencies[k].push(us);
            elapsed[k] += us / 1e6;
          }
        }
      }
      const out = [];
      for (let k = 0; k < calls.length; k++) {
        out.push(summary(latencies[k], elapsed[k], await throughput(calls[k], s)));
      }
      for (const c of sessions) {
        try {
          await c.transport.terminateSession();
        } catch {
          // The session may be gone already.
        }
        await c.client.close();
      }
      return out;
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
