// Closed-loop load: `concurrency` workers, each sending its next request as soon as the
// previous one is answered, until a deadline. One keep-alive undici Pool per target.
import { Pool } from 'undici';
import type { GqlWsConnection } from './gql-ws';

export interface RequestOutcome {
  ok: boolean;
  error?: string;
}

export interface LoopResult {
  /** Latency of each successful request, ms. */
  latencies: number[];
  errors: number;
  firstError: string | null;
  /** From the first request sent to the last answer received, ms. */
  elapsedMs: number;
}

export async function closedLoop(concurrency: number, durationMs: number, once: (worker: number) => Promise<RequestOutcome>): Promise<LoopResult> {
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | null = null;
  const start = performance.now();
  const deadline = start + durationMs;
  const worker = async (index: number): Promise<void> => {
    while (performance.now() < deadline) {
      const t0 = performance.now();
      let outcome: RequestOutcome;
      try {
        outcome = await once(index);
      } catch (error) {
        outcome = { ok: false, error: error instanceof Error ? error.message : String(error) };
      }
      const t1 = performance.now();
      if (outcome.ok) latencies.push(t1 - t0);
      else {
        errors += 1;
        firstError ??= outcome.error ?? 'failed';
        // Do not spin on a target that fails instantly.
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, index) => worker(index)));
  return { latencies, errors, firstError, elapsedMs: performance.now() - start };
}

export interface HttpTarget {
  readonly pool: Pool;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: string;
  /** Is this parsed body a successful answer? */
  readonly accept: (body: unknown) => boolean;
}

export function makePool(origin: string): Pool {
  return new Pool(origin, { connections: 128, pipelining: 1, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 600_000 });
}

export async function httpOnce(target: HttpTarget): Promise<RequestOutcome> {
  const response = await target.pool.request({ method: 'POST', path: target.path, headers: target.headers, body: target.body });
  const text = await response.body.text();
  if (response.statusCode !== 200) return { ok: false, error: `HTTP ${response.statusCode}: ${text.slice(0, 300)}` };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { ok: false, error: `not JSON: ${text.slice(0, 300)}` };
  }
  return target.accept(parsed) ? { ok: true } : { ok: false, error: `unexpected answer: ${text.slice(0, 300)}` };
}

// ---- streaming ----

export interface StreamSample {
  /** Request start to the first chunk carrying content, ms. */
  ttft: number;
  /** Gaps between consecutive content-carrying chunks, ms. */
  gaps: number[];
}

export interface StreamLoopResult {
  ttfts: number[];
  gaps: number[];
  /** Whole-stream durations, ms. */
  durations: number[];
  errors: number;
  firstError: string | null;
  elapsedMs: number;
}

export async function streamLoop(concurrency: number, durationMs: number, once: (worker: number) => Promise<StreamSample>): Promise<StreamLoopResult> {
  const result: StreamLoopResult = { ttfts: [], gaps: [], durations: [], errors: 0, firstError: null, elapsedMs: 0 };
  const start = performance.now();
  const deadline = start + durationMs;
  const worker = async (index: number): Promise<void> => {
    while (performance.now() < deadline) {
      const t0 = performance.now();
      try {
        const sample = await once(index);
        result.durations.push(performance.now() - t0);
        result.ttfts.push(sample.ttft);
        for (const gap of sample.gaps) result.gaps.push(gap);
      } catch (error) {
        result.errors += 1;
        result.firstError ??= error instanceof Error ? error.message : String(error);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, index) => worker(index)));
  result.elapsedMs = performance.now() - start;
  return result;
}

/** One OpenAI-style SSE chat stream; times the content-carrying `data:` events. */
export async function sseOnce(target: HttpTarget): Promise<StreamSample> {
  const t0 = performance.now();
  const response = await target.pool.request({ method: 'POST', path: target.path, headers: target.headers, body: target.body });
  if (response.statusCode !== 200) {
    const text = await response.body.text();
    throw new Error(`HTTP ${response.statusCode}: ${text.slice(0, 300)}`);
  }
  let buffer = '';
  let first: number | null = null;
  let last = 0;
  const gaps: number[] = [];
  let done = false;
  for await (const chunk of response.body as AsyncIterable<Buffer>) {
    const now = performance.now();
    buffer += chunk.toString('utf8');
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        if (data === '[DONE]') {
          done = true;
          continue;
        }
        const parsed = JSON.parse(data) as { error?: unknown; choices?: { delta?: { content?: unknown } }[] };
        if (parsed.error !== undefined) throw new Error(`stream error: ${data.slice(0, 300)}`);
        const content = parsed.choices?.[0]?.delta?.content;
        if (typeof content === 'string' && content.length > 0) {
          if (first === null) first = now;
          else gaps.push(now - last);
          last = now;
        }
      }
    }
  }
  if (!done) throw new Error('stream ended without [DONE]');
  if (first === null) throw new Error('stream carried no content');
  return { ttft: first - t0, gaps };
}

/** One chatStream subscription on an open graphql-ws connection. */
export function gqlStreamOnce(connection: GqlWsConnection, query: string, variables: Record<string, unknown>): Promise<StreamSample> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let first: number | null = null;
    let last = 0;
    const gaps: number[] = [];
    let failed = false;
    connection.subscribe(query, variables, {
      next(payload, at) {
        if (payload.errors !== undefined) {
          failed = true;
          reject(new Error(`GraphQL errors: ${JSON.stringify(payload.errors).slice(0, 300)}`));
          return;
        }
        const chunk = (payload.data as { chatStream?: { delta?: string } } | undefined)?.chatStream;
        if (chunk?.delta !== undefined && chunk.delta.length > 0) {
          if (first === null) first = at;
          else gaps.push(at - last);
          last = at;
        }
      },
      error(error) {
        failed = true;
        reject(error);
      },
      complete() {
        if (failed) return;
        if (first === null) reject(new Error('stream carried no content'));
        else resolve({ ttft: first - t0, gaps });
      },
    });
  });
}
