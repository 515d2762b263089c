// Preloaded into Portkey's process (`node -r dist/bench/portkey-shim.js …/start-server.js`).
//
// @portkey-ai/gateway 1.15.2 depends on `@hono/node-server@^1.3.3`, which now resolves to a
// version (> 1.14.2) whose lightweight Response reuses the upstream fetch response's headers,
// and those are immutable by the fetch spec. Portkey then appends its x-portkey-* headers and
// every OpenAI-provider *streaming* chat fails with `TypeError: immutable` (Portkey-AI/gateway
// issues #1389 and #1550; the fix proposed upstream copies the headers). Non-streaming
// requests take another path and work unmodified.
//
// This shim does what that fix does, for event streams only: it hands Portkey a copy of the
// upstream response with mutable headers. It costs one Headers copy per streamed request and
// leaves every other request untouched. The alternative is pinning @hono/node-server to
// 1.14.2 with an npm `overrides` entry.
export {};

const nativeFetch = globalThis.fetch;
const NativeResponse = globalThis.Response;
const NativeHeaders = globalThis.Headers;

globalThis.fetch = async function fetchWithMutableStreamHeaders(...args: Parameters<typeof fetch>): Promise<Response> {
  const response = await nativeFetch(...args);
  const type = response.headers.get('content-type') ?? '';
  if (!type.startsWith('text/event-stream')) return response;
  return new NativeResponse(response.body, {
    status: response.status,
    statusText: response.statusText,
    headers: new NativeHeaders(response.headers),
  });
};
