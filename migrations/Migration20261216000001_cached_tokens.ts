import { Migration } from '@mikro-orm/migrations';

export class Migration20261216000001_cached_tokens extends Migration {
  override async up(): Promise<void> {
    // Prompt tokens vLLM's prefix cache held; 0 for records from before, and whenever vLLM did not report them.
    this.addSql('alter table usage_records add column cached_tokens integer not null default 0 check (cached_tokens >= 0);');
  }

  override async down(): Promise<void> {
    this.addSql('alter table usage_records drop column if exists cached_tokens;');
  }
}
