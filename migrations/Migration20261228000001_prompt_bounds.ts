import { Migration } from '@mikro-orm/migrations';

export class Migration20261228000001_prompt_bounds extends Migration {
  override async up(): Promise<void> {
    // `bound`: the request was reserved with an upper bound of its prompt instead of a count.
    this.addSql('alter table usage_records drop constraint usage_records_prompt_count_source_check;');
    this.addSql(`alter table usage_records add constraint usage_records_prompt_count_source_check
      check (prompt_count_source in ('tokenize', 'tiktoken', 'bound'));`);
  }

  override async down(): Promise<void> {
    this.addSql('alter table usage_records drop constraint usage_records_prompt_count_source_check;');
    this.addSql(`alter table usage_records add constraint usage_records_prompt_count_source_check
      check (prompt_count_source in ('tokenize', 'tiktoken'));`);
  }
}
