/** Keys of PostgreSQL advisory locks: arbitrary and fixed, in one place so that no two collide. */
export const ADVISORY_LOCK_KEYS = {
  /** Instances starting together take turns to migrate and bootstrap. */
  start: 7_301_946_201,
  /** One instance at a time prunes the audit log. */
  auditPrune: 7_301_946_202,
  /**
   * The space of the two-key locks (this, the instance's lock key) each running instance holds
   * on its listening connection for as long as it lives; an int4, unlike the keys above.
   */
  instances: 730_194_620,
} as const;
