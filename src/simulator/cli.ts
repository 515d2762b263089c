// node dist/src/simulator/cli.js --port 8000 --model a --model b --lora adapter --ttft-ms 50 --itl-ms 10 \
//   --jitter-ms 2 --max-model-len 4096 --api-key KEY [--host 127.0.0.1] [--no-tokenize] \
//   [--reasoning-model NAME]... [--tagged-content-model NAME]... [--embedding-model NAME]... [--no-auto-tool-choice] [--enable-prompt-tokens-details]
import { parseArgs } from 'node:util';

import { startSimulator, type SimulatorOptions } from './index';

const USAGE =
  'usage: cli.js [--host 127.0.0.1] [--port 8000] [--model NAME]... [--max-model-len 4096] ' +
  '[--ttft-ms 0] [--itl-ms 0] [--jitter-ms 0] [--api-key KEY] [--no-tokenize] [--reasoning-model NAME]... [--tagged-content-model NAME]... ' +
  '[--embedding-model NAME]... [--no-auto-tool-choice] [--enable-prompt-tokens-details]';

function nonNegativeInteger(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw new Error(`--${name} must be a whole number, got '${value}'`);
  return Number(value);
}

function parseOptions(argv: string[]): SimulatorOptions {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      host: { type: 'string' },
      port: { type: 'string' },
      model: { type: 'string', multiple: true },
      lora: { type: 'string', multiple: true },
      'max-model-len': { type: 'string' },
      'ttft-ms': { type: 'string' },
      'itl-ms': { type: 'string' },
      'jitter-ms': { type: 'string' },
      'api-key': { type: 'string' },
      'no-tokenize': { type: 'boolean' },
      'reasoning-model': { type: 'string', multiple: true },
      'tagged-content-model': { type: 'string', multiple: true },
      'embedding-model': { type: 'string', multiple: true },
      'no-auto-tool-choice': { type: 'boolean' },
      'enable-prompt-tokens-details': { type: 'boolean' },
    },
  });
  return {
    host: values.host,
    port: nonNegativeInteger('port', values.port) ?? 8000,
    models: values.model,
    loras: values.lora,
    maxModelLen: nonNegativeInteger('max-model-len', values['max-model-len']),
    timeToFirstTokenMs: nonNegativeInteger('ttft-ms', values['ttft-ms']),
    interTokenLatencyMs: nonNegativeInteger('itl-ms', values['itl-ms']),
    jitterMs: nonNegativeInteger('jitter-ms', values['jitter-ms']),
    apiKey: values['api-key'],
    tokenizeEndpoint: values['no-tokenize'] !== true,
    reasoningModels: values['reasoning-model'],
    taggedContentModels: values['tagged-content-model'],
    embeddingModels: values['embedding-model'],
    autoToolChoice: values['no-auto-tool-choice'] !== true,
    enablePromptTokensDetails: values['enable-prompt-tokens-details'] === true,
  };
}

async function main(): Promise<void> {
  let options: SimulatorOptions;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n${USAGE}\n`);
    process.exitCode = 2;
    return;
  }
  const simulator = await startSimulator(options);
  process.stdout.write(`vLLM simulator listening on ${simulator.url}\n`);
  const shutDown = (): void => {
    process.off('SIGINT', shutDown);
    process.off('SIGTERM', shutDown);
    simulator.stop().catch((error: unknown) => {
      process.stderr.write(`stopping failed: ${String(error)}\n`);
      process.exitCode = 1;
    });
  };
  process.on('SIGINT', shutDown);
  process.on('SIGTERM', shutDown);
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
