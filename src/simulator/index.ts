// A simulator of vLLM's OpenAI-compatible server, for tests and latency benchmarks.
//
// Endpoints: GET /v1/models, POST /v1/chat/completions and /v1/completions (JSON or SSE),
// POST /v1/embeddings, POST /tokenize, GET /health. With `apiKey`, only /v1/* needs
// `Authorization: Bearer <key>` and a miss is 401 {"error":"Unauthorized"}, as with `vllm serve
// --api-key`. Bodies, error shapes and messages follow vLLM's source (context-length and
// sampling errors as VLLMValidationError: 400 BadRequestError, message ending "(parameter=…,
// value=…)", `param` set; model validators' errors as 400 "Bad Request" with `param`). The
// served names (`models`) are aliases of one engine, so responses name the first one; LoRAs,
// reasoning models and embedding models answer in their own names.
//
// Tokenizer and chat template (tokenizer.ts), deliberately not tiktoken's: a token is a run of
// letters, digits and underscores, or one other non-space character. A plain chat prompt costs
//   1 (BOS) + sum over messages of (4 + tokens(content)) + 3 (generation prompt)
// (+1 with add_special_tokens; -3 with add_generation_prompt: false); `tools`, an assistant's
// `tool_calls` and a reasoning model's `enable_thinking: false` add what tokenizer.ts says.
// Text content parts are joined with "\n". `/tokenize` with `messages` (and the same `tools`
// and `chat_template_kwargs`) returns exactly that count; with `prompt` it counts the text plus
// a BOS (add_special_tokens defaults to true there, as in vLLM).
//
// Output (answer.ts, generation.ts): deterministic lorem-ipsum from `seed`, else from the
// prompt; a natural answer of 16..48 content tokens plus the EOS token, which counts as a
// completion token (finish_reason "stop"); `max_tokens` first gives "length" after exactly
// max_tokens. Honours stop, include_stop_str_in_output, min_tokens, ignore_eos, `n` (choice 0
// is what n = 1 gives; the others draw their own seeds), logprobs/top_logprobs (made-up
// values, alternatives from the lorem words). With `tools` it acts like a server run with
// `--enable-auto-tool-choice --tool-call-parser hermes`: tool_choice "auto" calls the tool the
// last user message names (else the first) unless the last message is a tool result, which it
// answers in text; "required" and a named function always call; "none" never does. Arguments
// are made from the tool's JSON schema (json-value.ts), valid against it. response_format
// json_object / json_schema gives JSON content (valid against the schema). A reasoning model
// (`reasoningModels`) first writes 16..48 tokens of `reasoning`, then `</think>` (counted),
// then its answer; `chat_template_kwargs.enable_thinking: false`, or `reasoning_effort: "none"`,
// skips the thinking. /v1/completions: prompts (a string, strings or token ids) times n
// choices, max_tokens 16 when absent, echo, legacy logprobs; `suffix` is refused as vLLM
// refuses it. /v1/embeddings on `embeddingModels` only: a deterministic unit vector of 384
// dimensions per input (`dimensions` truncates), float or base64.
//
// Prefix cache (prefix-cache.ts): prompts reuse the cached leading blocks of 16 tokens, salted
// by `cache_salt`; with `enablePromptTokensDetails` usage reports
// `prompt_tokens_details.cached_tokens` (non-stream, and the final usage chunk of a stream).
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
// Requests failed by a fault still count in stats.chatRequests (the engine saw them). Faults
// apply to /v1/completions alike; on /v1/embeddings fail-before and fail-mid answer 500 and
// hang never answers.
//
// Timing: the first token (and the role chunk sent with it) after timeToFirstTokenMs, each
// further token after interTokenLatencyMs, each non-zero delay +/- uniform jitterMs. With
// zero latencies nothing sleeps. A client that disconnects stops generation at once and is
// counted in stats.aborted.
export { countTokens } from './tokenizer';
export { startSimulator } from './server';
export type { LatencySettings, Simulator, SimulatorOptions, SimulatorStats } from './server';
