/** The one configuration object, read from the environment once at start (see config.ts). */
export { ConfigError, loadConfig, redactUrl, type Config, type JwtSecretSource } from './config';
export type { UpstreamSpec } from './upstreams';
