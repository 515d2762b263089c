import { execFile } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import OpenAI from 'openai';
import type { ChatCompletion, ChatCompletionChunk } from 'openai/resources/chat/completions';
import type { Stream } from 'openai/streaming';
import { Agent } from 'undici';
import { undiciFetch } from '../../src/chat/undici-fetch';
import { startSimulator, type Simulator } from '../../src/simulator';
import { ensureServerBuild, repoRoot } from '../foundation/build';
import { until } from '../helpers/client';

const run = promisify(execFile);

const MODEL = 'sim-llama-3-8b';
const API_KEY = 'sk-lean-fetch';
const QUESTION = [{ role: 'user' as const, content: 'Tell me about the sea.' }];

/** One connection only: a request that kept its connection would leave the next one waiting for ever. */
function singleConnectionAgent(): Agent {
  return new Agent({ connections: 1, keepAliveTimeout: 30_000 });
}

function clientOn(baseURL: string, agent: Agent, timeout = 10_000): OpenAI {
  return new OpenAI({ baseURL, apiKey: API_KEY, maxRetries: 0, timeout, fetch: undiciFetch(agent) });
}

async function contentOf(stream: AsyncIterable<ChatCompletionChunk>): Promise<{ text: string; chunks: number }> {
  let text = '';
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    text += chunk.choices[0]?.delta.content ?? '';
  }
  return { text, chunks };
}

interface SeenRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingMessage['headers'];
  readonly body: Buffer;
}

interface LocalServer {
  readonly url: string;
  readonly requests: SeenRequest[];
  /** TCP connections the server accepted so far. */
  connections: number;
  close(): Promise<void>;
}

/** A plain node:http server at /v1 whose answers each test writes by hand. */
async function startLocalServer(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<LocalServer> {
  const requests: SeenRequest[] = [];
  const server: Server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (part: Buffer) => parts.push(part));
    req.on('end', () => {
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(parts) });
      handler(req, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const local: LocalServer = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    requests,
    connections: 0,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  server.on('connection', () => local.connections++);
  return local;
}

/** The URL of a port that was just free and that nothing listens on. */
async function refusingUrl(): Promise<string> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return `http://127.0.0.1:${port}/v1`;
}

/**
 * Node's script for failedOutsideJest: one models.list() with the lean fetch or the global one
 * (on the same kind of agent), printing the SDK's error class and its cause's code.
 */
const FAILING_CALL = `
const OpenAI = require('openai').default;
const { Agent } = require('undici');
const { undiciFetch } = require('./dist/src/chat/undici-fetch.js');
const [baseURL, timeout, which] = process.argv.slice(1);
const agent = new Agent();
const transport = which === 'lean' ? { fetch: undiciFetch(agent) } : { fetchOptions: { dispatcher: agent } };
new OpenAI({ baseURL, apiKey: 'x', maxRetries: 0, timeout: Number(timeout), ...transport })
  .models.list()
  .then(() => ({ error: null }), (error) => ({ error: error.constructor.name, causeCode: error.cause?.code ?? null }))
  .then((outcome) => { process.stdout.write(JSON.stringify(outcome)); return agent.close(); });
`;

/**
 * How a call that gets no answer fails, seen from a plain Node process. Inside jest's sandbox
 * the SDK cannot read errors made in Node's own realm (the AbortError of a timeout, a socket's
 * error): it rewraps them without their name or code, so there a timeout looks like any
 * connection error, with the global fetch as with the lean one.
 */
async function failedOutsideJest(baseURL: string, timeoutMs: number, which: 'lean' | 'global'): Promise<{ error: string | null; causeCode?: string | null }> {
  await ensureServerBuild();
  const { stdout } = await run(process.execPath, ['-e', FAILING_CALL, baseURL, String(timeoutMs), which], { cwd: repoRoot });
  return JSON.parse(stdout) as { error: string | null; causeCode?: string | null };
}

