import type { ClientOptions } from 'openai';
import { request, type Dispatcher } from 'undici';

/** What the openai SDK accepts as its `fetch`. */
type SdkFetch = NonNullable<ClientOptions['fetch']>;

type UndiciBody = Dispatcher.ResponseData['body'];

/** Statuses whose response has no body, as fetch has it. */
const NULL_BODY_STATUSES = new Set([204, 205, 304]);

/**
 * The part of a fetch Response that the openai SDK reads: status, headers, url, the body as
 * text or JSON (or bytes, for a caller of a binary endpoint), and for a stream the body itself, which the SDK iterates with
 * Symbol.asyncIterator when it has one (undici's body yields Buffers) instead of through a
 * web stream reader.
 */
class UndiciResponse implements Pick<Response, 'ok' | 'status' | 'statusText' | 'headers' | 'url' | 'bodyUsed' | 'text' | 'json' | 'arrayBuffer'> {
  readonly ok: boolean;
  readonly status: number;
  readonly statusText: string;
  readonly headers: Headers;
  readonly url: string;
  /** null for a null-body status or a HEAD, as with fetch. */
  readonly body: UndiciBody | null;

  constructor(url: string, data: Dispatcher.ResponseData, hasBody: boolean) {
    this.url = url;
    this.status = data.statusCode;
    this.ok = data.statusCode >= 200 && data.statusCode < 300;
    this.statusText = data.statusText;
    this.headers = new Headers();
    for (const [name, value] of Object.entries(data.headers)) {
      if (Array.isArray(value)) for (const each of value) this.headers.append(name, each);
      else if (value !== undefined) this.headers.append(name, value);
    }
    this.body = hasBody ? data.body : null;
  }

  get bodyUsed(): boolean {
    return this.body?.bodyUsed ?? false;
  }

  text(): Promise<string> {
    return this.body === null ? Promise.resolve('') : this.body.text();
  }

  async json(): Promise<unknown> {
    return JSON.parse(await this.text()) as unknown;
  }

  arrayBuffer(): Promise<ArrayBuffer> {
    return this.body === null ? Promise.resolve(new ArrayBuffer(0)) : this.body.arrayBuffer();
  }
}

/** The request headers as undici's flat [name, value, …] list, from any form fetch accepts. */
function flatHeaders(headers: RequestInit['headers']): string[] {
  const flat: string[] = [];
  if (headers === undefined) return flat;
  if (headers instanceof Headers || Array.isArray(headers)) {
    for (const [name, value] of headers) flat.push(name, value);
    return flat;
  }
  for (const [name, value] of Object.entries(headers)) {
    if (typeof value === 'string') flat.push(name, value);
    else for (const each of value) flat.push(name, each);
  }
  return flat;
}

/** A body undici sends as it is; null for one only fetch knows how to encode (a form, a blob, a web stream). */
function plainBody(body: RequestInit['body']): string | Uint8Array | undefined | null {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string') return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  // A view of the same bytes, whatever the view's kind (Buffer, DataView, a typed array).
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  return null;
}

/**
 * A fetch for the openai SDK on undici's request(): the SDK's calls skip fetch's WHATWG
 * Request/Response and web streams, which cost more CPU per call than the rest of the client.
 * It does what the SDK asks of fetch: method, headers, a string or byte body, an AbortSignal
 * that also stops a body being read (the body then fails with the signal's AbortError, which
 * the SDK's Stream takes as a quiet end). A network failure rejects with undici's error, which
 * the SDK wraps as it wraps fetch's (APIConnectionError, or APIConnectionTimeoutError for an
 * abort or a timeout). It follows no redirects and asks for no compression; a body of another
 * kind (an upload's form or stream) goes through the global fetch on the same dispatcher.
 */
export function undiciFetch(dispatcher: Dispatcher): SdkFetch {
  return async (input, init) => {
    const body = plainBody(init?.body);
    if (body === null || !(typeof input === 'string' || input instanceof URL)) {
      // The global fetch types its dispatcher as Node's bundled undici's; it takes undici 7's Agent alike.
      return fetch(input, { ...init, dispatcher } as unknown as RequestInit);
    }
    const url = typeof input === 'string' ? input : input.href;
    const method = init?.method ?? 'GET';
    const data = await request(url, {
      dispatcher,
      method: method as Dispatcher.HttpMethod,
      headers: flatHeaders(init?.headers),
      body,
      signal: init?.signal ?? undefined,
    });
    const hasBody = method !== 'HEAD' && !NULL_BODY_STATUSES.has(data.statusCode);
    // The SDK reads only what UndiciResponse has (see its comment), not the whole of fetch's Response.
    return new UndiciResponse(url, data, hasBody) as unknown as Response;
  };
}
