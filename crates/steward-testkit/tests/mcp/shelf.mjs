// An MCP server over stdio (the official SDK's low-level server) whose
// answers carry resources in each place MCP lets them go, for the gateway's
// checks of what an answer passes on:
//
// - the tool `shelf` answers with `demo://shelf/public` and
//   `demo://shelf/secret`: embedded in its content, as resource contents in
//   its `structuredContent` (in a list, in an embedded resource deeper down,
//   one in an uncanonical spelling), in the text block that is that
//   structured content serialized (as the specification asks a tool to
//   add), and as links;
// - the resources `demo://shelf/public` and `demo://shelf/secret`;
// - the resource templates `demo://shelf/{item}` and
//   `file:///srv/shelf/{item}`, whose completions answer with the template
//   URI the server was sent, so that a test sees what the gateway forwarded.
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import {
  CallToolRequestSchema,
  CompleteRequestSchema,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  ReadResourceRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";

const items = {
  "demo://shelf/public": "public item",
  "demo://shelf/secret": "secret item",
};

const server = new Server(
  { name: "shelf", version: "1.0.0" },
  { capabilities: { tools: {}, resources: {}, completions: {} } },
);

server.setRequestHandler(ListToolsRequestSchema, async () => ({
  tools: [
    {
      name: "shelf",
      description: "What is on the shelf",
      inputSchema: { type: "object", properties: {} },
    },
  ],
}));

server.setRequestHandler(CallToolRequestSchema, async () => {
  const structured = {
    shelf: "demo://shelf",
    items: [
      { uri: "demo://shelf/secret", mimeType: "text/plain", text: "secret item" },
      { uri: "DEMO://shelf/./public", text: "public item" },
    ],
    deeper: {
      embedded: {
        type: "resource",
        resource: {
          uri: "demo://shelf/%73ecret",
          mimeType: "application/octet-stream",
          blob: Buffer.from("secret blob").toString("base64"),
        },
      },
    },
    link: { type: "resource_link", uri: "demo://shelf/secret", name: "secret" },
  };
  return {
    content: [
      { type: "resource", resource: { uri: "demo://shelf/secret", text: "secret item" } },
      { type: "resource", resource: { uri: "demo://shelf/public", text: "public item" } },
      { type: "text", text: JSON.stringify(structured) },
      { type: "resource_link", uri: "demo://shelf/secret", name: "secret" },
    ],
    structuredContent: structured,
  };
});

server.setRequestHandler(ListResourcesRequestSchema, async () => ({
  resources: Object.keys(items).map((uri) => ({ uri, name: uri, mimeType: "text/plain" })),
}));

server.setRequestHandler(ReadResourceRequestSchema, async (request) => {
  const { uri } = request.params;
  if (!(uri in items)) throw new Error(`no resource ${uri}`);
  return { contents: [{ uri, mimeType: "text/plain", text: items[uri] }] };
});

server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({
  resourceTemplates: [
    { uriTemplate: "demo://shelf/{item}", name: "item" },
    { uriTemplate: "file:///srv/shelf/{item}", name: "file" },
  ],
}));

server.setRequestHandler(CompleteRequestSchema, async (request) => {
  const { ref } = request.params;
  return { completion: { values: [ref.uri ?? ref.name], hasMore: false } };
});

await server.connect(new StdioServerTransport());
