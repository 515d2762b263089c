// The live usage page: sign in, then `me.usage` as a bar that follows `usageUpdated`, your team's
// bar and your API keys' bars, the latest requests, and for admins everyone's spend. The page
// writes text only (textContent), never HTML.
import type { Client } from 'graphql-ws';
import { closeCodeOf, forgetAccessToken, GatewayError, isSignedIn, liveClient, query, signIn, signOut, type LiveStatus } from './api';

interface Usage {
  used: number;
  limit: number | null; // null: unlimited
  remaining: number | null;
  periodEnd?: string | null; // null: a lifetime quota
}
interface Team {
  id: string;
  name: string;
  usage: Usage;
}
interface Me {
  id: string;
  email: string;
  role: 'USER' | 'ADMIN';
  usage: Usage;
  team: Team | null;
}
interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  revokedAt: string | null;
  usage: Usage;
}
interface UserRow {
  id: string;
  email: string;
  usage: { used: number; limit: number | null };
}
interface UsageEvent {
  userId: string;
  teamId: string | null;
  apiKeyId: string | null;
  model: string;
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  used: number;
  remaining: number | null;
  teamUsed: number | null;
  teamRemaining: number | null;
  apiKeyUsed: number | null;
  apiKeyRemaining: number | null;
  at: string;
}

const USAGE = 'usage { used limit remaining periodEnd }';
const ME = `query Me {
  me { id email role ${USAGE} team { id name ${USAGE} } }
  apiKeys { id name prefix revokedAt ${USAGE} }
}`;
const USERS = `query Everyone($after: String) {
  users(first: 100, after: $after) { nodes { id email usage { used limit } } pageInfo { hasNextPage endCursor } }
}`;
// Without userId: your own events; for an admin, everyone's.
const USAGE_UPDATED = `subscription LiveUsage {
  usageUpdated {
    userId teamId apiKeyId model promptTokens completionTokens totalTokens used remaining
    teamUsed teamRemaining apiKeyUsed apiKeyRemaining at
  }
}`;

const MAX_EVENTS = 8;
const numbers = new Intl.NumberFormat();

let me: Me | null = null;
/** The signed-in user's keys that still work. */
const keys = new Map<string, ApiKey>();
const everyone = new Map<string, UserRow>();
let live: Client | null = null;

function el<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as T;
}

function make(tag: string, text = '', className = ''): HTMLElement {
  const element = document.createElement(tag);
  element.textContent = text;
  if (className) element.className = className;
  return element;
}

function showMessage(target: HTMLElement, message: string | null): void {
  target.textContent = message ?? '';
  target.hidden = message === null;
}

// --- Rendering -------------------------------------------------------------------------------

/** Fills a .bar element; `limit` null draws the striped "unlimited" bar. */
function fillBar(bar: HTMLElement, used: number, limit: number | null): void {
  const share = limit === null ? 0 : limit === 0 ? 1 : Math.min(1, used / limit);
  bar.classList.toggle('unlimited', limit === null);
  bar.dataset.level = share >= 0.9 ? 'high' : share >= 0.75 ? 'mid' : 'low';
  const fill = bar.firstElementChild as HTMLElement;
  fill.style.width = `${(limit === null ? 1 : share) * 100}%`; // CSSOM, which the CSP allows
}

/** Fills the figures and bar whose ids start with `prefix`: yours (no prefix) or your team's (`team-`). */
function renderUsage(usage: Usage, prefix = ''): void {
  const { used, limit, remaining, periodEnd } = usage;
  el(`${prefix}used`).textContent = numbers.format(used);
  el(`${prefix}limit`).textContent = limit === null ? 'unlimited' : numbers.format(limit);
  el(`${prefix}remaining`).textContent = remaining === null ? 'no limit' : `${numbers.format(remaining)} left`;
  el(`${prefix}period`).textContent = periodEnd ? `resets ${new Date(periodEnd).toLocaleString()}` : 'lifetime quota';
  const bar = el(`${prefix}bar`);
  bar.setAttribute('aria-valuenow', String(used));
  if (limit !== null) bar.setAttribute('aria-valuemax', String(limit));
  fillBar(bar, used, limit);
}

