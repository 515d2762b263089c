import { isDatabaseUnreachable } from '../db/unreachable';

/** The most items one group-committed statement of the ledger carries. */
export const LEDGER_GROUP_MAX = 64;

/** How a group commit runs its items: one statement for one item, one statement for many. */
export interface GroupCommitStatements<Item, Outcome> {
  /** The item's own statement: its exact outcome, or its error. */
  alone(item: Item): Promise<Outcome>;
  /**
   * One statement for all `items`, in one transaction: per item, in order, its outcome, or
   * undefined when the shared statement did not decide it (the item then runs alone).
   */
  together(items: readonly Item[]): Promise<ReadonlyArray<Outcome | undefined>>;
}

interface Waiting<Item, Outcome> {
  readonly item: Item;
  readonly resolve: (outcome: Outcome) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Group commit of the ledger's statements. An item submitted while nothing is in flight runs at
 * once, alone, so a quiet gateway adds no wait; items submitted while a statement is in flight
 * wait for it and then go together, as one statement, one transaction and one WAL flush. Under
 * load this turns N statements that queue on the same account rows (each waking, re-checking
 * and committing in turn) into one that changes each row once.
 *
 * An item the shared statement leaves undecided, or every item of a shared statement that
 * failed for a reason of its own (a constraint, a bad value), runs alone, so one item never
 * fails the others. A database that cannot be reached fails them all at once: alone, each would
 * wait to learn the same.
 */
export class GroupCommit<Item, Outcome> {
  private readonly waiting: Array<Waiting<Item, Outcome>> = [];
  private inFlight = false;
  private readonly statements: GroupCommitStatements<Item, Outcome>;

  constructor(
    statements: GroupCommitStatements<Item, Outcome>,
    /** The most items one shared statement carries. */
    private readonly maxItems: number,
    /** Told the number of items of every statement run. */
    observe: (items: number) => void,
  ) {
    this.statements = {
      alone: (item) => {
        observe(1);
        return statements.alone(item);
      },
      together: (items) => {
        observe(items.length);
        return statements.together(items);
      },
    };
  }

  /** The item's outcome; `shareable` false runs it alone at once, whatever is in flight. */
  submit(item: Item, shareable = true): Promise<Outcome> {
    if (!shareable) return this.statements.alone(item);
    if (this.inFlight) {
      return new Promise<Outcome>((resolve, reject) => this.waiting.push({ item, resolve, reject }));
    }
    this.inFlight = true;
    const outcome = this.statements.alone(item);
    void outcome.then(
      () => this.next(),
      () => this.next(),
    );
    return outcome;
  }

  private next(): void {
    const group = this.waiting.splice(0, this.maxItems);
    if (group.length === 0) {
      this.inFlight = false;
      return;
    }
    void this.run(group).finally(() => this.next());
  }

  private async run(group: Array<Waiting<Item, Outcome>>): Promise<void> {
    if (group.length === 1) {
      await this.statements.alone(group[0].item).then(group[0].resolve, group[0].reject);
      return;
    }
    let outcomes: ReadonlyArray<Outcome | undefined>;
    try {
      outcomes = await this.statements.together(group.map((waiting) => waiting.item));
    } catch (error) {
      if (isDatabaseUnreachable(error)) {
        for (const waiting of group) waiting.reject(error);
        return;
      }
      outcomes = [];
    }
    group.forEach((waiting, index) => {
      const outcome = outcomes[index];
      if (outcome !== undefined) waiting.resolve(outcome);
      else this.statements.alone(waiting.item).then(waiting.resolve, waiting.reject);
    });
  }
}
