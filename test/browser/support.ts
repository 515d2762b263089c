import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { chat, usageOf } from '../helpers/client';
import type { TestGateway } from '../helpers/server';

/** Debian's chromium; `.ci/run` installs it. */
export const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'];
const repoRoot = path.resolve(__dirname, '../..');
export const OUTPUT_DIR = path.join(repoRoot, 'test-output');

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

/** A chat made "elsewhere" (over HTTP from the test); resolves with the user's `usage.used` after it. */
export async function chatAs(gateway: TestGateway, token: string, content: string, maxTokens = 24): Promise<number> {
  await chat(gateway, token, content, maxTokens);
  return (await usageOf(gateway, token)).used;
}

/** How the page prints a number (its browser context runs with locale en-US). */
export const formatNumber = (value: number): string => new Intl.NumberFormat('en-US').format(value);