function renderTeam(team: Team | null): void {
  el('team').hidden = team === null;
  if (team === null) return;
  el('team-name').textContent = team.name;
  renderUsage(team.usage, 'team-');
}

/** A table row of one account: its label, used, limit and a small bar; marked when it just changed. */
function usageRow(label: string, usage: { used: number; limit: number | null }, changed: boolean): HTMLElement {
  const row = make('tr', '', changed ? 'changed' : '');
  const bar = make('div', '', 'bar mini');
  bar.append(make('div', '', 'fill'));
  fillBar(bar, usage.used, usage.limit);
  const barCell = make('td');
  barCell.append(bar);
  row.append(
    make('td', label),
    make('td', numbers.format(usage.used), 'num used'),
    make('td', usage.limit === null ? 'unlimited' : numbers.format(usage.limit), 'num'),
    barCell,
  );
  return row;
}

function renderKeys(changedId?: string): void {
  el('keys').hidden = keys.size === 0;
  el('key-rows').replaceChildren(
    ...[...keys.values()].map((key) => {
      const row = usageRow(`${key.name} (${key.prefix}…)`, key.usage, key.id === changedId);
      row.dataset.keyId = key.id;
      return row;
    }),
  );
}

function renderEvent(event: UsageEvent): void {
  const list = el('events');
  list.querySelector('.empty')?.remove();
  const item = make('li');
  item.append(
    make('time', new Date(event.at).toLocaleTimeString()),
    make('span', me?.role === 'ADMIN' ? (everyone.get(event.userId)?.email ?? event.userId) : event.model, 'who'),
    make('span', `+${numbers.format(event.totalTokens)}`, 'num'),
    make('span', `${numbers.format(event.promptTokens)} in · ${numbers.format(event.completionTokens)} out`, 'muted'),
  );
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastElementChild?.remove();
}

function renderEveryone(changedId?: string): void {
  const rows = [...everyone.values()].sort((a, b) => b.usage.used - a.usage.used || a.email.localeCompare(b.email));
  el('everyone-rows').replaceChildren(
    ...rows.map((user) => {
      const row = usageRow(user.email, user.usage, user.id === changedId);
      row.dataset.userId = user.id;
      return row;
    }),
  );
  el('user-count').textContent = `${everyone.size} ${everyone.size === 1 ? 'user' : 'users'}`;
}

function setStatus(status: LiveStatus): void {
  const badge = el('status');
  badge.textContent = status;
  badge.dataset.status = status;
}

// --- Data ------------------------------------------------------------------------------------

async function loadEveryone(): Promise<void> {
  let after: string | null = null;
  everyone.clear();
  do {
    type Page = { users: { nodes: UserRow[]; pageInfo: { hasNextPage: boolean; endCursor: string | null } } };
    const { users }: Page = await query<Page>(USERS, { after });
    for (const user of users.nodes) everyone.set(user.id, user);
    after = users.pageInfo.hasNextPage ? users.pageInfo.endCursor : null;
  } while (after !== null);
  renderEveryone();
}

async function load(): Promise<void> {
  const loaded = await query<{ me: Me; apiKeys: ApiKey[] }>(ME);
  me = loaded.me;
  keys.clear();
  for (const key of loaded.apiKeys) if (key.revokedAt === null) keys.set(key.id, key);
  el('account-email').textContent = me.email;
  el('account-role').textContent = me.role.toLowerCase();
  el('account').hidden = false;
  renderUsage(me.usage);
  renderTeam(me.team);
  renderKeys();
  el('everyone').hidden = me.role !== 'ADMIN';
  if (me.role === 'ADMIN') await loadEveryone();
}

