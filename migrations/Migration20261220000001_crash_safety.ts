import { Migration } from '@mikro-orm/migrations';

export class Migration20261220000001_crash_safety extends Migration {
  override async up(): Promise<void> {
    // Every running gateway process: another instance judges it gone when its session no longer
    // holds the advisory lock on `lock_key` and it has not been seen for a while.
    this.addSql('create sequence gateway_instance_lock_keys as integer cycle;');
    this.addSql(`
      create table gateway_instances (
        id uuid primary key,
        lock_key integer not null,
        host text not null,
        pid integer not null,
        started_at timestamptz not null default now(),
        seen_at timestamptz not null default now()
      );`);
    // What an orphaned reservation's record needs, written when it is made, and what its stream
    // had delivered at the last checkpoint. Rows of instances from before carry no instance and
    // are still judged by expires_at.
    this.addSql(`
      alter table quota_reservations
        add column instance_id uuid,
        add column model text,
        add column interface text,
        add column upstream text,
        add column prompt_count_source text,
        add column prompt_tokens bigint not null default 0 check (prompt_tokens >= 0),
        add column delivered_tokens bigint not null default 0 check (delivered_tokens >= 0);`);
    this.addSql('create index quota_reservations_instance_index on quota_reservations (instance_id);');
    this.addSql('alter table usage_records drop constraint usage_records_status_check;');
    this.addSql(`alter table usage_records add constraint usage_records_status_check
      check (status in ('completed', 'aborted', 'upstream_error', 'timeout', 'cut', 'interrupted'));`);
  }

  override async down(): Promise<void> {
    this.addSql('alter table usage_records drop constraint usage_records_status_check;');
    this.addSql(`alter table usage_records add constraint usage_records_status_check
      check (status in ('completed', 'aborted', 'upstream_error', 'timeout', 'cut'));`);
    this.addSql('drop index if exists quota_reservations_instance_index;');
    this.addSql(`alter table quota_reservations drop column instance_id, drop column model, drop column interface, drop column upstream,
      drop column prompt_count_source, drop column prompt_tokens, drop column delivered_tokens;`);
    this.addSql('drop table if exists gateway_instances;');
    this.addSql('drop sequence if exists gateway_instance_lock_keys;');
  }
}
