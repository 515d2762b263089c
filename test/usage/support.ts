import { UsageUpdatedDocument, type UsageUpdatedSubscription } from '../generated/graphql';
import type { Feed, WsClient } from '../helpers/client';
import type { PgUsageBus } from '../../src/usage/usage-bus';
import type { TestGateway } from '../helpers/server';

export type UsageEventData = UsageUpdatedSubscription['usageUpdated'];

/** A usageUpdated subscription on `client` (userId omitted: the default feed), its events unwrapped. */
export function usageFeed(client: WsClient, userId?: string | null): Feed<UsageEventData> {
  return client.watch(UsageUpdatedDocument, userId === undefined ? {} : { userId }, { pick: (data) => data.usageUpdated });
}

/** The request ids of the events a feed received, in order of arrival. */
export function requestIds(feed: Feed<UsageEventData>): string[] {
  return feed.events.map((event) => event.requestId);
}

/**
 * Live subscriptions registered on the gateway's usage bus: a white-box look at PgUsageBus,
 * to show that ended subscriptions do not stay registered.
 */
export function busSubscribers(gateway: TestGateway): number {
  return (gateway.server.services.usageBus as PgUsageBus).subscriberCount;
}
