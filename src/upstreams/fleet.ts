import { UpstreamError, type DomainError } from '../errors';
import type { Logger } from '../logger';
import type { Upstream, UpstreamModel } from '../chat/upstream';

/** One configured vLLM server, as this instance sees it. */
export class UpstreamMember {
  inFlight = 0;
  /** Whether the last contact (model list, call) reached the server. */
  healthy = true;
  lastError: string | null = null;
  lastCheckedAt: Date | null = null;
  /** What the server listed the last time it was asked. */
  models: readonly UpstreamModel[] = [];

  constructor(
    readonly name: string,
    /** For logs and answers: never with credentials. */
    readonly baseUrl: string,
    readonly client: Upstream,
  ) {}

  serves(model: string): boolean {
    return this.models.some((candidate) => candidate.id === model);
  }
}

export interface UpstreamStatus {
  readonly name: string;
  readonly baseUrl: string;
  readonly healthy: boolean;
  readonly models: string[];
  readonly inFlight: number;
  readonly lastError: string | null;
  readonly lastCheckedAt: Date | null;
}

/**
 * The configured vLLM servers: one catalogue (the union of what each lists, each model id
 * once) and the choice of server per request: among those serving the model, the one with
 * the fewest requests in flight, ties broken at random. The decision reads memory only.
 */
export class Fleet {
  constructor(
    readonly members: readonly UpstreamMember[],
    private readonly log: Logger,
    private readonly random: () => number = Math.random,
  ) {}

  /**
   * The catalogue, asking each server for its list (each client caches it briefly). A server
   * that cannot answer keeps its last list; only when none answers does this fail.
   */
  async models(): Promise<UpstreamModel[]> {
    const outcomes = await Promise.allSettled(this.members.map((member) => this.refresh(member)));
    const catalogue = new Map<string, UpstreamModel>();
    for (const member of this.members) for (const model of member.models) if (!catalogue.has(model.id)) catalogue.set(model.id, model);
    const failure = outcomes.find((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected');
    if (catalogue.size === 0 && failure !== undefined) throw failure.reason;
    return [...catalogue.values()];
  }

  /** The server for one request of `model`, or null when no server lists it. */
  pick(model: string): UpstreamMember | null {
    let best: UpstreamMember[] = [];
    for (const member of this.members) {
      if (!member.serves(model)) continue;
      if (best.length === 0 || member.inFlight < best[0].inFlight) best = [member];
      else if (member.inFlight === best[0].inFlight) best.push(member);
    }
    return best.length === 0 ? null : best[Math.floor(this.random() * best.length)];
  }

  /** Runs one call on `member`, counted in flight while it runs. */
  async track<T>(member: UpstreamMember, call: () => Promise<T>): Promise<T> {
    member.inFlight += 1;
    try {
      const result = await call();
      this.noteSuccess(member);
      return result;
    } finally {
      member.inFlight -= 1;
    }
  }

  /** What a call to `member` failed with, in the contract's terms: UPSTREAM_ERROR is the server's fault, anything else the request's. */
  noteFailure(member: UpstreamMember, error: DomainError): void {
    if (error instanceof UpstreamError) this.failed(member, error.message);
  }

  private failed(member: UpstreamMember, problem: string): void {
    if (member.healthy) this.log.warn({ upstream: member.name, problem }, 'upstream failing');
    member.healthy = false;
    member.lastError = problem;
    member.lastCheckedAt = new Date();
  }

  status(): UpstreamStatus[] {
    return this.members.map((member) => ({
      name: member.name,
      baseUrl: member.baseUrl,
      healthy: member.healthy,
      models: member.models.map((model) => model.id),
      inFlight: member.inFlight,
      lastError: member.lastError,
      lastCheckedAt: member.lastCheckedAt,
    }));
  }

  async close(): Promise<void> {
    await Promise.all(this.members.map((member) => member.client.close()));
  }

  private async refresh(member: UpstreamMember): Promise<void> {
    try {
      // The client answers from its short cache too, so this says nothing about health unless it fails.
      member.models = await member.client.listModels();
    } catch (error) {
      this.failed(member, error instanceof Error ? error.message.slice(0, 200) : 'unreachable');
      throw error;
    }
  }

  /** A call to `member` went through. */
  noteSuccess(member: UpstreamMember): void {
    if (!member.healthy) this.log.info({ upstream: member.name }, 'upstream answering again');
    member.healthy = true;
    member.lastError = null;
    member.lastCheckedAt = new Date();
  }
}
