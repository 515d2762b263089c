import type { Browser, Locator, Page } from 'playwright-core';
import { requireBuilt, startTestGateway, type TestGateway } from '../helpers/server';
import { createUser, signInAdmin, uniqueEmail } from '../helpers/client';
import { chatAs, launchChromium, screenshotPath, watchProblems } from './support';

/** Replaces a Monaco editor's text by typing, as a person would. */
async function typeInto(page: Page, editor: Locator, text: string): Promise<void> {
  await editor.locator('.view-lines').click();
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.press('Backspace');
  await page.keyboard.type(text);
  // Monaco closes brackets and quotes as they are typed; whatever it added beyond them goes.
  await page.keyboard.press('Shift+ControlOrMeta+End');
  await page.keyboard.press('Delete');
  // Close the completion list, which opens (asynchronously) over the toolbar as one types.
  const suggestions = editor.locator('.suggest-widget.visible');
  for (let attempt = 0; attempt < 20; attempt += 1) {
    await page.waitForTimeout(50);
    if ((await suggestions.count()) === 0) break;
    await page.keyboard.press('Escape');
  }
  expect(await textOf(editor)).toBe(text);
  await page.keyboard.press('Home'); // back to the start of the line, for the screenshot
}

/** A Monaco editor's text as displayed (Monaco renders spaces as no-break spaces). */
async function textOf(editor: Locator): Promise<string> {
  return (await editor.locator('.view-lines').innerText()).replace(/\u00a0/g, ' ');
}

async function waitForText(editor: Locator, pattern: RegExp, timeoutMs = 10_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let text = '';
  while (Date.now() < deadline) {
    text = await textOf(editor);
    if (pattern.test(text)) return text;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${pattern} in the editor, which shows:\n${text}`);
}

describe('GraphiQL at /graphql, in Chromium', () => {
  let gateway: TestGateway;
  let browser: Browser;

  beforeAll(async () => {
    requireBuilt('dist/public/graphiql/graphiql.js');
    [gateway, browser] = await Promise.all([startTestGateway(), launchChromium()]);
  });
  afterAll(async () => {
    await browser?.close();
    await gateway?.stop();
  });

  it('runs a query with an Authorization header, and a subscription that receives a usage event', async () => {
    const admin = (await signInAdmin(gateway)).token;
    const user = await createUser(gateway, admin, { email: uniqueEmail('graphiql'), tokenLimit: 50_000 });
    const context = await browser.newContext({ viewport: { width: 1280, height: 820 }, locale: 'en-US' });
    context.setDefaultTimeout(10_000);
    const page = await context.newPage();
    const problems = watchProblems(page);

    // Without its script GraphiQL never renders; say so rather than time out on a blank page.
    const script = await fetch(`${gateway.server.origin}/graphiql/graphiql.js`);
    expect({ '/graphiql/graphiql.js': script.status }).toEqual({ '/graphiql/graphiql.js': 200 });
    await page.goto(gateway.server.url);
    const operation = page.locator('.graphiql-query-editor .graphiql-editor');
    const headers = page.locator('.graphiql-editor-tool .graphiql-editor:not(.hidden)');
    const response = page.locator('.graphiql-response .result-window');
    await operation.locator('.view-lines').waitFor();

    await typeInto(page, headers, `{ "Authorization": "Bearer ${user.token}" }`);
    expect(JSON.parse(await textOf(headers))).toEqual({ Authorization: `Bearer ${user.token}` });
    await typeInto(page, operation, '{ me { email } }');
    await page.locator('.graphiql-execute-button').click();
    const answer = await waitForText(response, /"email"/);
    expect(JSON.parse(answer)).toEqual({ data: { me: { email: user.email } } });

    // The subscription runs over the page's own WebSocket; wait until it has been sent.
    const subscribed = new Promise<void>((resolve) => {
      page.on('websocket', (socket) =>
        socket.on('framesent', ({ payload }) => {
          if (String(payload).includes('"subscribe"')) resolve();
        }),
      );
    });
    await typeInto(page, operation, 'subscription { usageUpdated { used } }');
    await page.locator('.graphiql-execute-button').click();
    await subscribed;

    const used = await chatAs(gateway, user.token, 'Hello from the GraphiQL test');
    expect(used).toBeGreaterThan(0);
    const event = await waitForText(response, /"used"/);
    expect(JSON.parse(event)).toEqual({ data: { usageUpdated: { used } } });

    await page.screenshot({ path: screenshotPath('graphiql.png') });
    expect(problems).toEqual([]);
    await context.close();
  });
});
