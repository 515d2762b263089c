import { Field, ID, ObjectType, registerEnumType } from 'type-graphql';
import { DateTimeResolver, JSONResolver } from 'graphql-scalars';
import { PageInfo } from '../graphql/pagination';

export enum AuditAction {
  LOGIN = 'LOGIN',
  LOGIN_FAILED = 'LOGIN_FAILED',
  LOGOUT = 'LOGOUT',
  PASSWORD_CHANGED = 'PASSWORD_CHANGED',
  USER_CREATED = 'USER_CREATED',
  USER_UPDATED = 'USER_UPDATED',
  API_KEY_CREATED = 'API_KEY_CREATED',
  API_KEY_REVOKED = 'API_KEY_REVOKED',
  REFRESH_REUSE_DETECTED = 'REFRESH_REUSE_DETECTED',
  TEAM_CREATED = 'TEAM_CREATED',
  TEAM_UPDATED = 'TEAM_UPDATED',
}
registerEnumType(AuditAction, {
  name: 'AuditAction',
  description: 'What an audit log entry records.',
  valuesConfig: {
    LOGIN_FAILED: { description: 'A refused sign-in (unknown email, wrong password, disabled user); details.reason says which.' },
    USER_UPDATED: { description: 'details.changes names each changed field with its old and new value; for a password both are "[redacted]".' },
    REFRESH_REUSE_DETECTED: { description: 'A rotated refresh token was presented again: its whole session family was ended.' },
  },
});

@ObjectType({ description: 'One recorded change, committed together with the change itself. Never holds a password, hash, token or key.' })
export class AuditEntry {
  @Field(() => ID)
  id!: string;

  @Field(() => DateTimeResolver)
  at!: Date;

  @Field(() => AuditAction)
  action!: AuditAction;

  @Field(() => ID, { nullable: true, description: 'Who did it; null for the gateway itself and for whoever presented a refused credential.' })
  actorId!: string | null;

  @Field(() => ID, { nullable: true, description: 'The user it was done to, when there is one.' })
  targetUserId!: string | null;

  @Field(() => String, { nullable: true, description: "The client's address (the connection's peer, as for sign-in throttling); null for the gateway itself." })
  ip!: string | null;

  @Field(() => JSONResolver, { nullable: true, description: 'What the action is about (see AuditAction); its shape depends on the action.' })
  details!: Readonly<Record<string, unknown>> | null;
}

@ObjectType()
export class AuditEntryEdge {
  @Field(() => String)
  cursor!: string;

  @Field(() => AuditEntry)
  node!: AuditEntry;
}

@ObjectType()
export class AuditEntryConnection {
  @Field(() => [AuditEntryEdge])
  edges!: AuditEntryEdge[];

  @Field(() => [AuditEntry], { description: 'The edges’ nodes, for clients that need no cursors.' })
  nodes!: AuditEntry[];

  @Field(() => PageInfo)
  pageInfo!: PageInfo;
}
