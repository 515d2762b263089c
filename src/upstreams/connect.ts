import { Upstream } from '../chat/upstream';
import { redactUrl, type Config } from '../config';
import type { Logger } from '../logger';
import { startSimulator, type Simulator } from '../simulator';
import { Fleet, UpstreamMember } from './fleet';

export interface FleetConnection {
  readonly fleet: Fleet;
  /** The built-in simulator, when no upstream is configured. */
  readonly simulator: Simulator | null;
  close(): Promise<void>;
}

/** Clients of the configured vLLM servers, or of the built-in simulator (started here) when none is configured. */
export async function connectFleet(config: Config, log: Logger): Promise<FleetConnection> {
  let simulator: Simulator | null = null;
  let specs = config.upstreams;
  if (specs.length === 0) {
    simulator = await startSimulator({ timeToFirstTokenMs: 30, interTokenLatencyMs: 15 });
    log.warn(
      { upstream: simulator.url },
      'VLLM_BASE_URL is not set: chat is answered by the BUILT-IN vLLM SIMULATOR, not a real model. Set VLLM_BASE_URL to use vLLM.',
    );
    specs = [{ name: 'upstream-1', baseUrl: simulator.url, apiKey: null }];
  }
  const members = specs.map(
    (spec) => new UpstreamMember(spec.name, redactUrl(spec.baseUrl), new Upstream({ baseUrl: spec.baseUrl, apiKey: spec.apiKey, timeoutMs: config.vllm.timeoutMs, log })),
  );
  const fleet = new Fleet(members, log, config.fleet);
  await fleet.start();
  return {
    fleet,
    simulator,
    async close() {
      await fleet.close();
      await simulator?.stop();
    },
  };
}
