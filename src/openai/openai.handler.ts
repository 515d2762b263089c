import type { IncomingMessage, ServerResponse } from 'node:http';
import type { StreamEvent } from '../chat/chat.service';
import type { AnswerChunk } from '../chat/stream-meter';
import { ClientGoneError } from '../errors';
import type { Logger } from '../logger';
import type { Route, RequestScope } from '../server/router';
import { BodyTooLargeError, readJsonBody, sendJson } from '../server/http';
import type { Services } from '../services';
import { OpenAIHttpError, invalidRequest, methodNotAllowed, toOpenAIError } from './openai-errors';
import { parseChatRequest, parseCompletionRequest, parseEmbeddingRequest, type StreamWish } from './openai-request';

/**
 * `/v1/models`, `/v1/chat/completions`, `/v1/completions` and `/v1/embeddings` for existing
 * OpenAI clients: authenticated like GraphQL, metered by the same ChatService (same quota,
 * records and usage events).
 */
export function openAIRoutes(services: Services): Route[] {
  const endpoint = new OpenAICompatibleEndpoint(services, services.log);
  return [
    { path: '/v1/models', handle: (req, res, scope) => endpoint.answer(res, scope, () => endpoint.models(req, res)) },
    { path: '/v1/chat/completions', handle: (req, res, scope) => endpoint.answer(res, scope, () => endpoint.chatCompletions(req, res)) },
    { path: '/v1/completions', handle: (req, res, scope) => endpoint.answer(res, scope, () => endpoint.completions(req, res)) },
    { path: '/v1/embeddings', handle: (req, res, scope) => endpoint.answer(res, scope, () => endpoint.embeddings(req, res)) },
  ];
}

/** Aborted when the client hangs up before its answer was sent: the upstream call stops at once. */
function clientGoneSignal(res: ServerResponse): { signal: AbortSignal; done: () => void } {
  const gone = new AbortController();
  const onClose = (): void => {
    if (!res.writableEnded) gone.abort();
  };
  res.on('close', onClose);
  // The client may have gone while the request was being reserved: 'close' has fired already.
  if (res.destroyed) onClose();
  return { signal: gone.signal, done: () => res.off('close', onClose) };
}

class OpenAICompatibleEndpoint {
  constructor(
    private readonly services: Services,
    private readonly log: Logger,
  ) {}

  /** Runs one route's work; whatever it throws is answered in OpenAI's shape. */
  async answer(res: ServerResponse, scope: RequestScope, work: () => Promise<void>): Promise<void> {
    try {
      await work();
    } catch (error) {
      // Nobody is there to be answered.
      if (error instanceof ClientGoneError) return;
      const mapped = toOpenAIError(error, this.services.clock.now());
      if (mapped.status === 500) this.log.error({ err: error }, 'unexpected error in an OpenAI-compatible request');
      else if (mapped.status > 500) this.log.warn({ requestId: scope.requestId, status: mapped.status }, 'OpenAI-compatible request failed');
      if (res.writableEnded) {
        // The answer was already complete (a failure while cleaning up): nothing more to say.
      } else if (res.headersSent) {
        // The stream had started: report in-band, as vLLM does.
        res.end(`data: ${JSON.stringify(mapped.body)}\n\ndata: [DONE]\n\n`);
      } else {
        sendJson(res, mapped.status, mapped.body, mapped.headers);
      }
    }
  }

  async models(req: IncomingMessage, res: ServerResponse): Promise<void> {
    await this.services.auth.authenticate(req.headers.authorization ?? null);
    if (req.method !== 'GET') throw methodNotAllowed('GET');
    const models = await this.services.chatAdmission.models();
    sendJson(res, 200, {
      object: 'list',
      data: models.map((model) => ({ id: model.id, object: 'model', created: 0, owned_by: model.ownedBy, max_model_len: model.maxModelLen })),
    });
  }

