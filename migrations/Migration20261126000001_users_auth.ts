import { Migration } from '@mikro-orm/migrations';

export class Migration20261126000001_users_auth extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table users (
        id uuid primary key,
        email text not null,
        password_hash text not null,
        role text not null default 'USER' check (role in ('USER', 'ADMIN')),
        disabled boolean not null default false,
        token_limit integer null check (token_limit is null or token_limit >= 0),
        quota_period text not null default 'NONE' check (quota_period in ('NONE', 'DAILY', 'MONTHLY')),
        token_version integer not null default 0,
        created_at timestamptz not null default now(),
        updated_at timestamptz not null default now(),
        constraint users_email_unique unique (email),
        constraint users_email_lower check (email = lower(email))
      );`);
    // Keyset pagination of `users` walks (created_at, id).
    this.addSql(`create index users_created_at_id_index on users (created_at, id);`);

    this.addSql(`
      create table refresh_sessions (
        id uuid primary key,
        user_id uuid not null references users (id) on delete cascade,
        family_id uuid not null,
        token_hash text not null,
        token_version integer not null,
        expires_at timestamptz not null,
        replaced_at timestamptz null,
        revoked_at timestamptz null,
        created_at timestamptz not null default now(),
        constraint refresh_sessions_token_hash_unique unique (token_hash)
      );`);
    this.addSql(`create index refresh_sessions_family_id_index on refresh_sessions (family_id);`);
    this.addSql(`create index refresh_sessions_user_id_index on refresh_sessions (user_id);`);

    this.addSql(`
      create table api_keys (
        id uuid primary key,
        user_id uuid not null references users (id) on delete cascade,
        name text not null,
        prefix text not null,
        key_hash text not null,
        created_at timestamptz not null default now(),
        last_used_at timestamptz null,
        revoked_at timestamptz null,
        constraint api_keys_key_hash_unique unique (key_hash)
      );`);
    this.addSql(`create index api_keys_user_id_index on api_keys (user_id);`);

    // The user's quota state, created with the user (never lazily: a lazily created row races).
    // period_start rolls forward lazily and atomically in the statements that reserve and settle.
    this.addSql(`
      create table quota_accounts (
        user_id uuid primary key references users (id) on delete cascade,
        period_start timestamptz not null default 'epoch',
        used bigint not null default 0 check (used >= 0),
        reserved bigint not null default 0 check (reserved >= 0),
        updated_at timestamptz not null default now()
      );`);

    // Failed sign-ins per subject ('account:<email>' or 'address:<ip>'), for lockout with backoff.
    this.addSql(`
      create table login_throttle (
        subject text primary key,
        failures integer not null default 0,
        last_failure_at timestamptz not null default now(),
        locked_until timestamptz null
      );`);
  }

  override async down(): Promise<void> {
    this.addSql('drop table if exists login_throttle;');
    this.addSql('drop table if exists api_keys;');
    this.addSql('drop table if exists quota_accounts;');
    this.addSql('drop table if exists refresh_sessions;');
    this.addSql('drop table if exists users;');
  }
}
