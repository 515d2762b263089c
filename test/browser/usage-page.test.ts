import type { Browser, Page } from 'playwright-core';
import { requireBuilt, startTestGateway, type TestGateway } from '../helpers/server';
import { LoginDocument } from '../generated/graphql';
import { chat, createApiKey, createUser, signInAdmin, TEST_ADMIN, uniqueEmail, usageOf } from '../helpers/client';
import { createTeam, teamUsageOf } from '../budgets/support';
import { chatAs, formatNumber, launchChromium, screenshotPath, watchProblems } from './support';

describe('the live usage page at /usage, in Chromium', () => {
  let gateway: TestGateway;
  let browser: Browser;
  let admin: string;
  let origin: string;
  const problems: string[] = [];

  beforeAll(async () => {
    requireBuilt('dist/public/usage/index.html', 'dist/public/usage/usage.js', 'dist/public/usage/usage.css');
    [gateway, browser] = await Promise.all([startTestGateway(), launchChromium()]);
    origin = gateway.server.origin;
    admin = (await signInAdmin(gateway)).token;
  });
  afterAll(async () => {
    await browser?.close();
    await gateway?.stop();
  });

  async function openPage(): Promise<Page> {
    const context = await browser.newContext({ viewport: { width: 900, height: 900 }, locale: 'en-US', timezoneId: 'UTC' });
    const page = await context.newPage();
    watchProblems(page, problems);
    await page.goto(`${origin}/usage`);
    return page;
  }

  async function signIn(page: Page, email: string, password: string): Promise<void> {
    await page.fill('input[name=email]', email);
    await page.fill('input[name=password]', password);
    await page.click('button[type=submit]');
  }

  /** Waits until the element's text is `expected` (Playwright's own locators wait for presence only). */
  async function waitForText(page: Page, selector: string, expected: string | RegExp): Promise<void> {
    await page
      .waitForFunction(
        ([sel, source, flags]) => {
          // Runs in the page; the test's own TypeScript program has no DOM types.
          const page = globalThis as unknown as { document: { querySelector(selector: string): { textContent: string | null } | null } };
          const text = page.document.querySelector(sel)?.textContent ?? '';
          return flags === null ? text === source : new RegExp(source, flags).test(text);
        },
        typeof expected === 'string' ? ([selector, expected, null] as const) : ([selector, expected.source, expected.flags] as const),
        { timeout: 5_000 },
      )
      .catch(async () => {
        throw new Error(`${selector} never showed ${String(expected)}; it shows ${JSON.stringify(await page.textContent(selector))}`);
      });
  }

  it('is served with a strict CSP and its own assets only', async () => {
    const response = await fetch(`${origin}/usage`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const csp = response.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("object-src 'none'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).not.toContain('unsafe-eval');
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(response.headers.get('referrer-policy')).toBe('no-referrer');
    const html = await response.text();
    expect(html).not.toMatch(/https?:\/\//);
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/); // no inline script
    expect(html).not.toMatch(/\sstyle=/); // no inline style

    for (const [asset, type] of [
      ['/usage/usage.js', 'text/javascript; charset=utf-8'],
      ['/usage/usage.css', 'text/css; charset=utf-8'],
    ]) {
      const reply = await fetch(`${origin}${asset}`);
      expect({ asset, status: reply.status, type: reply.headers.get('content-type') }).toEqual({ asset, status: 200, type });
      expect(reply.headers.get('x-content-type-options')).toBe('nosniff');
    }
    expect((await fetch(`${origin}/usage/index.ts`)).status).toBe(404);
    expect((await fetch(`${origin}/usage`, { method: 'POST' })).status).toBe(405);
  });

  it('says clearly why a sign-in failed: wrong password, or RATE_LIMITED', async () => {
    const user = await createUser(gateway, admin, { email: uniqueEmail('careless'), tokenLimit: 1_000 });
    const locked = 'locked@example.test';
    // Five failures lock the account (the default limit); the sixth attempt is refused unseen.
    for (let attempt = 0; attempt < 5; attempt += 1) {
      const result = await gateway.gql(LoginDocument, { email: locked, password: 'not-the-password' });
      expect(result.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    }
    const page = await openPage();

    await signIn(page, user.email, 'not-the-password');
    await waitForText(page, '#sign-in-error', 'Wrong email or password.');
    await signIn(page, locked, 'not-the-password');
    await waitForText(page, '#sign-in-error', /^Too many sign-in attempts\. Try again in \d+ s\.$/);
    expect(await page.isVisible('#sign-in-error')).toBe(true);
    expect(await page.isHidden('#dashboard')).toBe(true);
    await page.screenshot({ path: screenshotPath('usage-page-sign-in-error.png') });
    await page.context().close();
  });

  it('moves the bar live after a chat made elsewhere, and updates the admin table of everyone', async () => {
    const alice = await createUser(gateway, admin, { email: uniqueEmail('alice'), tokenLimit: 2_000 });
    const bob = await createUser(gateway, admin, { email: uniqueEmail('bob'), tokenLimit: null });

    const alicePage = await openPage();
    await signIn(alicePage, alice.email, alice.password);
    await alicePage.waitForSelector('#status[data-status=live]');
    await waitForText(alicePage, '#used', '0');
    await waitForText(alicePage, '#limit', '2,000');

    const adminPage = await openPage();
    await signIn(adminPage, TEST_ADMIN.email, TEST_ADMIN.password);
    await adminPage.waitForSelector('#status[data-status=live]');
    const aliceRow = `#everyone-rows tr[data-user-id="${alice.id}"]`;
    const bobRow = `#everyone-rows tr[data-user-id="${bob.id}"]`;
    await waitForText(adminPage, `${aliceRow} td.used`, '0');
    await waitForText(adminPage, `${bobRow} td.used`, '0');

    // Alice chats from somewhere else: her bar and the admin's table follow.
    const aliceUsed = await chatAs(gateway, alice.token, 'Tell me about quotas, please.');
    expect(aliceUsed).toBeGreaterThan(0);
    await waitForText(alicePage, '#used', formatNumber(aliceUsed));
    expect(await alicePage.getAttribute('#bar', 'aria-valuenow')).toBe(String(aliceUsed));
    await waitForText(alicePage, '#remaining', `${formatNumber(2_000 - aliceUsed)} left`);
    expect(await alicePage.locator('#events li').count()).toBe(1);
    await waitForText(adminPage, `${aliceRow} td.used`, formatNumber(aliceUsed));

    // A chat of Bob's reaches the admin, and not Alice.
    const bobUsed = await chatAs(gateway, bob.token, 'And an unlimited one.', 40);
    await waitForText(adminPage, `${bobRow} td.used`, formatNumber(bobUsed));
    const aliceAgain = await chatAs(gateway, alice.token, 'One more, to move the bar again.', 60);
    await waitForText(alicePage, '#used', formatNumber(aliceAgain));
    await waitForText(adminPage, `${aliceRow} td.used`, formatNumber(aliceAgain));
    expect(await alicePage.locator('#events li').count()).toBe(2);
    expect(await adminPage.locator('#events li').count()).toBe(3);
    // The admin's own bar: unlimited, and moving too.
    await waitForText(adminPage, '#limit', 'unlimited');
    const adminUsed = await chatAs(gateway, admin, 'The admin chats too.', 16);
    await waitForText(adminPage, '#used', formatNumber(adminUsed));

    await alicePage.screenshot({ path: screenshotPath('usage-page-user.png'), fullPage: true, animations: 'disabled' });
    await adminPage.screenshot({ path: screenshotPath('usage-page.png'), fullPage: true, animations: 'disabled' });
    expect(problems).toEqual([]);
  });

  it("shows a member their team's bar and each of their keys' bars, moving with their requests", async () => {
    const team = await createTeam(gateway, admin, { name: `Platform ${Math.random().toString(36).slice(2, 6)}`, tokenLimit: 5_000 });
    const carla = await createUser(gateway, admin, { email: uniqueEmail('carla'), tokenLimit: 3_000, teamId: team.id });
    const dan = await createUser(gateway, admin, { email: uniqueEmail('dan'), teamId: team.id });
    const ci = await createApiKey(gateway, carla.token, 'ci', { tokenLimit: 1_000 });
    const laptop = await createApiKey(gateway, carla.token, 'laptop');
    const ciRow = `#key-rows tr[data-key-id="${ci.id}"]`;
    const laptopRow = `#key-rows tr[data-key-id="${laptop.id}"]`;

    const page = await openPage();
    await signIn(page, carla.email, carla.password);
    await page.waitForSelector('#status[data-status=live]');
    await waitForText(page, '#team-name', team.name);
    await waitForText(page, '#team-limit', '5,000');
    await waitForText(page, `${ciRow} td.used`, '0');
    await waitForText(page, `${laptopRow} td:nth-child(3)`, 'unlimited');

    // A request made with the ci key moves Carla's bar, the team's and the key's, not the other key's.
    await chat(gateway, ci.secret, 'With the ci key.', 20);
    const used = (await usageOf(gateway, carla.token)).used;
    await waitForText(page, '#used', formatNumber(used));
    await waitForText(page, '#team-used', formatNumber(used));
    await waitForText(page, `${ciRow} td.used`, formatNumber(used));
    await waitForText(page, '#team-remaining', `${formatNumber(5_000 - used)} left`);
    expect(await page.textContent(`${laptopRow} td.used`)).toBe('0');

    // A teammate's spend shows in the team's total with Carla's next request.
    await chat(gateway, dan.token, "Dan's turn.", 12);
    await chat(gateway, laptop.secret, 'With the laptop key.', 16);
    const teamUsed = (await teamUsageOf(gateway, carla.token)).used;
    await waitForText(page, '#team-used', formatNumber(teamUsed));
    await waitForText(page, `${laptopRow} td.used`, formatNumber((await usageOf(gateway, carla.token)).used - used));
    expect(await page.getAttribute('#team-bar', 'aria-valuenow')).toBe(String(teamUsed));

    await page.screenshot({ path: screenshotPath('usage-page-team.png'), fullPage: true, animations: 'disabled' });
    expect(problems).toEqual([]);
    await page.context().close();
  });
});