  async chatCompletions(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const viewer = await this.services.auth.authenticate(req.headers.authorization ?? null);
    if (req.method !== 'POST') throw methodNotAllowed('POST');
    const parsed = parseChatRequest(await this.body(req));
    const metered = await this.services.chatAdmission.reserve(viewer, { ...parsed.request, sessionId: sessionIdOf(req) }, 'openai');
    const requestId = metered.reservation.requestId;
    const gone = clientGoneSignal(res);
    try {
      if (parsed.stream) return await this.stream(res, requestId, this.services.chat.stream(metered, gone.signal), gone.signal, parsed);
      const { response } = await this.services.chat.complete(metered, gone.signal);
      sendJson(res, 200, response, { 'x-usage-request-id': requestId });
    } finally {
      gone.done();
    }
  }

  async completions(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const viewer = await this.services.auth.authenticate(req.headers.authorization ?? null);
    if (req.method !== 'POST') throw methodNotAllowed('POST');
    const parsed = parseCompletionRequest(await this.body(req));
    const metered = await this.services.chatAdmission.reservePrompts(viewer, { ...parsed.request, sessionId: sessionIdOf(req) }, 'openai');
    const requestId = metered.reservation.requestId;
    const gone = clientGoneSignal(res);
    try {
      if (parsed.stream) return await this.stream(res, requestId, this.services.chat.streamCompletion(metered, gone.signal), gone.signal, parsed);
      const { response } = await this.services.chat.completePrompts(metered, gone.signal);
      sendJson(res, 200, response, { 'x-usage-request-id': requestId });
    } finally {
      gone.done();
    }
  }

  async embeddings(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const viewer = await this.services.auth.authenticate(req.headers.authorization ?? null);
    if (req.method !== 'POST') throw methodNotAllowed('POST');
    const request = parseEmbeddingRequest(await this.body(req));
    const metered = await this.services.chatAdmission.reservePrompts(viewer, { ...request, sessionId: sessionIdOf(req) }, 'openai');
    const gone = clientGoneSignal(res);
    try {
      const { response } = await this.services.chat.completePrompts(metered, gone.signal);
      sendJson(res, 200, response, { 'x-usage-request-id': metered.reservation.requestId });
    } finally {
      gone.done();
    }
  }

  private async body(req: IncomingMessage): Promise<unknown> {
    try {
      return await readJsonBody(req, this.services.config.http.maxBodyBytes);
    } catch (error) {
      if (error instanceof BodyTooLargeError) {
        throw new OpenAIHttpError(413, { error: { message: 'The request body is too large.', type: 'invalid_request_error', param: null, code: null } });
      }
      throw invalidRequest('The body is not valid JSON.');
    }
  }

  private async stream<TChunk extends AnswerChunk>(
    res: ServerResponse,
    requestId: string,
    events: AsyncIterableIterator<StreamEvent<TChunk>>,
    clientGone: AbortSignal,
    wish: StreamWish,
  ): Promise<void> {
    const started = (): void => {
      if (res.headersSent) return;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
        'x-usage-request-id': requestId,
      });
    };
    for await (const event of events) {
      if (event.kind !== 'chunk') continue;
      started();
      const chunk = forClient(event.chunk, wish);
      if (chunk !== null) res.write(`data: ${JSON.stringify(chunk)}\n\n`);
    }
    if (!clientGone.aborted) {
      started();
      res.end('data: [DONE]\n\n');
    }
  }
}

/** Usage is always asked of vLLM; the client sees only what it asked for. */
function forClient<TChunk extends AnswerChunk>(chunk: TChunk, wish: StreamWish): TChunk | null {
  if (chunk.choices.length === 0) return wish.includeUsage ? chunk : null;
  if (wish.continuousUsage) return chunk;
  if (chunk.usage === undefined) return chunk;
  const { usage: _usage, ...rest } = chunk;
  return rest as TChunk;
}

/** `x-session-id`: the conversation's routing key, as vLLM's production-stack router reads it. */
function sessionIdOf(req: IncomingMessage): string | null {
  const header = req.headers['x-session-id'];
  return typeof header === 'string' ? header : null;
}
