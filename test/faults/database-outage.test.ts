// The database away and back: a real PostgreSQL of this file's own is stopped under load and
// started again. Meanwhile new requests get SERVICE_UNAVAILABLE (/v1: 503) at once and /readyz
// 503, the streams already running finish for their clients, and their charges wait. Once it is
// back, the same process serves again, each of those streams has exactly one usage record, and
// a usageUpdated subscriber whose socket stayed open receives their events.
import { randomUUID } from 'node:crypto';
import { APIError } from 'openai';
import pino from 'pino';
import { ChatDocument, ChatStreamDocument, LoginDocument, MeDocument, type ChatStreamSubscription } from '../generated/graphql';
import { chat, codeOf, createApiKey, createUser, onlyError, openaiClient, signInAdmin, sleep, until, type Feed, type SignedIn } from '../helpers/client';
import { sql } from '../helpers/database';
import { startPostgresProcess, type PostgresProcess } from '../helpers/postgres-process';
import { startTestGateway, type TestGateway } from '../helpers/server';
import { within } from '../foundation/gateway-process';
import { usageFeed } from '../usage/support';
import type { ReserveRequest } from '../../src/quota/quota.service';
import { Reservation, settlementsOf, type LedgerAccess } from '../../src/quota/reservation';

jest.setTimeout(60_000);

/** Below the answer's natural length (16 tokens at least): every stream runs to exactly this many, ending with `length`. */
const MAX_TOKENS = 12;
/** 12 tokens, 400 ms apart: each stream runs for about 5 s, across the stop of PostgreSQL. */
const INTER_TOKEN_MS = 400;
/** "Promptly", as a deadline: an answer that hung on the pool's defaults would take far longer. */
const ANSWERS_WITHIN_MS = 5_000;
const messages = [{ role: 'USER' as const, content: 'Tell me about the weather during an outage.' }];

let postgres: PostgresProcess;
let gateway: TestGateway;
let admin: SignedIn;

beforeAll(async () => {
  postgres = await startPostgresProcess('outage');
  gateway = await startTestGateway({ databaseUrl: postgres.url, simulator: { timeToFirstTokenMs: 0, interTokenLatencyMs: 0 } });
  admin = await signInAdmin(gateway);
});

afterAll(async () => {
  // Back up first, so that nothing is left pending for the gateway's shutdown.
  await postgres?.start();
  await gateway?.stop();
  await postgres?.remove();
});

async function probe(path: string): Promise<number> {
  return (await fetch(`${gateway.server.origin}${path}`)).status;
}

async function pendingSettlements(): Promise<number> {
  const text = await (await fetch(`${gateway.server.origin}/metrics`)).text();
  const match = /^gateway_pending_settlements (\d+)$/m.exec(text);
  if (match === null) throw new Error('/metrics has no gateway_pending_settlements');
  return Number(match[1]);
}

/** Waits until PostgreSQL is back for the gateway: ready, and nothing left waiting on it. */
async function untilServingAgain(): Promise<void> {
  await until(async () => (await probe('/readyz')) === 200, 10_000, '/readyz 200 after PostgreSQL came back');
  await until(async () => (await pendingSettlements()) === 0, 15_000, 'the pending settlements applied');
}

/** A chatStream on a socket of its own. */
function graphqlStream(token: string): Feed<ChatStreamSubscription> {
  return gateway.ws(token).watch(ChatStreamDocument, { input: { messages, maxTokens: MAX_TOKENS } });
}

interface SdkStream {
  requestId: string;
  deltas: number;
  usage: { prompt_tokens: number; completion_tokens: number } | null;
  done: Promise<void>;
}

/** A /v1 stream with the official SDK, read to its end in the background. */
async function sdkStream(apiKey: string): Promise<SdkStream> {
  const { data, response } = await openaiClient(gateway, apiKey)
    .chat.completions.create({
      model: 'sim-llama-3-8b',
      messages: [{ role: 'user', content: messages[0].content }],
      max_tokens: MAX_TOKENS,
      stream: true,
      stream_options: { include_usage: true },
    })
    .withResponse();
  const stream: SdkStream = { requestId: response.headers.get('x-usage-request-id') ?? '', deltas: 0, usage: null, done: Promise.resolve() };
  stream.done = (async () => {
    for await (const chunk of data) {
      if ((chunk.choices[0]?.delta?.content ?? '') !== '') stream.deltas += 1;
      if (chunk.usage != null) stream.usage = chunk.usage;
    }
  })();
  return stream;
}

/** 10 prompt tokens and 20 to generate, reserved straight through the quota service. */
function reserveRequest(userId: string): ReserveRequest {
  return {
    requestId: randomUUID(),
    userId,
    apiKeyId: null,
    promptTokens: 10,
    promptCountSource: 'tokenize',
    maxTokens: 20,
    modelCompletionLimit: 1_000,
    minCompletionTokens: 1,
    target: { model: 'sim-llama-3-8b', interface: 'graphql', apiKeyId: null, upstream: 'upstream-1' },
  };
}
const usage = { promptTokens: 10, completionTokens: 15, cachedTokens: 0, usageSource: 'reported', status: 'completed' } as const;

