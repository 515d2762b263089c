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
  /**
   * Its `GET /health` failed since it left the rotation: no request is sent to it even as a last
   * resort. Until then a server out of rotation still takes a first try when no other can.
   */
  confirmedDown = false;
  /** The next `GET /health`. */
  probe: NodeJS.Timeout | null = null;
  /** The hash of its name, the server's part of each session key's rendezvous weight. */
  seed = 0;

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
 * A session stays on its server until that server has this many more requests in flight
 * than the least loaded one (and at least twice as many): a hot session cannot pile onto one
 * server while the others idle, and a warm prefix cache is worth a small imbalance.
 */
const SESSION_LOAD_SLACK = 8;

/** 32-bit FNV-1a: a session key's and a server name's hash, cheap enough to run per request. */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** murmur3's finaliser: spreads `key ^ server` so each server's weight for a key is independent. */
function mix(value: number): number {
  let h = value;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export interface FleetTiming {
  /** Between two `GET /health` of a server in rotation; a server out of it backs off from here. */
  readonly healthIntervalMs: number;
  /** Between two refreshes of every server's model list. */
  readonly catalogueRefreshMs: number;
}

/**
 * The configured vLLM servers: one catalogue (the union of what each lists, each model id
 * once, refreshed on an interval and when a server comes back) and the choice of server per
 * request: among the healthy ones serving the model, the one with the fewest requests in
 * flight, ties broken at random; a request with a session key goes to the session's server by
 * rendezvous hashing while that one is healthy and not overloaded. The decision reads memory
 * only. A server that fails (refused, reset, 5xx, timeout) or fails its `GET /health` leaves
 * the rotation at once and is probed with backoff until it answers; each instance judges for
 * itself.
 */
export class Fleet {
  private catalogueTimer: NodeJS.Timeout | null = null;
  private catalogue: UpstreamModel[] = [];
  private closed = false;

  constructor(
    readonly members: readonly UpstreamMember[],
    private readonly log: Logger,
    private readonly timing: FleetTiming,
    private readonly random: () => number = Math.random,
  ) {
    for (const member of members) member.seed = fnv1a(member.name);
  }

  /** Reads every server's list once (a server that cannot answer starts out of rotation), then keeps both fresh. */
  async start(): Promise<void> {
    await this.refreshCatalogue();
    for (const member of this.members) if (member.probe === null) this.scheduleCheck(member, this.timing.healthIntervalMs);
    const tick = (): void => {
      this.catalogueTimer = setTimeout(() => {
        this.refreshCatalogue().finally(tick);
      }, this.timing.catalogueRefreshMs);
      this.catalogueTimer.unref();
    };
    tick();
  }

  /** The catalogue; asked of the servers only while it is empty (none has answered yet). */
  async models(): Promise<UpstreamModel[]> {
    if (this.catalogue.length === 0) {
      const failure = await this.refreshCatalogue();
      if (this.catalogue.length === 0 && failure !== null) throw failure;
    }
    return this.catalogue;
  }

  /** Whether any server, in rotation or not, listed `model` when last asked. */
  knows(model: string): boolean {
    return this.members.some((member) => member.serves(model));
  }

  /**
   * The server for one try of a request for `model`, other than those already `tried`; null
   * when no healthy server serves it. With a `sessionKey`, the healthy server ranked highest for
   * that key by rendezvous hashing, unless it is overloaded: losing or adding a server moves
   * only the sessions that ranked it first. O(servers), no I/O.
   */
  pick(model: string, tried: ReadonlySet<UpstreamMember> = new Set(), sessionKey: string | null = null): UpstreamMember | null {
    const inRotation = (member: UpstreamMember): boolean => member.healthy && !tried.has(member) && member.serves(model);
    let pool = this.members.filter(inRotation);
    // One failed call takes a server out of rotation, but a lone server of the model keeps taking
    // first tries until its probe confirms it down: one bad answer must not refuse a whole model.
    if (pool.length === 0 && tried.size === 0) pool = this.members.filter((member) => !member.confirmedDown && member.serves(model));
    if (pool.length === 0) return null;
    let best: UpstreamMember[] = [];
    for (const member of pool) {
      if (best.length === 0 || member.inFlight < best[0].inFlight) best = [member];
      else if (member.inFlight === best[0].inFlight) best.push(member);
    }
    if (sessionKey !== null && pool.length > 1) {
      const key = fnv1a(sessionKey);
      const leastLoaded = best[0].inFlight;
      const bound = leastLoaded + Math.max(SESSION_LOAD_SLACK, leastLoaded);
      let chosen: UpstreamMember | null = null;
      let chosenWeight = -1;
      for (const member of pool) {
        if (member.inFlight > bound) continue;
        const weight = mix(key ^ member.seed);
        if (weight > chosenWeight) {
          chosen = member;
          chosenWeight = weight;
        }
      }
      if (chosen !== null) return chosen;
    }
    return best[Math.floor(this.random() * best.length)];
  }

  /** What a call to `member` failed with, in the contract's terms: UPSTREAM_ERROR is the server's fault, anything else the request's. */
  noteFailure(member: UpstreamMember, error: DomainError): void {
    if (error instanceof UpstreamError) this.failed(member, error.message);
  }

  /** A call to `member` went through: a server out of rotation is back. */
  noteSuccess(member: UpstreamMember): void {
    member.lastCheckedAt = new Date();
    if (member.healthy) return;
    this.rejoin(member);
    // It may serve something else after its restart.
    this.refreshMember(member).then(
      () => this.rebuildCatalogue(),
      () => undefined,
    );
  }

  private rejoin(member: UpstreamMember): void {
    member.healthy = true;
    member.confirmedDown = false;
    member.lastError = null;
    this.log.info({ upstream: member.name }, 'upstream back in rotation');
    this.scheduleCheck(member, this.timing.healthIntervalMs);
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
    if (this.catalogueTimer !== null) clearTimeout(this.catalogueTimer);
    this.catalogueTimer = null;
    for (const member of this.members) if (member.probe !== null) clearTimeout(member.probe);
    for (const member of this.members) member.probe = null;
    this.closed = true;
    await Promise.all(this.members.map((member) => member.client.close()));
  }

  private failed(member: UpstreamMember, problem: string): void {
    member.lastError = problem;
    member.lastCheckedAt = new Date();
    if (!member.healthy) return;
    member.healthy = false;
    this.log.warn({ upstream: member.name, problem }, 'upstream out of rotation');
    this.scheduleCheck(member, this.timing.healthIntervalMs);
  }

  /**
   * The next `GET /health` of `member`: at the interval while it is in rotation; while it is
   * out, with backoff, and one success (with a fresh model list) brings it back.
   */
  private scheduleCheck(member: UpstreamMember, delayMs: number): void {
    if (this.closed) return;
    if (member.probe !== null) clearTimeout(member.probe);
    member.probe = setTimeout(() => {
      member.probe = null;
      this.check(member, delayMs).catch((error: unknown) => this.log.error({ err: error, upstream: member.name }, 'upstream check failed'));
    }, delayMs);
    member.probe.unref();
  }

  private async check(member: UpstreamMember, delayMs: number): Promise<void> {
    const up = await member.client.healthy(Math.min(this.timing.healthIntervalMs, 5_000));
    // A request's outcome may have changed the verdict meanwhile, and scheduled the next check itself.
    if (this.closed || member.probe !== null) return;
    member.lastCheckedAt = new Date();
    if (!up) member.confirmedDown = true;
    if (member.healthy) {
      if (up) this.scheduleCheck(member, this.timing.healthIntervalMs);
      else this.failed(member, 'GET /health did not answer 200');
      return;
    }
    const listed = up && (await this.refreshMember(member).then(() => true, () => false));
    if (this.closed || member.probe !== null || member.healthy) return;
    if (listed) {
      this.rebuildCatalogue();
      this.rejoin(member);
    } else {
      this.scheduleCheck(member, Math.min(delayMs * 2, Math.max(this.timing.healthIntervalMs, MAX_PROBE_BACKOFF_MS)));
    }
  }

  /** Asks every server in rotation for its list; the failure when none answered, else null. */
  private async refreshCatalogue(): Promise<unknown> {
    const asked = this.members.filter((member) => member.healthy || member.models.length === 0);
    const outcomes = await Promise.allSettled(asked.map((member) => this.refreshMember(member)));
    this.rebuildCatalogue();
    const failure = outcomes.find((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected');
    return failure === undefined || outcomes.some((outcome) => outcome.status === 'fulfilled') ? null : failure.reason;
  }

  private rebuildCatalogue(): void {
    const catalogue = new Map<string, UpstreamModel>();
    for (const member of this.members) for (const model of member.models) if (!catalogue.has(model.id)) catalogue.set(model.id, model);
    this.catalogue = [...catalogue.values()];
  }

  /** One server's list; a server that cannot answer keeps its last list and leaves the rotation. */
  private async refreshMember(member: UpstreamMember): Promise<void> {
    try {
      member.models = await member.client.listModels();
    } catch (error) {
      this.failed(member, error instanceof Error ? error.message.slice(0, 200) : 'unreachable');
      throw error;
    }
  }
}
