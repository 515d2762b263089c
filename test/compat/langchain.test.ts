import { HumanMessage, ToolMessage, type BaseMessage } from '@langchain/core/messages';
import { tool } from '@langchain/core/tools';
import { ChatOpenAI } from '@langchain/openai';
import { z } from 'zod';
import { eventually } from '../helpers/client';
import { usageRecords } from '../helpers/database';
import { openaiGateway, sdkUser } from '../openai/support';

const MODEL = 'sim-llama-3-8b';

/** A client written by others: LangChain's ChatOpenAI, pointed at the gateway's /v1 and given a tool. */
describe('LangChain ChatOpenAI through the gateway', () => {
  const env = openaiGateway();

  it('bindTools: the model calls the tool, LangChain parses the call, the tool result gets an answer; both metered', async () => {
    const { user, key } = await sdkUser(env);
    const lookups: string[] = [];
    const getWeather = tool(
      ({ city }: { city: string }) => {
        lookups.push(city);
        return JSON.stringify({ city, forecast: 'sunny' });
      },
      { name: 'get_weather', description: 'The weather in a city.', schema: z.object({ city: z.string().describe('The city') }) },
    );
    const chat = new ChatOpenAI({ model: MODEL, apiKey: key.secret, configuration: { baseURL: `${env.gateway.server.origin}/v1` }, maxRetries: 0, temperature: 0 });
    const withTools = chat.bindTools([getWeather]);

    const messages: BaseMessage[] = [new HumanMessage('What is the weather in Rome? Use get_weather.')];
    const called = await withTools.invoke(messages);
    expect(called.tool_calls).toHaveLength(1);
    const [call] = called.tool_calls ?? [];
    expect(call.name).toBe('get_weather');
    expect(typeof call.args['city']).toBe('string');
    expect(called.usage_metadata?.input_tokens).toBeGreaterThan(0);

    const result: ToolMessage = await getWeather.invoke(call);
    expect(lookups).toEqual([call.args['city']]);
    const answered = await withTools.invoke([...messages, called, result]);
    expect(answered.tool_calls ?? []).toEqual([]);
    expect(String(answered.content).length).toBeGreaterThan(0);

    const rows = await eventually(async () => {
      const found = await usageRecords(env.gateway.databaseUrl, user.id);
      return found.length === 2 ? found : undefined;
    });
    expect(rows.map((row) => [row.interface, row.status, row.usage_source])).toEqual([
      ['openai', 'completed', 'reported'],
      ['openai', 'completed', 'reported'],
    ]);
    expect(rows[0].prompt_tokens).toBe(called.usage_metadata?.input_tokens);
    expect(rows[1].completion_tokens).toBe(answered.usage_metadata?.output_tokens);
  });

  it('streams a tool call that LangChain reassembles from the deltas', async () => {
    const { key } = await sdkUser(env);
    const getTime = tool(() => '12:00', { name: 'get_time', description: 'The time in a zone.', schema: z.object({ zone: z.string() }) });
    const chat = new ChatOpenAI({ model: MODEL, apiKey: key.secret, configuration: { baseURL: `${env.gateway.server.origin}/v1` }, maxRetries: 0 });
    let merged: Awaited<ReturnType<ReturnType<typeof chat.bindTools>['invoke']>> | undefined;
    for await (const chunk of await chat.bindTools([getTime]).stream('What time is it in UTC? Use get_time.')) merged = merged === undefined ? chunk : merged.concat(chunk);
    expect(merged?.tool_calls?.[0]).toMatchObject({ name: 'get_time', args: { zone: expect.any(String) } });
    expect(merged?.usage_metadata?.output_tokens).toBeGreaterThan(0);
  });
});
