import { MeDocument } from '../generated/graphql';
import type { WsClient } from '../helpers/client';

/**
 * What bad credentials get over graphql-ws: the server refuses them at connection_init and
 * closes the socket with 4403 (src/server.ts onConnect answers false), so `me` never runs.
 */
export async function expectWsRefused(client: WsClient): Promise<void> {
  const { events, error } = await client.collect(MeDocument, {});
  expect(events).toEqual([]);
  expect((error as { code?: unknown }).code).toBe(4403);
  expect(client.acknowledged).toBe(false);
}
