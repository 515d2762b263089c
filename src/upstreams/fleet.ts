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
  /** The next `GET /health` while it is out of rotation. */
  probe: NodeJS.Timeout | null = null;

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

/** A request's hold on a server: counted in flight there from the pick until the request ends. */
export class UpstreamLease {
  private ended = false;

  constructor(private current: UpstreamMember) {
    current.inFlight += 1;
  }

  get member(): UpstreamMember {
    return this.current;
  }

  /** A failover: the request is now the other server's. */
  moveTo(next: UpstreamMember): void {
    if (this.ended) return;
    this.current.inFlight -= 1;
    this.current = next;
    next.inFlight += 1;
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.current.inFlight -= 1;
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

/** The longest wait between two probes of a server that stays down, unless the interval is longer. */
const MAX_PROBE_BACKOFF_MS = 10_000;

/**
 * The configured vLLM servers: one catalogue (the union of what each lists, each model id
 * once) and the choice of server per request: among the healthy ones serving the model, the
 * one with the fewest requests in flight, ties broken at random; the decision reads memory
 * only. A server that fails (refused, reset, 5xx, timeout) leaves the rotation at once and is
 * probed with `GET /health` until it answers; each instance judges for itself.
 */
export class Fleet {
  constructor(
    readonly members: readonly UpstreamMember[],
    private readonly log: Logger,
    private readonly healthIntervalMs: number,
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

  /**
   * The server for one try of a request for `model`, other than those already `tried`; null
   * when there is none. When every server of the model is out of rotation, a first try still
   * goes to one of them: refusing outright would only turn the same failure into another.
   */
  pick(model: string, tried: ReadonlySet<UpstreamMember> = new Set()): UpstreamMember | null {
    const serving = this.members.filter((member) => member.serves(model) && !tried.has(member));
    const healthy = serving.filter((member) => member.healthy);
    const pool = healthy.length > 0 || tried.size > 0 ? healthy : serving;
    let best: UpstreamMember[] = [];
    for (const member of pool) {
      if (best.length === 0 || member.inFlight < best[0].inFlight) best = [member];
      else if (member.inFlight === best[0].inFlight) best.push(member);
    }
    return best.length === 0 ? null : best[Math.floor(this.random() * best.length)];
  }

  /** What a call to `member` failed with, in the contract's terms: UPSTREAM_ERROR is the server's fault, anything else the request's. */
  noteFailure(member: UpstreamMember, error: DomainError): void {
    if (error instanceof UpstreamError) this.failed(member, error.message);
  }

  private failed(member: UpstreamMember, problem: string): void {
    if (member.healthy) this.log.warn({ upstream: member.name, problem }, 'upstream out of rotation');
    member.healthy = false;
    member.lastError = problem;
    member.lastCheckedAt = new Date();
    if (member.probe === null) this.scheduleProbe(member, this.healthIntervalMs);
  }

  private scheduleProbe(member: UpstreamMember, delayMs: number): void {
    member.probe = setTimeout(() => {
      member.client.healthy(Math.min(this.healthIntervalMs, 5_000)).then(async (up) => {
        member.probe = null;
        member.lastCheckedAt = new Date();
        if (member.healthy) return;
        if (!up) {
          this.scheduleProbe(member, Math.min(delayMs * 2, Math.max(this.healthIntervalMs, MAX_PROBE_BACKOFF_MS)));
          return;
        }
        member.client.forgetModels();
        await this.refresh(member).catch(() => undefined);
        if (member.probe === null) this.noteSuccess(member);
      }, (error: unknown) => this.log.error({ err: error, upstream: member.name }, 'upstream probe failed'));
    }, delayMs);
    member.probe.unref();
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
    for (const member of this.members) if (member.probe !== null) clearTimeout(member.probe);
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
    if (member.probe !== null) clearTimeout(member.probe);
    member.probe = null;
    if (!member.healthy) this.log.info({ upstream: member.name }, 'upstream back in rotation');
    member.healthy = true;
    member.lastError = null;
    member.lastCheckedAt = new Date();
  }
}