describe('the lean fetch, against the vLLM simulator', () => {
  let sim: Simulator;
  let agent: Agent;
  let client: OpenAI;

  beforeAll(async () => {
    sim = await startSimulator({ models: [MODEL], apiKey: API_KEY, maxModelLen: 2048 });
  });

  beforeEach(() => {
    sim.resetStats();
    agent = singleConnectionAgent();
    client = clientOn(sim.url, agent);
  });

  afterEach(() => agent.close());
  afterAll(() => sim.stop());

  it('gets a whole answer, with its usage, and streams the same answer chunk by chunk', async () => {
    // As Upstream sends them: vLLM's own fields (ignore_eos) beside the SDK's.
    const body = { model: MODEL, messages: QUESTION, seed: 7, max_tokens: 200, ignore_eos: true };
    const whole = await client.post<ChatCompletion>('/chat/completions', { body });
    expect(whole.choices[0].finish_reason).toBe('length');
    expect(whole.usage?.completion_tokens).toBe(200);

    const stream = await client.post<Stream<ChatCompletionChunk>>('/chat/completions', { body: { ...body, stream: true }, stream: true });
    const streamed = await contentOf(stream);
    expect(streamed.chunks).toBeGreaterThanOrEqual(200);
    expect(streamed.text).toBe(whole.choices[0].message.content);
    expect(sim.stats).toMatchObject({ chatRequests: 2, completed: 2, aborted: 0 });
  });

  it("turns vLLM's error bodies into the SDK's error classes, with vLLM's message and param", async () => {
    const tooLong = await client.chat.completions.create({ model: MODEL, messages: QUESTION, max_tokens: 5000 }).catch((error: unknown) => error);
    expect(tooLong).toBeInstanceOf(OpenAI.BadRequestError);
    expect(tooLong).toMatchObject({ status: 400, param: 'max_tokens', message: expect.stringMatching(/maximum context length is 2048 tokens/) });

    const unknown = await client.chat.completions.create({ model: 'no-such-model', messages: QUESTION }).catch((error: unknown) => error);
    expect(unknown).toBeInstanceOf(OpenAI.NotFoundError);
    expect(unknown).toMatchObject({ message: expect.stringMatching(/`no-such-model` does not exist/) });

    const failed = await client.chat.completions.create({ model: `${MODEL}@fail-before`, messages: QUESTION }).catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(OpenAI.InternalServerError);

    const unauthorized = await clientOn(sim.url, agent).withOptions({ apiKey: 'sk-wrong' }).models.list().catch((error: unknown) => error);
    expect(unauthorized).toBeInstanceOf(OpenAI.AuthenticationError);

    // Every error body was read to its end: the one connection still serves.
    expect((await client.models.list()).data.map((model) => model.id)).toEqual([MODEL]);
  });

  it('gives up on a call whose answer never comes at its timeout, and frees its connection', async () => {
    const impatient = clientOn(sim.url, agent, 300);
    const error = await impatient.chat.completions.create({ model: `${MODEL}@hang`, messages: QUESTION }).catch((caught: unknown) => caught);
    // Its exact class (APIConnectionTimeoutError) is seen outside jest, below.
    expect(error).toBeInstanceOf(OpenAI.APIConnectionError);
    await until(() => sim.stats.aborted === 1, 5_000, 'the simulator to see the request abandoned');
    expect((await client.models.list()).data).toHaveLength(1);
  });

  it('rejects a call its caller aborts before the answer with APIUserAbortError', async () => {
    const controller = new AbortController();
    const call = client.chat.completions.create({ model: `${MODEL}@hang`, messages: QUESTION }, { signal: controller.signal });
    await until(() => sim.stats.chatRequests === 1, 5_000, 'the simulator to receive the request');
    controller.abort();
    await expect(call).rejects.toBeInstanceOf(OpenAI.APIUserAbortError);
    await until(() => sim.stats.aborted === 1, 5_000, 'the simulator to see the request abandoned');
  });

  it('ends a stream quietly when its signal aborts mid-stream, and frees its connection', async () => {
    const controller = new AbortController();
    const stream = await client.chat.completions.create({ model: `${MODEL}@hang:3`, messages: QUESTION, stream: true }, { signal: controller.signal });
    let text = '';
    let tokens = 0;
    for await (const chunk of stream) {
      const piece = chunk.choices[0]?.delta.content ?? '';
      text += piece;
      if (piece !== '') tokens++;
      // The third token is the last the hanging server sends.
      if (tokens === 3) controller.abort();
    }
    expect(tokens).toBe(3);
    expect(text).not.toBe('');
    await until(() => sim.stats.aborted === 1, 5_000, 'the simulator to see the stream abandoned');

    const next = await clientOn(sim.url, agent, 5_000).chat.completions.create({ model: MODEL, messages: QUESTION, max_tokens: 4 });
    expect(next.usage?.completion_tokens).toBe(4);
  });

  it('stops the upstream when the reader leaves a stream, and frees its connection', async () => {
    const stream = await client.chat.completions.create({ model: `${MODEL}@hang:2`, messages: QUESTION, stream: true });
    for await (const chunk of stream) {
      if ((chunk.choices[0]?.delta.content ?? '') !== '') break;
    }
    await until(() => sim.stats.aborted === 1, 5_000, 'the simulator to see the stream abandoned');
    const next = await clientOn(sim.url, agent, 5_000).chat.completions.create({ model: MODEL, messages: QUESTION, max_tokens: 4, stream: true });
    expect((await contentOf(next)).text).not.toBe('');
  });
});

