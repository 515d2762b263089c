import { Migration } from '@mikro-orm/migrations';

export class Migration20261126000003_rate_limits extends Migration {
  override async up(): Promise<void> {
    // Per-user requests and tokens per calendar minute, shared by every instance.
    this.addSql(`
      create table rate_windows (
        user_id uuid not null references users (id) on delete cascade,
        window_start timestamptz not null,
        requests integer not null default 0,
        tokens bigint not null default 0,
        primary key (user_id, window_start)
      );`);
    this.addSql('create index rate_windows_window_start_index on rate_windows (window_start);');
  }

  override async down(): Promise<void> {
    this.addSql('drop table if exists rate_windows;');
  }
}
