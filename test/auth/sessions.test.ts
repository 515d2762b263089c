import {
  ChangePasswordDocument,
  LoginDocument,
  LogoutDocument,
  MeDocument,
  RefreshDocument,
  UpdateUserDocument,
  UsersDocument,
} from '../generated/graphql';
import { startWithAdmin, type TestGateway } from '../helpers/server';
import { createUser, onlyError, signIn, strongPassword, type SignedIn } from '../helpers/client';

describe('sessions', () => {
  let gateway: TestGateway;
  let admin: SignedIn;

  beforeAll(async () => {
    ({ gateway, admin } = await startWithAdmin());
  });
  afterAll(() => gateway.stop());

  const refresh = (refreshToken: string) => gateway.gql(RefreshDocument, { refreshToken });
  const me = (token: string) => gateway.gql(MeDocument, {}, token);

  describe('refresh', () => {
    it('rotates: returns a new working pair, and the token it was given stops working', async () => {
      const user = await createUser(gateway, admin.token);
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
      const user = await createUser(gateway, admin.token);
      const other = await signIn(gateway, user.email, user.password); // a second, unrelated session
      const r2 = (await refresh(user.refreshToken)).data!.refresh.refreshToken;
      const r3 = (await refresh(r2)).data!.refresh.refreshToken;

      // Someone replays the first token (stolen earlier): refused, and the family dies.
      onlyError(await refresh(user.refreshToken), 'UNAUTHENTICATED');
      onlyError(await refresh(r3), 'UNAUTHENTICATED');
      expect((await gateway.gql(LogoutDocument, { refreshToken: r3 })).data?.logout).toBe(false);

      // The user's other session is untouched.
      expect((await refresh(other.refreshToken)).errors).toBeUndefined();
    });

    it('lets only one of two simultaneous refreshes with the same token win', async () => {
      const user = await createUser(gateway, admin.token);
      const results = await Promise.all([refresh(user.refreshToken), refresh(user.refreshToken)]);
      const winners = results.filter((result) => result.errors === undefined);
      expect(winners.length).toBeLessThanOrEqual(1);
      for (const loser of results.filter((result) => result.errors !== undefined)) onlyError(loser, 'UNAUTHENTICATED');
    });

    it('refuses tokens it never issued, and access tokens', async () => {
      const user = await createUser(gateway, admin.token);
      for (const bogus of ['', 'rt_not-a-real-token', user.token, `${user.refreshToken}x`]) {
        onlyError(await refresh(bogus), 'UNAUTHENTICATED');
      }
      // None of this cost the real session anything.
      expect((await refresh(user.refreshToken)).errors).toBeUndefined();
    });
  });

  describe('logout', () => {
    it('ends the session: its refresh token stops working; a second logout answers false', async () => {
      const user = await createUser(gateway, admin.token);
      const logout = await gateway.gql(LogoutDocument, { refreshToken: user.refreshToken });
      expect(logout.errors).toBeUndefined();
      expect(logout.data?.logout).toBe(true);
      onlyError(await refresh(user.refreshToken), 'UNAUTHENTICATED');
      expect((await gateway.gql(LogoutDocument, { refreshToken: user.refreshToken })).data?.logout).toBe(false);
      expect((await gateway.gql(LogoutDocument, { refreshToken: 'rt_never-issued' })).data?.logout).toBe(false);
    });
  });

  describe('tokenVersion: every token of the user dies at once', () => {
    /** The user's access token and refresh token (two sessions' worth) both work, then both stop. */
    async function expectAllCredentialsDead(user: SignedIn, extra: SignedIn): Promise<void> {
      onlyError(await me(user.token), 'UNAUTHENTICATED');
      onlyError(await me(extra.token), 'UNAUTHENTICATED');
      onlyError(await refresh(user.refreshToken), 'UNAUTHENTICATED');
      onlyError(await refresh(extra.refreshToken), 'UNAUTHENTICATED');
    }

    async function signedInTwice(): Promise<[SignedIn, SignedIn]> {
      const user = await createUser(gateway, admin.token);
      const second = await signIn(gateway, user.email, user.password);
      expect((await me(user.token)).errors).toBeUndefined();
      expect((await me(second.token)).errors).toBeUndefined();
      return [user, second];
    }

    it('after changePassword', async () => {
      const [user, second] = await signedInTwice();
      const newPassword = strongPassword();
      const changed = await gateway.gql(ChangePasswordDocument, { currentPassword: user.password, newPassword }, user.token);
      expect(changed.errors).toBeUndefined();
      expect(changed.data?.changePassword).toBe(true);
      await expectAllCredentialsDead(user, second);

      onlyError(await gateway.gql(LoginDocument, { email: user.email, password: user.password }), 'UNAUTHENTICATED');
      const again = await signIn(gateway, user.email, newPassword);
      expect((await me(again.token)).data?.me.id).toBe(user.id);
    });

    it('refuses changePassword with a wrong current password, changing nothing', async () => {
      const user = await createUser(gateway, admin.token);
      const result = await gateway.gql(ChangePasswordDocument, { currentPassword: 'not-my-password', newPassword: strongPassword() }, user.token);
      expect(onlyError(result, 'BAD_USER_INPUT').extensions?.field).toBe('currentPassword');
      const weak = await gateway.gql(ChangePasswordDocument, { currentPassword: user.password, newPassword: 'short' }, user.token);
      expect(onlyError(weak, 'BAD_USER_INPUT').extensions?.field).toBe('newPassword');
      expect((await me(user.token)).errors).toBeUndefined();
      expect((await refresh(user.refreshToken)).errors).toBeUndefined();
    });

    it('after the user is disabled, and sign-in is refused until re-enabled', async () => {
      const [user, second] = await signedInTwice();
      const disabled = await gateway.gql(UpdateUserDocument, { id: user.id, input: { disabled: true } }, admin.token);
      expect(disabled.data?.updateUser.disabled).toBe(true);
      await expectAllCredentialsDead(user, second);
      onlyError(await gateway.gql(LoginDocument, { email: user.email, password: user.password }), 'UNAUTHENTICATED');

      await gateway.gql(UpdateUserDocument, { id: user.id, input: { disabled: false } }, admin.token);
      // Re-enabling does not bring the old tokens back.
      onlyError(await me(user.token), 'UNAUTHENTICATED');
      const again = await signIn(gateway, user.email, user.password);
      expect((await me(again.token)).errors).toBeUndefined();
    });

    it('after a role change, and the new role applies to the next sign-in', async () => {
      const [user, second] = await signedInTwice();
      onlyError(await gateway.gql(UsersDocument, {}, user.token), 'FORBIDDEN');
      const promoted = await gateway.gql(UpdateUserDocument, { id: user.id, input: { role: 'ADMIN' } }, admin.token);
      expect(promoted.data?.updateUser.role).toBe('ADMIN');
      await expectAllCredentialsDead(user, second);

      const again = await signIn(gateway, user.email, user.password);
      expect((await gateway.gql(UsersDocument, {}, again.token)).errors).toBeUndefined();
    });

    it('not after a change that does not touch credentials or role (quota)', async () => {
      const user = await createUser(gateway, admin.token);
      const updated = await gateway.gql(UpdateUserDocument, { id: user.id, input: { tokenLimit: 1000, quotaPeriod: 'DAILY' } }, admin.token);
      expect(updated.errors).toBeUndefined();
      expect((await me(user.token)).errors).toBeUndefined();
      expect((await refresh(user.refreshToken)).errors).toBeUndefined();
    });
  });
});
