import { Arg, Ctx, Directive, ID, Int, Query, Resolver } from 'type-graphql';
import type { GraphQLContext } from '../context';
import { AuditAction, AuditEntryConnection } from './audit.types';

@Resolver()
export class AuditResolver {
  @Directive('@auth(role: ADMIN)')
  @Query(() => AuditEntryConnection, { description: 'The audit log, newest first; each filter given narrows it.' })
  auditLog(
    @Ctx() ctx: GraphQLContext,
    @Arg('first', () => Int, { nullable: true, description: '1 to 500; 50 when omitted.' }) first?: number | null,
    @Arg('after', () => String, { nullable: true }) after?: string | null,
    @Arg('action', () => AuditAction, { nullable: true }) action?: AuditAction | null,
    @Arg('actorId', () => ID, { nullable: true }) actorId?: string | null,
    @Arg('targetUserId', () => ID, { nullable: true }) targetUserId?: string | null,
  ): Promise<AuditEntryConnection> {
    return ctx.services.audit.list({ first, after, action, actorId, targetUserId });
  }
}