// Events carry the new total (`used`), not a difference: applying one is idempotent, and one
// missed (say, while the page was still loading) is made good by the next.
function onEvent(event: UsageEvent): void {
  if (!me) return;
  if (event.userId === me.id) {
    me.usage = { ...me.usage, used: event.used, remaining: event.remaining };
    renderUsage(me.usage);
    // A new quota period began: reload for its new end.
    if (me.usage.periodEnd && Date.parse(me.usage.periodEnd) <= Date.now()) void load().catch(fail);
    const key = event.apiKeyId === null ? undefined : keys.get(event.apiKeyId);
    if (key && event.apiKeyUsed !== null) {
      key.usage = { ...key.usage, used: event.apiKeyUsed, remaining: event.apiKeyRemaining };
      renderKeys(key.id);
    }
  }
  // Your teammates' events reach only admins; each one carries the team's total after it.
  if (me.team && event.teamId === me.team.id && event.teamUsed !== null) {
    me.team.usage = { ...me.team.usage, used: event.teamUsed, remaining: event.teamRemaining };
    renderTeam(me.team);
  }
  if (me.role === 'ADMIN') {
    const user = everyone.get(event.userId);
    if (user) {
      user.usage.used = event.used;
      renderEveryone(user.id);
    } else {
      void loadEveryone().catch(fail); // a user created since the table was loaded
    }
  }
  renderEvent(event);
}

function startLive(): void {
  live = liveClient(setStatus, () => void load().catch(fail));
  live.subscribe<{ usageUpdated: UsageEvent }>(
    { query: USAGE_UPDATED },
    {
      next: ({ data, errors }) => {
        if (errors) showMessage(el('live-error'), `Live updates: ${errors[0]?.message}`);
        else if (data) onEvent(data.usageUpdated);
      },
      error: (error) => {
        const code = closeCodeOf(error);
        if (code === 4401) {
          // The access token expired: reconnect, which refreshes it, and catch up on what was missed.
          forgetAccessToken();
          void live?.dispose();
          startLive();
          void load().catch(fail);
        } else if (code === 4403) {
          endSession('Your session was ended (signed out elsewhere, password changed or account disabled).');
        } else {
          const reason = Array.isArray(error) ? (error[0] as { message?: string }).message : (error as { reason?: string }).reason;
          setStatus('offline');
          showMessage(el('live-error'), `Live updates stopped${reason ? `: ${reason}` : ''}. Reload the page to retry.`);
        }
      },
      complete: () => setStatus('offline'),
    },
  );
}

// --- Screens ---------------------------------------------------------------------------------

function showDashboard(): void {
  el('sign-in').hidden = true;
  el('dashboard').hidden = false;
  showMessage(el('live-error'), null);
  el('events').replaceChildren(make('li', 'Nothing yet: chat and watch this list.', 'empty'));
  load().catch(fail);
  startLive();
}

function endSession(message: string | null): void {
  void live?.dispose();
  live = null;
  me = null;
  signOut();
  el('dashboard').hidden = true;
  el('account').hidden = true;
  el('sign-in').hidden = false;
  showMessage(el('sign-in-error'), message);
}

function fail(error: unknown): void {
  if (error instanceof GatewayError && error.code === 'UNAUTHENTICATED') {
    endSession('Your session has ended. Please sign in again.');
  } else {
    showMessage(el('live-error'), error instanceof Error ? error.message : String(error));
  }
}

function signInMessage(error: unknown): string {
  if (!(error instanceof GatewayError)) return String(error);
  if (error.code === 'UNAUTHENTICATED') return 'Wrong email or password.';
  if (error.code === 'RATE_LIMITED') {
    const wait = error.retryAfter === null ? 'later' : `in ${Math.ceil(error.retryAfter)} s`;
    return `Too many sign-in attempts. Try again ${wait}.`;
  }
  return error.message;
}

const form = el<HTMLFormElement>('sign-in');
form.addEventListener('submit', (event) => {
  event.preventDefault();
  const fields = new FormData(form);
  const button = form.querySelector('button') as HTMLButtonElement;
  button.disabled = true;
  showMessage(el('sign-in-error'), null);
  signIn(String(fields.get('email')), String(fields.get('password')))
    .then(() => {
      form.reset();
      showDashboard();
    })
    .catch((error: unknown) => showMessage(el('sign-in-error'), signInMessage(error)))
    .finally(() => {
      button.disabled = false;
    });
});
el('sign-out').addEventListener('click', () => endSession(null));

if (isSignedIn()) showDashboard();
else form.hidden = false;
