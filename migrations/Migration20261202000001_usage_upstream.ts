import { Migration } from '@mikro-orm/migrations';

export class Migration20261202000001_usage_upstream extends Migration {
  override async up(): Promise<void> {
    // The server that answered; null for records written before the gateway fronted a fleet.
    this.addSql('alter table usage_records add column upstream text;');
  }

  override async down(): Promise<void> {
    this.addSql('alter table usage_records drop column if exists upstream;');
  }
}
