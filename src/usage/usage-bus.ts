import { createPubSub } from '@graphql-yoga/subscription';
import type { UsageEvent } from './usage.types';

/** Where settled requests are announced; subscribers filter by user. */
export interface UsageBus {
  publish(event: UsageEvent): void;
  subscribe(): AsyncIterable<UsageEvent>;
  close(): Promise<void>;
}

/** The bus within one process. */
export class LocalUsageBus implements UsageBus {
  private readonly pubsub = createPubSub<{ usage: [UsageEvent] }>();

  publish(event: UsageEvent): void {
    this.pubsub.publish('usage', event);
  }

  subscribe(): AsyncIterable<UsageEvent> {
    return this.pubsub.subscribe('usage');
  }

  async close(): Promise<void> {}
}
