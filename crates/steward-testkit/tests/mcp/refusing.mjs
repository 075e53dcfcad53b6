// An MCP server over Streamable HTTP (the official SDK's transport, one
// session per client) with an `echo` tool, which refuses any POST whose
// body holds "REFUSE" with `429 Too Many Requests` and a plain-text body,
// as a rate limiter in front of a live server would. Listens on $PORT and
// says "listening on port N" on stderr once it does.
import { randomUUID } from "node:crypto";
import express from "express";
import { z } from "zod";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";

const sessions = new Map();
const app = express();
app.use(express.json());
app.all("/mcp", async (req, res) => {
  if (JSON.stringify(req.body ?? null).includes("REFUSE")) {
    res.status(429).type("text/plain").send("slow down");
    return;
  }
  const id = req.headers["mcp-session-id"];
  let transport = id ? sessions.get(id) : undefined;
  if (!transport) {
    if (id || req.method !== "POST" || !isInitializeRequest(req.body)) {
      res.status(404).json({ jsonrpc: "2.0", error: { code: -32001, message: "Session not found" }, id: null });
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
    await server.connect(transport);
  }
  await transport.handleRequest(req, res, req.body);
});
const port = Number(process.env.PORT);
app.listen(port, "127.0.0.1", () => console.error(`listening on port ${port}`));
