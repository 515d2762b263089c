// The CPU the upstream client alone spends per call: the openai SDK over Node's global fetch (with
// an undici Agent as its dispatcher, as Upstream had it) against the same SDK over the lean fetch
// on undici's request() (src/chat/undici-fetch.ts), for a whole answer and an 8-token stream.
// The simulator runs in its own process with no latency, so this process's CPU is the client's.
// Calls are sequential; the two clients take turns, round after round, in the same run.
//   npm run bench:upstream-client [-- calls per client and shape, default 3000]
import { fork } from 'node:child_process';
import path from 'node:path';
import OpenAI from 'openai';
import type { Stream } from 'openai/streaming';
import { Agent } from 'undici';
import { undiciFetch } from '../src/chat/undici-fetch';

const CALLS = Number(process.argv[2] ?? 3000);
const ROUNDS = 6;
const WARMUP = 300;
const BODY = { model: 'sim-llama-3-8b', messages: [{ role: 'user', content: 'Count to eight.' }], max_tokens: 8, ignore_eos: true };

type Shape = 'whole' | 'stream8';
type ClientName = 'global fetch' | 'lean fetch';

async function startSimulatorChild(): Promise<{ url: string; stop: () => void }> {
  const child = fork(path.join(__dirname, 'sim-child.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const url = await new Promise<string>((resolve, reject) => {
    child.once('message', (message: { type: string; url: string }) => resolve(message.url));
    child.once('exit', (code) => reject(new Error(`the simulator exited (${code})`)));
  });
  return { url, stop: () => child.send({ id: 0, type: 'stop' }) };
}

async function callOnce(client: OpenAI, shape: Shape): Promise<void> {
  if (shape === 'whole') {
    await client.post('/chat/completions', { body: { ...BODY, stream: false } });
    return;
  }
  const stream = await client.post<Stream<unknown>>('/chat/completions', {
    body: { ...BODY, stream: true, stream_options: { include_usage: true, continuous_usage_stats: true } },
    stream: true,
  });
  for await (const _chunk of stream) {
    // Read to the end, as ChatService does.
  }
}

async function main(): Promise<void> {
  const simulator = await startSimulatorChild();
  const agents: Agent[] = [];
  const clientOf = (name: ClientName): OpenAI => {
    const agent = new Agent({ keepAliveTimeout: 30_000, connections: 256, pipelining: 1 });
    agents.push(agent);
    const transport = name === 'lean fetch' ? { fetch: undiciFetch(agent) } : { fetchOptions: { dispatcher: agent } };
    return new OpenAI({ baseURL: simulator.url, apiKey: 'none', timeout: 30_000, maxRetries: 0, ...transport });
  };
  const clients: [ClientName, OpenAI][] = [
    ['global fetch', clientOf('global fetch')],
    ['lean fetch', clientOf('lean fetch')],
  ];
  const perRound = Math.ceil(CALLS / ROUNDS);
  try {
    for (const shape of ['whole', 'stream8'] as const) {
      const totals = new Map<ClientName, { cpuMs: number; wallMs: number; calls: number }>();
      for (const [, client] of clients) for (let i = 0; i < WARMUP; i++) await callOnce(client, shape);
      for (let round = 0; round < ROUNDS; round++) {
        const order = round % 2 === 0 ? clients : [...clients].reverse();
        for (const [name, client] of order) {
          const wall0 = performance.now();
          const cpu0 = process.cpuUsage();
          for (let i = 0; i < perRound; i++) await callOnce(client, shape);
          const cpu = process.cpuUsage(cpu0);
          const total = totals.get(name) ?? { cpuMs: 0, wallMs: 0, calls: 0 };
          total.cpuMs += (cpu.user + cpu.system) / 1000;
          total.wallMs += performance.now() - wall0;
          total.calls += perRound;
          totals.set(name, total);
        }
      }
      for (const [name, total] of totals) {
        const line = `${shape.padEnd(8)} ${name.padEnd(13)} ${(total.cpuMs / total.calls).toFixed(3)} ms CPU/call  ${(total.wallMs / total.calls).toFixed(3)} ms wall/call  (${total.calls} calls)`;
        process.stdout.write(`${line}\n`);
      }
    }
  } finally {
    await Promise.all(agents.map((agent) => agent.close()));
    simulator.stop();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
