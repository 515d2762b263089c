// The vLLM simulator as its own process, steered by the bench over IPC so that one upstream
// (one URL, which the gateways are pointed at) can switch latency settings between scenarios.
//   parent → { id, type: 'latency', timeToFirstTokenMs, interTokenLatencyMs, jitterMs } → { id, type: 'ack' }
//   parent → { id, type: 'stats' } → { id, type: 'stats', stats }
//   parent → { id, type: 'stop' }  → exits
import { startSimulator } from '../src/simulator';

interface Command {
  id: number;
  type: 'latency' | 'stats' | 'stop';
  timeToFirstTokenMs?: number;
  interTokenLatencyMs?: number;
  jitterMs?: number;
}

async function main(): Promise<void> {
  const send = (message: unknown): void => {
    process.send?.(message);
  };
  // The routing scenario reaches one simulator as twenty distinct upstreams (127.0.0.1 to .20): it binds every address.
  const host = process.argv[2] ?? '127.0.0.1';
  const simulator = await startSimulator({ host, port: 0, timeToFirstTokenMs: 0, interTokenLatencyMs: 0, jitterMs: 0 });
  process.on('message', (raw: Command) => {
    if (raw.type === 'latency') {
      simulator.setLatency({
        timeToFirstTokenMs: raw.timeToFirstTokenMs ?? 0,
        interTokenLatencyMs: raw.interTokenLatencyMs ?? 0,
        jitterMs: raw.jitterMs ?? 0,
      });
      send({ id: raw.id, type: 'ack' });
    } else if (raw.type === 'stats') {
      send({ id: raw.id, type: 'stats', stats: { ...simulator.stats } });
    } else if (raw.type === 'stop') {
      void simulator.stop().finally(() => process.exit(0));
    }
  });
  // The bench went away without stopping us: do not linger.
  process.on('disconnect', () => {
    void simulator.stop().finally(() => process.exit(0));
  });
  process.on('SIGTERM', () => {
    void simulator.stop().finally(() => process.exit(0));
  });
  send({ type: 'ready', url: simulator.url, origin: simulator.origin });
}

main().catch((error: unknown) => {
  process.stderr.write(`simulator child: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
