/** What the console says once the gateway serves: where, and the first admin's password if one was generated. */
export interface Banner {
  readonly version: string;
  readonly url: string;
  readonly wsUrl: string;
  /** Processes serving the port. */
  readonly workers: number;
  readonly adminBootstrap: { readonly email: string; readonly generatedPassword: string | null } | null;
}

/** One write, so that whoever reads the output for the URL finds the password beside it. */
export function printBanner(banner: Banner): void {
  const lines = [`vLLM gateway ${banner.version} is up.`, `  GraphiQL:  ${banner.url}`, `  WebSocket: ${banner.wsUrl}`];
  if (banner.workers > 1) lines.push(`  Workers:   ${banner.workers} processes on one port`);
  lines.push('');
  if (banner.adminBootstrap?.generatedPassword != null) {
    lines.push(
      `  First admin created: ${banner.adminBootstrap.email}`,
      `  Password (shown this once, change it with changePassword): ${banner.adminBootstrap.generatedPassword}`,
      '',
    );
  }
  process.stdout.write(`\n${lines.join('\n')}\n`);
}
