import { rmSync } from 'node:fs';

export default async function globalTeardown(): Promise<void> {
  await globalThis.testPostgres?.stop();
  if (process.env.TEST_ROOT !== undefined) rmSync(process.env.TEST_ROOT, { recursive: true, force: true });
}
