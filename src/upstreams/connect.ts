import { Upstream } from '../chat/upstream';
import { redactUrl, type Config } from '../config';
import type { Logger } from '../logger';
import { startSimulator, type Simulator } from '../simulator';
import { Fleet, UpstreamMember } from './fleet';

export interface FleetConnection {
  readonly fleet: Fleet;
  /** True when no upstream is configured and the built-in simulator answers. */
  readonly builtInSimulator: boolean;
  close(): Promise<void>;
}

/** The simulator that answers when no upstream is configured, announced loudly. */
export async function startBuiltInSimulator(log: Logger): Promise<Simulator> {
  const simulator = await startSimulator({ timeToFirstTokenMs: 30, interTokenLatencyMs: 15 });
  log.warn(
    { upstream: simulator.url },
    'VLLM_BASE_URL is not set: chat is answered by the BUILT-IN vLLM SIMULATOR, not a real model. Set VLLM_BASE_URL to use vLLM.',
  );
  return simulator;
}

/**
 * Clients of the configured vLLM servers or, when none is configured, of the built-in simulator:
 * the one at `sharedSimulatorUrl` (a worker's, started by the primary), else one started here.
 */
export async function connectFleet(config: Config, log: Logger, sharedSimulatorUrl: string | null = null): Promise<FleetConnection> {
  let owned: Simulator | null = null;
  let specs = config.upstreams;
  const builtInSimulator = specs.length === 0;
  if (builtInSimulator) {
    let baseUrl = sharedSimulatorUrl;
    if (baseUrl === null) {
      owned = await startBuiltInSimulator(log);
      baseUrl = owned.url;
    }
    specs = [{ name: 'upstream-1', baseUrl, apiKey: null }];
  }
  const members = specs.map(
    (spec) => new UpstreamMember(spec.name, redactUrl(spec.baseUrl), new Upstream({ baseUrl: spec.baseUrl, apiKey: spec.apiKey, timeoutMs: config.vllm.timeoutMs, log })),
  );
  const fleet = new Fleet(members, log, config.fleet);
  await fleet.start();
  return {
    fleet,
    builtInSimulator,
    async close() {
      await fleet.close();
      await owned?.stop();
    },
  };
}
