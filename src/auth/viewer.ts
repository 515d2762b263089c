import { createParameterDecorator } from 'type-graphql';
import type { Role } from '../users/user.entity';

/** Who is calling, as established by `@auth` from an access token or an API key. */
export interface Viewer {
  readonly userId: string;
  readonly email: string;
  readonly role: Role;
  readonly tokenVersion: number;
  readonly via: 'access-token' | 'api-key';
  readonly apiKeyId: string | null;
  /** When the credential stops being valid (access token `exp`); null for API keys. */
  readonly expiresAt: Date | null;
}

/** The viewer `@auth` established; a field without `@auth` asking for it is a programming error. */
export function viewerOf(ctx: { viewer?: Viewer }): Viewer {
  if (ctx.viewer === undefined) throw new Error('viewerOf called on a field without @auth');
  return ctx.viewer;
}

/** The caller, as a resolver parameter: `me(@CurrentViewer() viewer: Viewer)`. Needs `@auth` on the field. */
export function CurrentViewer() {
  return createParameterDecorator<{ viewer?: Viewer }>(({ context }) => viewerOf(context));
}
