import { Migration } from '@mikro-orm/migrations';

export class Migration20261126000002_metering extends Migration {
  override async up(): Promise<void> {
    // Tokens held by a request in flight. A row outliving its expiry means the process that
    // made it died: the reaper releases it.
    this.addSql(`
      create table quota_reservations (
        request_id uuid primary key,
        user_id uuid not null references users (id) on delete cascade,
        amount bigint not null check (amount > 0),
        created_at timestamptz not null default now(),
        expires_at timestamptz not null
      );`);
    this.addSql('create index quota_reservations_expires_at_index on quota_reservations (expires_at);');

    // One row per settled request. request_id is unique, so a request is never charged twice.
    this.addSql(`
      create table usage_records (
        id bigint generated always as identity primary key,
        request_id uuid not null,
        user_id uuid not null references users (id) on delete cascade,
        api_key_id uuid null references api_keys (id) on delete set null,
        model text not null,
        interface text not null check (interface in ('graphql', 'openai')),
        prompt_tokens integer not null check (prompt_tokens >= 0),
        completion_tokens integer not null check (completion_tokens >= 0),
        total_tokens integer not null check (total_tokens >= 0),
        charged_tokens integer not null check (charged_tokens >= 0),
        usage_source text not null check (usage_source in ('reported', 'estimated')),
        prompt_count_source text not null check (prompt_count_source in ('tokenize', 'tiktoken')),
        status text not null check (status in ('completed', 'aborted', 'upstream_error', 'timeout', 'cut')),
        latency_ms integer not null check (latency_ms >= 0),
        created_at timestamptz not null,
        constraint usage_records_request_id_unique unique (request_id)
      );`);
    // History and summaries read one user's records by time: (user_id, created_at, id) serves
    // keyset pages and ranges without touching other users' rows, at any table size.
    this.addSql('create index usage_records_user_created_index on usage_records (user_id, created_at desc, id desc);');
    // Admins read everyone's records by time.
    this.addSql('create index usage_records_created_index on usage_records (created_at desc, id desc);');
  }

  override async down(): Promise<void> {
    this.addSql('drop table if exists usage_records;');
    this.addSql('drop table if exists quota_reservations;');
  }
}
