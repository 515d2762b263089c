/** Keys of PostgreSQL advisory locks: arbitrary and fixed, in one place so that no two collide. */
export const ADVISORY_LOCK_KEYS = {
  /** Instances starting together take turns to migrate and bootstrap. */
  start: 7_301_946_201,
  /** One instance at a time prunes the audit log. */
  auditPrune: 7_301_946_202,
} as const;
