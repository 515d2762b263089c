import { Arg, Ctx, Directive, Mutation, Resolver } from 'type-graphql';
import type { GraphQLContext } from '../context';
import type { IssuedTokens } from './auth.service';
import { CurrentViewer, type Viewer } from './viewer';
import { AuthPayload } from './auth.types';

@Resolver()
export class AuthResolver {
  @Mutation(() => AuthPayload, { description: 'Wrong email and unknown email get the same UNAUTHENTICATED answer.' })
  async login(
    @Arg('email', () => String) email: string,
    @Arg('password', () => String) password: string,
    @Ctx() ctx: GraphQLContext,
  ): Promise<IssuedTokens> {
    const issued = await ctx.services.auth.login(email, password, ctx.clientAddress);
    // The rest of this answer (the user's usage) is read as the user who just signed in.
    ctx.viewer = issued.viewer;
    return issued;
  }

  @Mutation(() => AuthPayload, { description: 'Rotates the refresh token: the one given stops working.' })
  async refresh(@Arg('refreshToken', () => String) refreshToken: string, @Ctx() ctx: GraphQLContext): Promise<IssuedTokens> {
    const issued = await ctx.services.auth.refresh(refreshToken, ctx.clientAddress);
    ctx.viewer = issued.viewer;
    return issued;
  }

  @Mutation(() => Boolean, { description: 'Ends the session of this refresh token; false if it had already ended.' })
  logout(@Arg('refreshToken', () => String) refreshToken: string, @Ctx() ctx: GraphQLContext) {
    return ctx.services.auth.logout(refreshToken, ctx.clientAddress);
  }

  @Directive('@auth')
  @Mutation(() => Boolean, { description: 'Ends every session of the user, this one included: sign in again afterwards.' })
  async changePassword(
    @Arg('currentPassword', () => String) currentPassword: string,
    @Arg('newPassword', () => String) newPassword: string,
    @CurrentViewer() viewer: Viewer,
    @Ctx() ctx: GraphQLContext,
  ): Promise<boolean> {
    await ctx.services.auth.changePassword(viewer, currentPassword, newPassword, ctx.clientAddress);
    return true;
  }
}
