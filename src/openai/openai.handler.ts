import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ChatCompletionChunk } from 'openai/resources/chat/completions';
import type { MeteredChat } from '../chat/chat-admission';
import type { Logger } from '../logger';
import type { Route, RequestScope } from '../server/router';
import { BodyTooLargeError, readJsonBody, sendJson } from '../server/http';
import type { Services } from '../services';
import { OpenAIHttpError, invalidRequest, methodNotAllowed, toOpenAIError } from './openai-errors';
import { parseChatRequest, type ParsedChatRequest } from './openai-request';

/**
 * `/v1/models` and `/v1/chat/completions` for existing OpenAI clients: authenticated like
 * GraphQL, metered by the same ChatService (same quota, records and usage events).
 */
export function openAIRoutes(services: Services): Route[] {
  const endpoint = new OpenAICompatibleEndpoint(services, services.log);
  return [
    { path: '/v1/models', handle: (req, res, scope) => endpoint.answer(res, scope, () => endpoint.models(req, res)) },
    { path: '/v1/chat/completions', handle: (req, res, scope) => endpoint.answer(res, scope, () => endpoint.chatCompletions(req, res)) },
  ];
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
    if (parsed.stream) return this.stream(res, metered, parsed);
    const { response } = await this.services.chat.complete(metered);
    sendJson(res, 200, response, { 'x-usage-request-id': metered.reservation.requestId });
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

  private async stream(res: ServerResponse, metered: MeteredChat, parsed: ParsedChatRequest): Promise<void> {
    const clientGone = new AbortController();
    // The upstream is aborted at once and what was generated so far is charged.
    const onClose = (): void => {
      if (!res.writableEnded) clientGone.abort();
    };
    res.on('close', onClose);
    // The client may have gone while the request was being reserved: 'close' has fired already.
    if (res.destroyed) onClose();
    const started = (): void => {
      if (res.headersSent) return;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
        'x-usage-request-id': metered.reservation.requestId,
      });
    };
    try {
      for await (const event of this.services.chat.stream(metered, clientGone.signal)) {
        if (event.kind !== 'chunk') continue;
        started();
        const chunk = forClient(event.chunk, parsed);
        if (chunk !== null) res.write(`data: ${JSON.stringify(chunk)}\n\n`);
      }
      if (!clientGone.signal.aborted) {
        started();
        res.end('data: [DONE]\n\n');
      }
    } finally {
      res.off('close', onClose);
    }
  }
}

/** Usage is always asked of vLLM; the client sees only what it asked for. */
function forClient(chunk: ChatCompletionChunk, parsed: ParsedChatRequest): ChatCompletionChunk | null {
  if (chunk.choices.length === 0) return parsed.includeUsage ? chunk : null;
  if (parsed.continuousUsage) return chunk;
  if (chunk.usage === undefined) return chunk;
  const { usage: _usage, ...rest } = chunk;
  return rest as ChatCompletionChunk;
}

/** `x-session-id`: the conversation's routing key, as vLLM's production-stack router reads it. */
function sessionIdOf(req: IncomingMessage): string | null {
  const header = req.headers['x-session-id'];
  return typeof header === 'string' ? header : null;
}
