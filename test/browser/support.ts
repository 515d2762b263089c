import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { BrowserChatDocument, BrowserCreateUserDocument, BrowserLoginDocument, BrowserMyUsageDocument } from '../generated/graphql';
import { TEST_ADMIN, type TestGateway } from '../helpers/server';

/** Debian's chromium; `.ci/run` installs it. */
export const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'];
const repoRoot = path.resolve(__dirname, '../..');
export const OUTPUT_DIR = path.join(repoRoot, 'test-output');
export const PASSWORD = 'browser-password-123';

/**
 * Headless Chromium, or a failure that says what is missing: a browser test that skipped
 * itself quietly would pass on a machine where it never ran.
 */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`The browser tests need Debian's Chromium at ${CHROMIUM}: run \`apt-get install -y chromium\` (.ci/run does).`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 20_000 });
}

/** Fails clearly when the pages were not built (`npm test` builds first; alone, run `npm run build`). */
export function requireBuilt(...files: string[]): void {
  for (const file of files) {
    if (!existsSync(path.join(repoRoot, file))) throw new Error(`${file} is missing: run \`npm run build\` before the browser tests.`);
  }
}

export function screenshotPath(name: string): string {
  mkdirSync(OUTPUT_DIR, { recursive: true });
  return path.join(OUTPUT_DIR, name);
}

/** Uncaught errors and console errors of a page (CSP violations land there), for a final check. */
export function watchProblems(page: Page, problems: string[] = []): string[] {
  page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console: ${message.text()}`);
  });
  return problems;
}

export async function login(gateway: TestGateway, email: string, password: string): Promise<string> {
  const result = await gateway.gql(BrowserLoginDocument, { email, password });
  if (result.data == null) throw new Error(`login of ${email} failed: ${JSON.stringify(result.errors)}`);
  return result.data.login.accessToken;
}

export const adminToken = (gateway: TestGateway): Promise<string> => login(gateway, TEST_ADMIN.email, TEST_ADMIN.password);

let counter = 0;

/** A new user with password {@link PASSWORD}, signed in. */
export async function createUser(
  gateway: TestGateway,
  admin: string,
  name: string,
  tokenLimit: number | null,
): Promise<{ id: string; email: string; token: string }> {
  counter += 1;
  const email = `${name}${counter}@example.test`;
  const created = await gateway.gql(BrowserCreateUserDocument, { input: { email, password: PASSWORD, tokenLimit } }, admin);
  if (created.data == null) throw new Error(`createUser failed: ${JSON.stringify(created.errors)}`);
  return { id: created.data.createUser.id, email, token: await login(gateway, email, PASSWORD) };
}

/** A chat made "elsewhere" (over HTTP from the test); resolves with the user's `usage.used` after it. */
export async function chatAs(gateway: TestGateway, token: string, content: string, maxTokens = 24): Promise<number> {
  const chat = await gateway.gql(BrowserChatDocument, { input: { messages: [{ role: 'USER', content }], maxTokens } }, token);
  if (chat.data == null) throw new Error(`chat failed: ${JSON.stringify(chat.errors)}`);
  const usage = await gateway.gql(BrowserMyUsageDocument, {}, token);
  if (usage.data == null) throw new Error(`me.usage failed: ${JSON.stringify(usage.errors)}`);
  return usage.data.me.usage.used;
}

/** How the page prints a number (its browser context runs with locale en-US). */
export const formatNumber = (value: number): string => new Intl.NumberFormat('en-US').format(value);
