/**
 * WS_MAX_CONNECTIONS_PER_USER across the workers: the primary's count of each user's open
 * WebSockets, kept by worker so that a worker that dies gives its sockets back all at once. The
 * primary handles one message at a time, so a take and its check are one step.
 */
export class SocketCounts {
  private readonly byUser = new Map<string, number>();
  private readonly byWorker = new Map<number, Map<string, number>>();

  constructor(private readonly maxPerUser: number) {}

  take(workerId: number, userId: string): boolean {
    const held = this.byUser.get(userId) ?? 0;
    if (held >= this.maxPerUser) return false;
    this.byUser.set(userId, held + 1);
    const own = this.byWorker.get(workerId) ?? new Map<string, number>();
    own.set(userId, (own.get(userId) ?? 0) + 1);
    this.byWorker.set(workerId, own);
    return true;
  }

  give(workerId: number, userId: string): void {
    const own = this.byWorker.get(workerId);
    const held = own?.get(userId) ?? 0;
    if (own === undefined || held === 0) return;
    if (held > 1) own.set(userId, held - 1);
    else own.delete(userId);
    this.lower(userId, 1);
  }

  /** A worker that exited holds no socket any more. */
  forgetWorker(workerId: number): void {
    const own = this.byWorker.get(workerId);
    this.byWorker.delete(workerId);
    for (const [userId, held] of own ?? []) this.lower(userId, held);
  }

  private lower(userId: string, by: number): void {
    const left = (this.byUser.get(userId) ?? 0) - by;
    if (left > 0) this.byUser.set(userId, left);
    else this.byUser.delete(userId);
  }
}
