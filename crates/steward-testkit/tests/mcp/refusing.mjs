// An MCP server over Streamable HTTP (the official SDK's transport, one
// session per client) with an `echo` tool, which refuses any POST whose
// body holds "REFUSE" with `429 Too Many Requests` and a plain-text body,
// as a rate limiter in front of a live server would. It also has a
// resource, `box://shelf`, whose read answers with the shelf's items too,
// each a resource of its own (one in an uncanonical spelling), as a
// directory's resource may. A session it does not know (it restarted) is
// answered as the reference `server-everything` answers it: `400` with a
// JSON-RPC error. With `--no-stream` it offers no event stream (`405` to a
// GET), so that only a request can find out it restarted. Listens on $PORT
// and says "listening on port N" on stderr once it does.
//
// Beside MCP: `GET /sessions` answers with the ids of the sessions open and
// of those ended with a `DELETE`; `POST /outage?ms=N` takes the server out
// of reach for N ms once answered (it stops listening and drops its
// connections, then listens on the same port again, its sessions kept), as
// a network that drops for a while.
import { randomUUID } from "node:crypto";
import express from "express";
import { z } from "zod";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";

const noStream = process.argv.includes("--no-stream");
const sessions = new Map();
const deleted = [];
const app = express();
app.use(express.json());
app.get("/sessions", (req, res) => {
  res.json({ open: [...sessions.keys()], deleted });
});
app.post("/outage", (req, res) => {
  const ms = Number(req.query.ms ?? 5000);
  res.on("finish", () => {
    listener.close();
    listener.closeAllConnections();
    setTimeout(() => {
      listener = app.listen(port, "127.0.0.1");
    }, ms);
  });
  res.json({ out_of_reach_ms: ms });
});
app.all("/mcp", async (req, res) => {
  if (JSON.stringify(req.body ?? null).includes("REFUSE")) {
    res.status(429).type("text/plain").send("slow down");
    return;
  }
  if (noStream && req.method === "GET") {
    res.status(405).set("Allow", "POST, DELETE").send();
    return;
  }
  const id = req.headers["mcp-session-id"];
  let transport = id ? sessions.get(id) : undefined;
  if (!transport) {
    if (id || req.method !== "POST" || !isInitializeRequest(req.body)) {
      res.status(400).json({
        jsonrpc: "2.0",
        error: { code: -32000, message: "Bad Request: No valid session ID provided" },
        id: null,
      });
      return;
    }
    transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (sid) => sessions.set(sid, transport),
    });
    const server = new McpServer({ name: "refusing", version: "1.0.0" });
    server.registerTool(
      "echo",
      { description: "Echoes the message", inputSchema: { message: z.string() } },
      async ({ message }) => ({ content: [{ type: "text", text: `Echo: ${message}` }] }),
    );
    server.registerResource("shelf", "box://shelf", { mimeType: "text/plain" }, async () => ({
      contents: [
        { uri: "box://shelf", text: "two items" },
        { uri: "BOX://shelf/./public", text: "public item" },
        { uri: "box://shelf/secret", text: "secret item" },
      ],
    }));
    await server.connect(transport);
  }
  if (req.method === "DELETE") {
    sessions.delete(id);
    deleted.push(id);
  }
  await transport.handleRequest(req, res, req.body);
});
const port = Number(process.env.PORT);
let listener = app.listen(port, "127.0.0.1", () => console.error(`listening on port ${port}`));
