import {
  AuthChangePasswordDocument,
  AuthLoginDocument,
  AuthLogoutDocument,
  AuthMeDocument,
  AuthRefreshDocument,
  AuthUpdateUserDocument,
  AuthUsersDocument,
} from '../generated/graphql';
import { startTestGateway, type TestGateway } from '../helpers/server';
import { createUser, login, loginAdmin, onlyError, strongPassword, type SignedIn } from './support';

describe('sessions', () => {
  let gateway: TestGateway;
  let admin: SignedIn;

  beforeAll(async () => {
    gateway = await startTestGateway();
    admin = await loginAdmin(gateway);
  });
  afterAll(() => gateway.stop());

  const refresh = (refreshToken: string) => gateway.gql(AuthRefreshDocument, { refreshToken });
  const me = (token: string) => gateway.gql(AuthMeDocument, {}, token);

  describe('refresh', () => {
    it('rotates: returns a new working pair, and the token it was given stops working', async () => {
      const user = await createUser(gateway, admin.accessToken);
      const first = await refresh(user.refreshToken);
      expect(first.errors).toBeUndefined();
      const rotated = first.data!.refresh;
      expect(rotated.user).toEqual({ id: user.id, email: user.email });
      expect(rotated.refreshToken).not.toBe(user.refreshToken);
      expect(Date.parse(rotated.expiresAt)).toBeGreaterThan(Date.now() + 14 * 60_000);
      expect((await me(rotated.accessToken)).data?.me.id).toBe(user.id);

      // The new refresh token works once more…
      const second = await refresh(rotated.refreshToken);
      expect(second.errors).toBeUndefined();
      // …and the one already rotated is refused.
      onlyError(await refresh(user.refreshToken), 'UNAUTHENTICATED');
    });

    it('detects reuse: presenting a rotated token ends the whole session family, newest token included', async () => {
      const user = await createUser(gateway, admin.accessToken);
      const other = await login(gateway, user.email, user.password); // a second, unrelated session
      const r2 = (await refresh(user.refreshToken)).data!.refresh.refreshToken;
      const r3 = (await refresh(r2)).data!.refresh.refreshToken;

      // Someone replays the first token (stolen earlier): refused, and the family dies.
      onlyError(await refresh(user.refreshToken), 'UNAUTHENTICATED');
      onlyError(await refresh(r3), 'UNAUTHENTICATED');
      expect((await gateway.gql(AuthLogoutDocument, { refreshToken: r3 })).data?.logout).toBe(false);

      // The user's other session is untouched.
      expect((await refresh(other.refreshToken)).errors).toBeUndefined();
    });

    it('lets only one of two simultaneous refreshes with the same token win', async () => {
      const user = await createUser(gateway, admin.accessToken);
      const results = await Promise.all([refresh(user.refreshToken), refresh(user.refreshToken)]);
      const winners = results.filter((result) => result.errors === undefined);
      expect(winners.length).toBeLessThanOrEqual(1);
      for (const loser of results.filter((result) => result.errors !== undefined)) onlyError(loser, 'UNAUTHENTICATED');
    });

    it('refuses tokens it never issued, and access tokens', async () => {
      const user = await createUser(gateway, admin.accessToken);
      for (const bogus of ['', 'rt_not-a-real-token', user.accessToken, `${user.refreshToken}x`]) {
        onlyError(await refresh(bogus), 'UNAUTHENTICATED');
      }
      // None of this cost the real session anything.
      expect((await refresh(user.refreshToken)).errors).toBeUndefined();
    });
  });

  describe('logout', () => {
    it('ends the session: its refresh token stops working; a second logout answers false', async () => {
      const user = await createUser(gateway, admin.accessToken);
      const logout = await gateway.gql(AuthLogoutDocument, { refreshToken: user.refreshToken });
      expect(logout.errors).toBeUndefined();
      expect(logout.data?.logout).toBe(true);
      onlyError(await refresh(user.refreshToken), 'UNAUTHENTICATED');
      expect((await gateway.gql(AuthLogoutDocument, { refreshToken: user.refreshToken })).data?.logout).toBe(false);
      expect((await gateway.gql(AuthLogoutDocument, { refreshToken: 'rt_never-issued' })).data?.logout).toBe(false);
    });
  });

  describe('tokenVersion: every token of the user dies at once', () => {
    /** The user's access token and refresh token (two sessions' worth) both work, then both stop. */
    async function expectAllCredentialsDead(user: SignedIn, extra: SignedIn): Promise<void> {
      onlyError(await me(user.accessToken), 'UNAUTHENTICATED');
      onlyError(await me(extra.accessToken), 'UNAUTHENTICATED');
      onlyError(await refresh(user.refreshToken), 'UNAUTHENTICATED');
      onlyError(await refresh(extra.refreshToken), 'UNAUTHENTICATED');
    }

    async function signedInTwice(): Promise<[SignedIn, SignedIn]> {
      const user = await createUser(gateway, admin.accessToken);
      const second = await login(gateway, user.email, user.password);
      expect((await me(user.accessToken)).errors).toBeUndefined();
      expect((await me(second.accessToken)).errors).toBeUndefined();
      return [user, second];
    }

    it('after changePassword', async () => {
      const [user, second] = await signedInTwice();
      const newPassword = strongPassword();
      const changed = await gateway.gql(AuthChangePasswordDocument, { currentPassword: user.password, newPassword }, user.accessToken);
      expect(changed.errors).toBeUndefined();
      expect(changed.data?.changePassword).toBe(true);
      await expectAllCredentialsDead(user, second);

      onlyError(await gateway.gql(AuthLoginDocument, { email: user.email, password: user.password }), 'UNAUTHENTICATED');
      const again = await login(gateway, user.email, newPassword);
      expect((await me(again.accessToken)).data?.me.id).toBe(user.id);
    });

    it('refuses changePassword with a wrong current password, changing nothing', async () => {
      const user = await createUser(gateway, admin.accessToken);
      const result = await gateway.gql(AuthChangePasswordDocument, { currentPassword: 'not-my-password', newPassword: strongPassword() }, user.accessToken);
      expect(onlyError(result, 'BAD_USER_INPUT').extensions?.field).toBe('currentPassword');
      const weak = await gateway.gql(AuthChangePasswordDocument, { currentPassword: user.password, newPassword: 'short' }, user.accessToken);
      expect(onlyError(weak, 'BAD_USER_INPUT').extensions?.field).toBe('newPassword');
      expect((await me(user.accessToken)).errors).toBeUndefined();
      expect((await refresh(user.refreshToken)).errors).toBeUndefined();
    });

    it('after the user is disabled, and sign-in is refused until re-enabled', async () => {
      const [user, second] = await signedInTwice();
      const disabled = await gateway.gql(AuthUpdateUserDocument, { id: user.id, input: { disabled: true } }, admin.accessToken);
      expect(disabled.data?.updateUser.disabled).toBe(true);
      await expectAllCredentialsDead(user, second);
      onlyError(await gateway.gql(AuthLoginDocument, { email: user.email, password: user.password }), 'UNAUTHENTICATED');

      await gateway.gql(AuthUpdateUserDocument, { id: user.id, input: { disabled: false } }, admin.accessToken);
      // Re-enabling does not bring the old tokens back.
      onlyError(await me(user.accessToken), 'UNAUTHENTICATED');
      const again = await login(gateway, user.email, user.password);
      expect((await me(again.accessToken)).errors).toBeUndefined();
    });

    it('after a role change, and the new role applies to the next sign-in', async () => {
      const [user, second] = await signedInTwice();
      onlyError(await gateway.gql(AuthUsersDocument, {}, user.accessToken), 'FORBIDDEN');
      const promoted = await gateway.gql(AuthUpdateUserDocument, { id: user.id, input: { role: 'ADMIN' } }, admin.accessToken);
      expect(promoted.data?.updateUser.role).toBe('ADMIN');
      await expectAllCredentialsDead(user, second);

      const again = await login(gateway, user.email, user.password);
      expect((await gateway.gql(AuthUsersDocument, {}, again.accessToken)).errors).toBeUndefined();
    });

    it('not after a change that does not touch credentials or role (quota)', async () => {
      const user = await createUser(gateway, admin.accessToken);
      const updated = await gateway.gql(AuthUpdateUserDocument, { id: user.id, input: { tokenLimit: 1000, quotaPeriod: 'DAILY' } }, admin.accessToken);
      expect(updated.errors).toBeUndefined();
      expect((await me(user.accessToken)).errors).toBeUndefined();
      expect((await refresh(user.refreshToken)).errors).toBeUndefined();
    });
  });
});
