import { Arg, Ctx, Directive, FieldResolver, ID, Int, Mutation, Query, Resolver, Root } from 'type-graphql';
import type { GraphQLContext } from '../context';
import { QuotaUsage } from '../quota/quota.types';
import { loadUsage } from '../quota/usage-loader';
import { QuotaPeriod } from '../users/user.entity';
import type { ApiKey } from './api-key.entity';
import { ApiKeyType, CreatedApiKey, UpdateApiKeyInput } from './auth.types';
import { CurrentViewer, type Viewer } from './viewer';

@Resolver(() => ApiKeyType)
export class ApiKeyResolver {
  @Directive('@auth')
  @Mutation(() => CreatedApiKey, { description: "The secret is in this answer only. tokenLimit gives the key a budget of its own, within the user's." })
  createApiKey(
    @Arg('name', () => String) name: string,
    @CurrentViewer() viewer: Viewer,
    @Ctx() ctx: GraphQLContext,
    @Arg('tokenLimit', () => Int, { nullable: true, description: 'null or omitted: unlimited.' }) tokenLimit?: number | null,
    @Arg('quotaPeriod', () => QuotaPeriod, { nullable: true, description: 'NONE when omitted.' }) quotaPeriod?: QuotaPeriod | null,
  ) {
    return ctx.services.apiKeys.create(viewer, { name, tokenLimit, quotaPeriod }, ctx.clientAddress);
  }

  @Directive('@auth')
  @Mutation(() => ApiKeyType, { description: "Renames one of your keys or changes its budget (an admin: anyone's)." })
  updateApiKey(
    @Arg('id', () => ID) id: string,
    @Arg('input', () => UpdateApiKeyInput) input: UpdateApiKeyInput,
    @CurrentViewer() viewer: Viewer,
    @Ctx() ctx: GraphQLContext,
  ): Promise<ApiKey> {
    return ctx.services.apiKeys.update(viewer, id, input);
  }

  @Directive('@auth')
  @Mutation(() => Boolean, { description: 'False when the key was already revoked.' })
  revokeApiKey(@Arg('id', () => ID) id: string, @CurrentViewer() viewer: Viewer, @Ctx() ctx: GraphQLContext) {
    return ctx.services.apiKeys.revoke(viewer, id, ctx.clientAddress);
  }

  @Directive('@auth')
  @Query(() => [ApiKeyType], { description: 'Your own keys, newest first, revoked ones included.' })
  apiKeys(@CurrentViewer() viewer: Viewer, @Ctx() ctx: GraphQLContext) {
    return ctx.services.apiKeys.list(viewer);
  }

  @FieldResolver(() => QuotaUsage, { description: "Spend with this key in the current period; its owner's or an admin's to see." })
  usage(@Root() apiKey: ApiKey, @CurrentViewer() viewer: Viewer, @Ctx() ctx: GraphQLContext): Promise<QuotaUsage> {
    ctx.services.apiKeys.assertMaySeeUsage(viewer, apiKey);
    return loadUsage(ctx, { scope: 'API_KEY', id: apiKey.id, tokenLimit: apiKey.tokenLimit, quotaPeriod: apiKey.quotaPeriod });
  }
}
