// A simulator of vLLM's OpenAI-compatible server, for tests and latency benchmarks.
//
// Endpoints: GET /v1/models, POST /v1/chat/completions (JSON or SSE), POST /tokenize,
// GET /health. With `apiKey`, only /v1/* needs `Authorization: Bearer <key>` and a miss is
// 401 {"error":"Unauthorized"}, as with `vllm serve --api-key`. Bodies, error shapes and
// messages follow vLLM's source (context-length and sampling errors as VLLMValidationError:
// 400 BadRequestError, message ending "(parameter=…, value=…)", `param` set). All served
// names are aliases of one engine, so responses name the first one, as vLLM's do.
//
// Tokenizer (tokenizer.ts), deliberately not tiktoken's: a token is a run of letters, digits
// and underscores, or one other non-space character. A chat prompt costs
//   1 (BOS) + sum over messages of (4 + tokens(content)) + 3 (generation prompt)
// (+1 with add_special_tokens; -3 with add_generation_prompt: false). Text content parts are
// joined with "\n"; other message fields are not counted. `/tokenize` with `messages` returns
// exactly that count; with `prompt` it counts the text plus a BOS (add_special_tokens
// defaults to true there, as in vLLM).
//
// Output (generation.ts): deterministic lorem-ipsum from `seed`, else from the prompt; a
// natural answer of 16..48 content tokens plus the EOS token, which counts as a completion
// token (finish_reason "stop"); `max_tokens` first gives "length" after exactly max_tokens.
// Honours stop, include_stop_str_in_output, min_tokens, ignore_eos. Logprobs are not
// simulated and n must be 1.
//
// Fault injection. A fault spec is `<fault>` or `<fault>:<N>`:
//   fail-before  HTTP 500 {"error":{…,"type":"InternalServerError"}} before any token.
//   fail-mid     after N tokens (default 3): a stream gets `data: {"error":{…}}` then
//                `data: [DONE]` on its HTTP 200; a non-stream request gets HTTP 500. If the
//                answer ends before N tokens, the request completes normally.
//   hang         after N tokens (default 0: a stream gets its headers and nothing else) the
//                request produces nothing more until the client disconnects (counted aborted).
//   no-usage     the stream never carries usage: no final usage chunk even when
//                stream_options.include_usage asks, no continuous usage. Non-stream is
//                unaffected (vLLM always reports usage there).
// Choose it per request with the header `x-sim-fault: <spec>`, or with the model name
// `<served model>@<spec>`, e.g. `sim-llama-3-8b@fail-mid:5` (accepted wherever the served
// name is). The header wins over the model suffix; `x-sim-fault-after: N` overrides N.
// Requests failed by a fault still count in stats.chatRequests (the engine saw them).
//
// Timing: the first token (and the role chunk sent with it) after timeToFirstTokenMs, each
// further token after interTokenLatencyMs, each non-zero delay +/- uniform jitterMs. With
// zero latencies nothing sleeps. A client that disconnects stops generation at once and is
// counted in stats.aborted.
export { countTokens } from './tokenizer';
export { startSimulator } from './server';
export type { LatencySettings, Simulator, SimulatorOptions, SimulatorStats } from './server';
