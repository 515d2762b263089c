import type { MigrationObject } from '@mikro-orm/core';
import { Migration20261126000001_users_auth } from './Migration20261126000001_users_auth';
import { Migration20261126000002_metering } from './Migration20261126000002_metering';
import { Migration20261126000003_rate_limits } from './Migration20261126000003_rate_limits';
import { Migration20261202000001_usage_upstream } from './Migration20261202000001_usage_upstream';
import { Migration20261203000001_budgets } from './Migration20261203000001_budgets';
import { Migration20261215000001_audit_log } from './Migration20261215000001_audit_log';
import { Migration20261216000001_cached_tokens } from './Migration20261216000001_cached_tokens';
import { Migration20261220000001_crash_safety } from './Migration20261220000001_crash_safety';
import { Migration20261228000001_prompt_bounds } from './Migration20261228000001_prompt_bounds';

/** Every migration, in order. Listed explicitly so the compiled app and the tests run the same set. */
export const migrationsList: MigrationObject[] = [
  { name: 'Migration20261126000001_users_auth', class: Migration20261126000001_users_auth },
  { name: 'Migration20261126000002_metering', class: Migration20261126000002_metering },
  { name: 'Migration20261126000003_rate_limits', class: Migration20261126000003_rate_limits },
  { name: 'Migration20261202000001_usage_upstream', class: Migration20261202000001_usage_upstream },
  { name: 'Migration20261203000001_budgets', class: Migration20261203000001_budgets },
  { name: 'Migration20261215000001_audit_log', class: Migration20261215000001_audit_log },
  { name: 'Migration20261216000001_cached_tokens', class: Migration20261216000001_cached_tokens },
  { name: 'Migration20261220000001_crash_safety', class: Migration20261220000001_crash_safety },
  { name: 'Migration20261228000001_prompt_bounds', class: Migration20261228000001_prompt_bounds },
];
