import { Migration } from '@mikro-orm/migrations';

export class Migration20261215000001_audit_log extends Migration {
  override async up(): Promise<void> {
    // One row per recorded change, written in the change's own transaction. No foreign keys:
    // an entry must outlive the user it names, and `on delete set null` would rewrite it.
    this.addSql(`
      create table audit_log (
        id bigint generated always as identity primary key,
        at timestamptz not null,
        action text not null check (action in (
          'LOGIN', 'LOGIN_FAILED', 'LOGOUT', 'PASSWORD_CHANGED', 'USER_CREATED', 'USER_UPDATED',
          'API_KEY_CREATED', 'API_KEY_REVOKED', 'REFRESH_REUSE_DETECTED', 'TEAM_CREATED', 'TEAM_UPDATED'
        )),
        actor_id uuid null,
        target_user_id uuid null,
        ip text null,
        details jsonb null
      );`);
    // `auditLog` pages newest first by (at, id), across everything or within one filter;
    // the retention job deletes by `at`.
    this.addSql('create index audit_log_at_index on audit_log (at desc, id desc);');
    this.addSql('create index audit_log_action_at_index on audit_log (action, at desc, id desc);');
    this.addSql('create index audit_log_actor_at_index on audit_log (actor_id, at desc, id desc);');
    this.addSql('create index audit_log_target_at_index on audit_log (target_user_id, at desc, id desc);');

    // Append-only, held by the database rather than by convention: no statement may change an
    // entry, and only the retention job, which says so in its own transaction, may delete one.
    this.addSql(`
      create function audit_log_append_only() returns trigger language plpgsql as $$
      begin
        if tg_op = 'DELETE' and current_setting('gateway.audit_prune', true) = 'on' then
          return old;
        end if;
        raise exception 'audit_log is append-only: % refused', tg_op;
      end;
      $$;`);
    this.addSql(`
      create trigger audit_log_append_only before update or delete on audit_log
        for each row execute function audit_log_append_only();`);
    this.addSql(`
      create trigger audit_log_no_truncate before truncate on audit_log
        for each statement execute function audit_log_append_only();`);
  }

  override async down(): Promise<void> {
    this.addSql('drop table if exists audit_log;');
    this.addSql('drop function if exists audit_log_append_only();');
  }
}
