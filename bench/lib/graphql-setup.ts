// The bench's setup calls to a gateway's GraphQL API: users, keys and teams made the way an
// admin makes them, so that the load runs against real accounts.

export async function gql<T>(url: string, query: string, variables: Record<string, unknown>, token?: string): Promise<T> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await response.json()) as { data?: T; errors?: unknown };
  if (body.errors !== undefined || body.data === undefined) throw new Error(`GraphQL call failed: ${JSON.stringify(body.errors ?? body)}`);
  return body.data;
}

export async function login(url: string, email: string, password: string): Promise<string> {
  const data = await gql<{ login: { accessToken: string } }>(
    url,
    'mutation ($email: String!, $password: String!) { login(email: $email, password: $password) { accessToken } }',
    { email, password },
  );
  return data.login.accessToken;
}

export interface Budget {
  readonly tokenLimit: number | null;
  readonly quotaPeriod?: 'NONE' | 'DAILY' | 'MONTHLY';
}

export interface NewUser {
  readonly email: string;
  readonly password: string;
  readonly role: 'USER' | 'ADMIN';
  readonly budget?: Budget;
  readonly teamId?: string;
}

/** Creates the user and signs them in: their access token. */
export async function createUser(url: string, adminToken: string, user: NewUser): Promise<string> {
  await gql(
    url,
    'mutation ($input: CreateUserInput!) { createUser(input: $input) { id } }',
    { input: { email: user.email, password: user.password, role: user.role, tokenLimit: null, ...user.budget, ...(user.teamId === undefined ? {} : { teamId: user.teamId }) } },
    adminToken,
  );
  return login(url, user.email, user.password);
}

/** A key of the signed-in user: its secret. */
export async function createApiKey(url: string, token: string, name: string, budget: Budget = { tokenLimit: null }): Promise<string> {
  const data = await gql<{ createApiKey: { secret: string } }>(
    url,
    'mutation ($name: String!, $tokenLimit: Int, $quotaPeriod: QuotaPeriod) { createApiKey(name: $name, tokenLimit: $tokenLimit, quotaPeriod: $quotaPeriod) { secret } }',
    { name, ...budget },
    token,
  );
  return data.createApiKey.secret;
}

export async function createTeam(url: string, adminToken: string, name: string, budget: Budget): Promise<string> {
  const data = await gql<{ createTeam: { id: string } }>(url, 'mutation ($input: CreateTeamInput!) { createTeam(input: $input) { id } }', { input: { name, ...budget } }, adminToken);
  return data.createTeam.id;
}