describe('the database away and back (a real PostgreSQL stopped and started)', () => {
  it('refuses new work at once, finishes the running streams, then settles each once and serves again, events included', async () => {
    const user = await createUser(gateway, admin.token, { tokenLimit: 100_000 });
    const key = await createApiKey(gateway, user.token, 'outage');
    // Signed in, never yet authenticated: the gateway has nothing of theirs cached when the database goes.
    const newcomer = await createUser(gateway, admin.token);

    const subscriber = gateway.ws(user.token);
    const events = usageFeed(subscriber);
    await until(() => subscriber.acknowledged, 5_000, 'connection_ack');
    await sleep(250);
    const before = await chat(gateway, user.token);
    await until(() => events.events.length === 1, 5_000, 'the event of the chat before the outage');

    gateway.simulator.setLatency({ interTokenLatencyMs: INTER_TOKEN_MS });
    const graphqlStreams = [graphqlStream(user.token), graphqlStream(user.token)];
    const wholeAnswer = gateway.gql(ChatDocument, { input: { messages, maxTokens: MAX_TOKENS } }, user.token);
    const sdkStreams = await Promise.all([sdkStream(key.secret), sdkStream(key.secret)]);
    await until(
      () => graphqlStreams.every((feed) => feed.events.some((event) => event.chatStream.delta !== '')) && sdkStreams.every((stream) => stream.deltas > 0),
      10_000,
      'every stream under way',
    );

    await postgres.stop();

    // New work: refused at once, with the contract's code, on every path.
    const refusedChat = await within(gateway.gql(ChatDocument, { input: { messages, maxTokens: MAX_TOKENS } }, user.token), ANSWERS_WITHIN_MS, () => 'chat');
    expect(onlyError(refusedChat, 'SERVICE_UNAVAILABLE').message).not.toMatch(/select|insert|ECONNREFUSED/i);
    onlyError(await within(gateway.gql(MeDocument, {}, user.token), ANSWERS_WITHIN_MS, () => 'me (the ORM)'), 'SERVICE_UNAVAILABLE');
    onlyError(
      await within(gateway.gql(LoginDocument, { email: user.email, password: user.password }), ANSWERS_WITHIN_MS, () => 'login'),
      'SERVICE_UNAVAILABLE',
    );
    const refusedStream = await within(
      subscriber.collect(ChatStreamDocument, { input: { messages, maxTokens: MAX_TOKENS } }),
      ANSWERS_WITHIN_MS,
      () => 'chatStream on the open socket',
    );
    expect(codeOf(refusedStream.error)).toBe('SERVICE_UNAVAILABLE');
    const refusedSdk = await within(
      openaiClient(gateway, key.secret)
        .chat.completions.create({ model: 'sim-llama-3-8b', messages: [{ role: 'user', content: 'hi' }], max_tokens: MAX_TOKENS })
        .then(
          () => null,
          (error: unknown) => error,
        ),
      ANSWERS_WITHIN_MS,
      () => '/v1/chat/completions',
    );
    expect(refusedSdk).toBeInstanceOf(APIError);
    expect((refusedSdk as APIError).status).toBe(503);
    // connection_init cannot be checked: "try again later", not a refusal of the credentials.
    const newSocket = gateway.ws(newcomer.token);
    const newSocketFeed = usageFeed(newSocket);
    await within(newSocketFeed.done, ANSWERS_WITHIN_MS, () => 'a new socket');
    expect(newSocket.closeCode).toBe(1013);
    expect(await within(probe('/readyz'), ANSWERS_WITHIN_MS, () => '/readyz')).toBe(503);
    expect(await probe('/healthz')).toBe(200);

    // The running ones finish for their clients while the database is still away, their charges waiting.
    const streamed = await Promise.all(graphqlStreams.map((feed) => feed.done));
    await Promise.all(sdkStreams.map((stream) => stream.done));
    const whole = await wholeAnswer;
    for (const outcome of streamed) {
      expect(outcome.error).toBeNull();
      const last = outcome.events.at(-1) as ChatStreamSubscription;
      expect(last.chatStream.finishReason).toBe('length');
      expect(last.chatStream.usage?.completionTokens).toBe(MAX_TOKENS);
    }
    for (const stream of sdkStreams) expect(stream.usage?.completion_tokens).toBe(MAX_TOKENS);
    expect(whole.errors).toBeUndefined();
    expect(whole.data?.chat.usage.completionTokens).toBe(MAX_TOKENS);
    expect(await pendingSettlements()).toBe(5);
    expect(await probe('/readyz')).toBe(503);

    await postgres.start();
    await untilServingAgain();
    gateway.simulator.setLatency({ interTokenLatencyMs: 0 });
    const after = await chat(gateway, user.token);
    // A sign-in takes a connection of each pool: the ORM's (the user) and the statements' (throttle, session).
    await signInAdmin(gateway);

    const outageIds = [...streamed.map((outcome) => outcome.events[0].chatStream.id), ...sdkStreams.map((stream) => stream.requestId), whole.data?.chat.id];
    const records = await sql<{ request_id: string; status: string; completion_tokens: number; charged_tokens: number }>(
      postgres.url,
      'select request_id, status, completion_tokens, charged_tokens from usage_records where user_id = $1',
      [user.id],
    );
    for (const requestId of outageIds) {
      expect(records.filter((record) => record.request_id === requestId)).toEqual([
        { request_id: requestId, status: 'completed', completion_tokens: MAX_TOKENS, charged_tokens: expect.anything() },
      ]);
    }
    expect(records).toHaveLength(outageIds.length + 2);
    expect(await sql(postgres.url, 'select request_id from quota_reservations')).toEqual([]);
    const charged = records.reduce((sum, record) => sum + Number(record.charged_tokens), 0);
    expect(await sql(postgres.url, 'select used::int, reserved::int from quota_accounts where user_id = $1', [user.id])).toEqual([{ used: charged, reserved: 0 }]);
    expect(await sql(postgres.url, 'select reserved::int from api_key_quota_accounts where api_key_id = $1', [key.id])).toEqual([{ reserved: 0 }]);

    // On the socket that stayed open: the event of every retried settlement, then the new chat's.
    const expected = [before, ...outageIds, after];
    await until(() => events.events.length >= expected.length, 10_000, 'the events of the settlements after the return');
    await sleep(200);
    expect(events.events.map((event) => event.requestId).sort()).toEqual([...expected].sort());
    expect(events.error).toBeNull();
    expect(subscriber.closeCode).toBeNull();
  });

  it('a settlement tried again after its first attempt committed charges once', async () => {
    const user = await createUser(gateway, admin.token, { tokenLimit: 10_000 });
    const { services } = gateway.server;
    const reservation = await services.quota.reserve(reserveRequest(user.id));
    const first = await reservation.settle(usage);
    expect(first).toMatchObject({ charged: true, chargedTokens: 25 });

    // The same request settled again, as the process does when the first attempt's answer was lost:
    // the database is away at first, so the attempt waits and is applied once it is back.
    const ledger: LedgerAccess = {
      db: services.db,
      rateLimiter: services.rateLimiter,
      clock: services.clock,
      log: services.log,
      ttlSeconds: 180,
      metrics: services.metrics,
      pending: services.quota.pendingSettlements,
      instance: services.instance,
      settlements: settlementsOf(services.db, services.metrics),
    };
    const retried = new Reservation(reservation.budget, reservation.target, ledger);
    await postgres.stop();
    expect(await within(retried.settle(usage), ANSWERS_WITHIN_MS, () => 'settle while the database is away')).toBeNull();
    expect(await pendingSettlements()).toBe(1);
    await postgres.start();
    await untilServingAgain();

    const records = await sql<{ charged_tokens: number }>(postgres.url, 'select charged_tokens from usage_records where request_id = $1', [reservation.requestId]);
    expect(records).toEqual([{ charged_tokens: 25 }]);
    expect(await sql(postgres.url, 'select used::int, reserved::int from quota_accounts where user_id = $1', [user.id])).toEqual([{ used: 25, reserved: 0 }]);
  });

  it('a gateway stopped while the database is still away names what it could not settle and leaves the reservations', async () => {
    const lines: { msg: string; pending?: { requestId: string; ending: string }[] }[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line) as (typeof lines)[number]) });
    const second = await startTestGateway({ databaseUrl: postgres.url, simulator: gateway.simulator, log });
    const user = await createUser(second, admin.token);
    const reservation = await second.server.services.quota.reserve(reserveRequest(user.id));

    await postgres.stop();
    expect(await within(reservation.settle(usage), ANSWERS_WITHIN_MS, () => 'settle while the database is away')).toBeNull();
    // Bounded: the shutdown gives the database a few seconds, then gives up on it.
    await within(second.stop(), 20_000, () => 'the stop of a gateway with a settlement pending');
    const report = lines.find((line) => line.msg.startsWith('stopped with reservation endings the database never took'));
    expect(report?.pending).toEqual([{ requestId: reservation.requestId, ending: 'settlement' }]);

    await postgres.start();
    await untilServingAgain();
    // Left for the reaper (which settles a stopped process's requests): not released, not charged.
    expect(await sql(postgres.url, 'select amount::int from quota_reservations where request_id = $1', [reservation.requestId])).toEqual([{ amount: 30 }]);
    expect(await sql(postgres.url, 'select 1 from usage_records where request_id = $1', [reservation.requestId])).toEqual([]);
  });
});
