import { Migration } from '@mikro-orm/migrations';

export class Migration20261203000001_budgets extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table teams (
        id uuid primary key,
        name text not null check (name <> ''),
        token_limit integer null check (token_limit is null or token_limit >= 0),
        quota_period text not null default 'NONE' check (quota_period in ('NONE', 'DAILY', 'MONTHLY')),
        created_at timestamptz not null default now(),
        updated_at timestamptz not null default now()
      );`);
    // Names are unique case-insensitively: "Research" and "research" would be one team to a reader.
    this.addSql('create unique index teams_name_unique on teams (lower(name));');

    // The team's ledger, like quota_accounts for users: created with the team, never lazily.
    this.addSql(`
      create table team_quota_accounts (
        team_id uuid primary key references teams (id) on delete cascade,
        period_start timestamptz not null default 'epoch',
        used bigint not null default 0 check (used >= 0),
        reserved bigint not null default 0 check (reserved >= 0),
        updated_at timestamptz not null default now()
      );`);

    // At most one team per user.
    this.addSql('alter table users add column team_id uuid null references teams (id);');
    this.addSql('create index users_team_id_index on users (team_id) where team_id is not null;');

    // A key's own budget; unlimited (null) by default, so existing keys spend as before.
    this.addSql(`
      alter table api_keys
        add column token_limit integer null check (token_limit is null or token_limit >= 0),
        add column quota_period text not null default 'NONE' check (quota_period in ('NONE', 'DAILY', 'MONTHLY'));`);
    this.addSql(`
      create table api_key_quota_accounts (
        api_key_id uuid primary key references api_keys (id) on delete cascade,
        period_start timestamptz not null default 'epoch',
        used bigint not null default 0 check (used >= 0),
        reserved bigint not null default 0 check (reserved >= 0),
        updated_at timestamptz not null default now()
      );`);
    // Existing keys have a lifetime period: their `used` is everything recorded with them.
    this.addSql(`
      insert into api_key_quota_accounts (api_key_id, used)
      select k.id, coalesce((select sum(r.charged_tokens) from usage_records r where r.api_key_id = k.id), 0) from api_keys k;`);

    // The levels a reservation holds, so that it is settled or released where it was made even
    // if the user changes team meanwhile. No foreign keys: the row lives for one request, and a
    // key-share lock on the team's row per request would only add contention.
    this.addSql('alter table quota_reservations add column team_id uuid null, add column api_key_id uuid null;');

    // The team a record was charged to: a team's `used` is the sum of its records in the period.
    // No foreign key: teams are never deleted, and its check would lock the team's row (key
    // share) in every settlement, where all of a team's requests meet (measured: a few per
    // cent of the ledger's CPU, one request at a time).
    this.addSql('alter table usage_records add column team_id uuid null;');
    this.addSql('create index usage_records_team_created_index on usage_records (team_id, created_at desc, id desc) where team_id is not null;');
    this.addSql(
      'create index usage_records_api_key_created_index on usage_records (api_key_id, created_at desc, id desc) where api_key_id is not null;',
    );
  }

  override async down(): Promise<void> {
    this.addSql('drop index if exists usage_records_api_key_created_index;');
    this.addSql('drop index if exists usage_records_team_created_index;');
    this.addSql('alter table usage_records drop column if exists team_id;');
    this.addSql('alter table quota_reservations drop column if exists team_id, drop column if exists api_key_id;');
    this.addSql('drop table if exists api_key_quota_accounts;');
    this.addSql('alter table api_keys drop column if exists token_limit, drop column if exists quota_period;');
    this.addSql('alter table users drop column if exists team_id;');
    this.addSql('drop table if exists team_quota_accounts;');
    this.addSql('drop table if exists teams;');
  }
}