describe('the lean fetch, against a plain HTTP server', () => {
  let agent: Agent;
  const servers: LocalServer[] = [];

  async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: LocalServer; client: OpenAI }> {
    const server = await startLocalServer(handler);
    servers.push(server);
    return { server, client: clientOn(server.url, agent) };
  }

  beforeEach(() => {
    agent = singleConnectionAgent();
  });

  afterEach(async () => {
    await agent.close();
    await Promise.all(servers.splice(0).map((server) => server.close()));
  });

  it("sends the SDK's method, headers and body, string or bytes, and keeps the connection alive", async () => {
    const { server, client } = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    });
    expect(await client.post('/things', { body: { name: 'é' } })).toEqual({ ok: true });
    const bytes = Uint8Array.from([0, 1, 2, 255]);
    await client.put('/bytes', { body: bytes, headers: { 'content-type': 'application/octet-stream' } });
    await client.delete('/things/1');

    expect(server.requests.map((seen) => `${seen.method} ${seen.url}`)).toEqual(['POST /v1/things', 'PUT /v1/bytes', 'DELETE /v1/things/1']);
    const [posted, put] = server.requests;
    expect(posted.headers).toMatchObject({ authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' });
    expect(JSON.parse(posted.body.toString('utf8'))).toEqual({ name: 'é' });
    expect([...put.body]).toEqual([0, 1, 2, 255]);
    // Only what the SDK set: none of the headers the global fetch adds of its own.
    for (const seen of server.requests) expect(seen.headers).not.toHaveProperty('sec-fetch-mode');
    expect(server.connections).toBe(1);
  });

  it('sends a body only fetch can encode (a form) through the global fetch on the same agent', async () => {
    const { server, client } = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
    await client.post('/form', { body: new URLSearchParams({ purpose: 'batch', note: 'a b' }) });
    expect(server.requests[0].headers['content-type']).toMatch(/^application\/x-www-form-urlencoded/);
    expect(server.requests[0].body.toString('utf8')).toBe('purpose=batch&note=a+b');
    expect(server.requests[0].headers).toHaveProperty('sec-fetch-mode', 'cors');
  });

  it('decodes an SSE stream cut at any byte, a character split across writes included', async () => {
    const events = ['é', '文字', 'ok'].map((content) => `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content } }] })}\n\n`).join('') + 'data: [DONE]\n\n';
    const bytes = Buffer.from(events, 'utf8');
    const { client } = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      let at = 0;
      const writeSome = (): void => {
        if (at >= bytes.length) {
          res.end();
          return;
        }
        res.write(bytes.subarray(at, at + 3));
        at += 3;
        setImmediate(writeSome);
      };
      writeSome();
    });
    const stream = await client.chat.completions.create({ model: MODEL, messages: QUESTION, stream: true });
    expect(await contentOf(stream)).toEqual({ text: 'é文字ok', chunks: 3 });
  });

  it('fails a stream whose connection is cut, instead of ending it as if it were finished', async () => {
    let streaming: ServerResponse | null = null;
    const { client } = await serve((_req, res) => {
      streaming = res;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: 'half' } }] })}\n\n`);
    });
    const stream = await client.chat.completions.create({ model: MODEL, messages: QUESTION, stream: true });
    const seen: string[] = [];
    const reading = (async () => {
      for await (const chunk of stream) {
        seen.push(chunk.choices[0]?.delta.content ?? '');
        (streaming as ServerResponse | null)?.socket?.destroy();
      }
    })();
    await expect(reading).rejects.toThrow();
    expect(seen).toEqual(['half']);
  });

  it('shows every value of a repeated response header, as fetch joins them', async () => {
    const { client } = await serve((_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.setHeader('x-trace', ['one', 'two']);
      res.setHeader('set-cookie', ['a=1', 'b=2']);
      res.setHeader('x-request-id', 'req-42');
      res.end('{"id":"x"}');
    });
    const { data, response, request_id } = await client.get('/thing').withResponse();
    expect(data).toEqual({ id: 'x' });
    expect(request_id).toBe('req-42');
    expect(response.status).toBe(200);
    expect(response.ok).toBe(true);
    expect(response.headers.get('x-trace')).toBe('one, two');
    expect(response.headers.getSetCookie()).toEqual(['a=1', 'b=2']);
  });

  it('returns a body that is not JSON as its text or its bytes, and an error page that is not JSON as the error message', async () => {
    const { server, client } = await serve((req, res) => {
      if (req.url === '/v1/plain') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('just text');
      } else if (req.url === '/v1/files/file-1/content') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        res.end(Buffer.from([7, 8, 9]));
      } else {
        res.writeHead(502, { 'content-type': 'text/html' });
        res.end('<html>Bad Gateway</html>');
      }
    });
    expect(await client.get('/plain')).toBe('just text');
    const file = await client.files.content('file-1');
    expect(file.bodyUsed).toBe(false);
    expect([...new Uint8Array(await file.arrayBuffer())]).toEqual([7, 8, 9]);
    expect(file.bodyUsed).toBe(true);
    const error = await client.get('/proxy').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect(error).toMatchObject({ status: 502, message: expect.stringContaining('<html>Bad Gateway</html>') });
    expect(server.connections).toBe(1);
  });

  it('answers a 204 with no body, as fetch does, and reuses its connection', async () => {
    const { server, client } = await serve((req, res) => {
      if (req.method === 'DELETE') {
        res.writeHead(204);
        res.end();
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"after":true}');
      }
    });
    const { data, response } = await client.delete('/files/1').withResponse();
    expect(data).toBeNull();
    expect(response.status).toBe(204);
    expect(response.body).toBeNull();
    expect(await client.get('/files')).toEqual({ after: true });
    expect(server.connections).toBe(1);
  });

  it('fails a call to a port nobody listens on with APIConnectionError, as the global fetch does', async () => {
    const url = await refusingUrl();
    expect(await failedOutsideJest(url, 5_000, 'lean')).toEqual({ error: 'APIConnectionError', causeCode: 'ECONNREFUSED' });
    expect(await failedOutsideJest(url, 5_000, 'global')).toMatchObject({ error: 'APIConnectionError' });
  });

  it('fails a call to a server that never sends its headers with APIConnectionTimeoutError, as the global fetch does', async () => {
    const { server } = await serve(() => undefined);
    expect(await failedOutsideJest(server.url, 300, 'lean')).toMatchObject({ error: 'APIConnectionTimeoutError' });
    expect(await failedOutsideJest(server.url, 300, 'global')).toMatchObject({ error: 'APIConnectionTimeoutError' });
  });
});
