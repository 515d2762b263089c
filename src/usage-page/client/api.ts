// Talking to the gateway: sign-in and token refresh, queries over plain fetch, and
// subscriptions over graphql-ws. Nothing here touches the page.
import { createClient, type Client } from 'graphql-ws';

const ENDPOINT = '/graphql';
const SESSION_KEY = 'vllm-gateway.session';

/** A GraphQL error as the gateway reports it: `code` is the contract's `extensions.code`. */
export class GatewayError extends Error {
  constructor(
    message: string,
    readonly code: string,
    /** Seconds to wait, on RATE_LIMITED. */
    readonly retryAfter: number | null = null,
  ) {
    super(message);
  }
}

interface GraphQLResponse<T> {
  data?: T | null;
  errors?: { message: string; extensions?: { code?: string; retryAfter?: number } }[];
}

/** One POST /graphql; resolves with `data`, or throws the first error as a GatewayError. */
export async function request<T>(query: string, variables: Record<string, unknown> = {}, token?: string): Promise<T> {
  let response: Response;
  try {
    response = await fetch(ENDPOINT, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ query, variables }),
    });
  } catch {
    throw new GatewayError('Cannot reach the gateway. Check your connection.', 'NETWORK_ERROR');
  }
  const body = (await response.json().catch(() => ({}))) as GraphQLResponse<T>;
  const error = body.errors?.[0];
  if (error) {
    const { code = 'INTERNAL_SERVER_ERROR', retryAfter } = error.extensions ?? {};
    throw new GatewayError(error.message, code, typeof retryAfter === 'number' ? retryAfter : null);
  }
  if (body.data == null) throw new GatewayError(`The gateway answered HTTP ${response.status}.`, 'INTERNAL_SERVER_ERROR');
  return body.data;
}

// --- Session -------------------------------------------------------------------------------
// Kept in sessionStorage: it survives a reload but not the tab, and is never sent anywhere by
// the browser on its own (unlike a cookie). The page's CSP allows no foreign script to read it.

interface Session {
  accessToken: string;
  refreshToken: string;
  expiresAt: string;
}

const TOKENS = 'accessToken refreshToken expiresAt';

let session: Session | null = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? 'null') as Session | null;
let refreshing: Promise<string> | null = null;

function keep(next: Session | null): void {
  session = next && { accessToken: next.accessToken, refreshToken: next.refreshToken, expiresAt: next.expiresAt };
  if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(SESSION_KEY);
}

export function isSignedIn(): boolean {
  return session !== null;
}

export async function signIn(email: string, password: string): Promise<void> {
  const { login } = await request<{ login: Session }>(
    `mutation SignIn($email: String!, $password: String!) { login(email: $email, password: $password) { ${TOKENS} } }`,
    { email, password },
  );
  keep(login);
}

export function signOut(): void {
  const ending = session;
  keep(null);
  // Ends the refresh token on the server too; the page does not wait for it.
  if (ending) {
    request(`mutation SignOut($refreshToken: String!) { logout(refreshToken: $refreshToken) }`, {
      refreshToken: ending.refreshToken,
    }).catch(() => undefined);
  }
}

/** A valid access token: the current one, or a fresh pair when it expires within 30 s. */
export function accessToken(): Promise<string> {
  if (!session) return Promise.reject(new GatewayError('Not signed in.', 'UNAUTHENTICATED'));
  if (Date.parse(session.expiresAt) - Date.now() > 30_000) return Promise.resolve(session.accessToken);
  // One refresh at a time: a refresh token works once, and using it twice ends the session.
  refreshing ??= request<{ refresh: Session }>(
    `mutation Refresh($refreshToken: String!) { refresh(refreshToken: $refreshToken) { ${TOKENS} } }`,
    { refreshToken: session.refreshToken },
  )
    .then(({ refresh }) => {
      keep(refresh);
      return refresh.accessToken;
    })
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

/** After the server said the access token expired: the next accessToken() refreshes it. */
export function forgetAccessToken(): void {
  if (session) keep({ ...session, expiresAt: new Date(0).toISOString() });
}

/** A query or mutation as the signed-in user. */
export async function query<T>(document: string, variables: Record<string, unknown> = {}): Promise<T> {
  return request<T>(document, variables, await accessToken());
}

// --- Subscriptions ---------------------------------------------------------------------------

export type LiveStatus = 'connecting' | 'live' | 'offline';

/**
 * A graphql-ws client for this gateway. The token travels in `connectionParams`, fetched again on
 * every (re)connection so that a reconnect uses a fresh one. `onReconnected` runs after a lost
 * connection is back: events sent meanwhile were missed, so the caller should reload.
 */
export function liveClient(onStatus: (status: LiveStatus) => void, onReconnected: () => void): Client {
  const url = new URL(ENDPOINT, location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  let connectedBefore = false;
  return createClient({
    url: url.href,
    connectionParams: async () => ({ authorization: `Bearer ${await accessToken()}` }),
    retryAttempts: 10,
    on: {
      connecting: () => onStatus('connecting'),
      connected: () => {
        onStatus('live');
        if (connectedBefore) onReconnected();
        connectedBefore = true;
      },
      closed: () => onStatus('offline'),
    },
  });
}

/** The WebSocket close code behind a subscription error, if it was a close. */
export function closeCodeOf(error: unknown): number | null {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'number' ? error.code : null;
}
