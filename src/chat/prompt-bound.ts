import type { Logger } from '../logger';
import type { ChatMessage, UpstreamChatParams } from './chat-request';
import { TEMPLATE_FIELDS } from './prompt-counter';
import { UpstreamRejectedError, type Upstream } from './upstream';

/** What a prompt's bound is computed from: the UTF-8 bytes of its texts, and how many messages hold them. */
export interface BoundInputs {
  readonly bytes: number;
  readonly messages: number;
}

/**
 * The roles the probes measure. Another role's turn (tool, developer, a template's own) may be
 * rendered with any overhead, so a chat with one is counted exactly.
 */
const PROBED_ROLES = new Set(['system', 'user', 'assistant']);

/**
 * Body fields that change what vLLM's template renders besides the messages themselves: a chat
 * with any of them is counted exactly. `documents` reaches vLLM's template though /tokenize
 * takes none, so only an exact count of the chat itself would know it.
 */
const TEMPLATE_INPUTS = [...TEMPLATE_FIELDS.filter((field) => field !== 'messages'), 'chat_template_kwargs', 'reasoning_effort', 'documents'];

/** After a failed calibration, how long a model is counted exactly before its template is probed again. */
const PROBE_RETRY_MS = 60_000;

/** A part of a message's content that is text and nothing else (no cache hints, no media). */
function textPart(part: Readonly<Record<string, unknown>>): string | null {
  if (part['type'] !== 'text' || typeof part['text'] !== 'string') return null;
  return Object.keys(part).every((key) => key === 'type' || key === 'text' || part[key] === undefined) ? part['text'] : null;
}

/** The UTF-8 bytes of a message that is plain text of a probed role, as vLLM renders its content; null for any other. */
function messageBytes(message: ChatMessage): number | null {
  if (!PROBED_ROLES.has(message.role)) return null;
  // A name, tool calls, an earlier turn's reasoning: templates render them, the probes do not.
  if (!Object.keys(message).every((key) => key === 'role' || key === 'content' || message[key] === undefined)) return null;
  const { content } = message;
  if (typeof content === 'string') return Buffer.byteLength(content, 'utf8');
  if (!Array.isArray(content)) return null;
  let bytes = 0;
  for (const part of content) {
    const text = textPart(part);
    if (text === null) return null;
    bytes += Buffer.byteLength(text, 'utf8');
  }
  // vLLM's "string" content format joins text parts with newlines, a byte each.
  return bytes + Math.max(content.length - 1, 0);
}

/**
 * What a chat's bound is computed from, or null when no bound may stand for its count: only
 * plain-text messages of the probed roles, nothing else the template renders. Tokens never
 * outnumber UTF-8 bytes for byte-level and byte-fallback tokenizers (a token is at least one
 * byte), so the bytes bound the content; the template's own tokens are what the probes measure.
 */
export function boundInputsOf(body: UpstreamChatParams): BoundInputs | null {
  if (TEMPLATE_INPUTS.some((field) => body[field] !== undefined)) return null;
  let bytes = 0;
  for (const message of body.messages) {
    const counted = messageBytes(message);
    if (counted === null) return null;
    bytes += counted;
  }
  return { bytes, messages: body.messages.length };
}

/** The template's tokens of a chat: `base` once (BOS, generation prompt, a default system prompt), `perMessage` for each turn. */
export interface Calibration {
  readonly base: number;
  readonly perMessage: number;
}

type ModelCalibration =
  | { readonly state: 'probing' }
  | { readonly state: 'failed'; readonly retryAt: number }
  | { readonly state: 'calibrated'; calibration: Calibration; corrected: boolean };

/** `role: ""` turns, for the probes. */
function emptyTurns(...roles: string[]): ChatMessage[] {
  return roles.map((role) => ({ role, content: '' }));
}

/**
 * The template's overhead from /tokenize counts of empty turns. The increment of each role is
 * measured after another turn of it where it matters: a template that injects a default
 * system prompt when there is none makes the first system turn look cheaper than it is, and
 * that default is part of `base` (measured with no system turn). A shape the template refuses
 * (e.g. two system turns) would be refused in a chat too, and measures nothing.
 */
async function probe(upstream: Upstream, model: string): Promise<Calibration | null> {
  const count = async (messages: ChatMessage[]): Promise<number | null> => {
    try {
      return await upstream.tokenize({ model, messages });
    } catch (error) {
      if (error instanceof UpstreamRejectedError) return null;
      throw error;
    }
  };
  const [user, userAssistant, userAssistantUser, systemUser, systemSystemUser] = await Promise.all([
    count(emptyTurns('user')),
    count(emptyTurns('user', 'assistant')),
    count(emptyTurns('user', 'assistant', 'user')),
    count(emptyTurns('system', 'user')),
    count(emptyTurns('system', 'system', 'user')),
  ]);
  if (user === null || userAssistant === null || userAssistantUser === null) return null;
  const userTurn = userAssistantUser - userAssistant;
  const increments = [userTurn, userAssistant - user];
  if (systemUser !== null) increments.push(systemUser - user);
  if (systemUser !== null && systemSystemUser !== null) increments.push(systemSystemUser - systemUser);
  return { base: Math.max(user - userTurn, 0), perMessage: Math.max(0, ...increments) };
}

/**
 * Per model, a safe upper bound of a plain chat's prompt tokens without asking /tokenize:
 * UTF-8 bytes of the contents + base + perMessage × messages, the overhead learned from
 * /tokenize answers once per model, in the background. Every exact count seen later (a
 * /tokenize the gateway still makes, vLLM's reported prompt_tokens) checks it, and one above
 * the bound raises the calibration to cover it. A model not calibrated has no bound.
 */
export class PromptBounds {
  private readonly models = new Map<string, ModelCalibration>();

  constructor(private readonly log: Logger) {}

  /** The bound of a chat with `inputs` for `model`, or null while the model has no calibration. */
  bound(model: string, inputs: BoundInputs): number | null {
    const entry = this.models.get(model);
    if (entry?.state !== 'calibrated') return null;
    return inputs.bytes + entry.calibration.base + entry.calibration.perMessage * inputs.messages;
  }

  /**
   * Probes `model`'s template with `upstream`, which serves it, in the background, unless it is
   * calibrated, being probed, or was probed in vain less than a minute ago.
   */
  calibrate(model: string, upstream: Upstream): void {
    const entry = this.models.get(model);
    if (entry !== undefined && (entry.state !== 'failed' || performance.now() < entry.retryAt)) return;
    this.models.set(model, { state: 'probing' });
    void probe(upstream, model).then(
      (calibration) => {
        if (calibration === null) {
          this.models.set(model, { state: 'failed', retryAt: performance.now() + PROBE_RETRY_MS });
          this.log.warn({ model }, 'the upstream counts no empty chat (no /tokenize, or its template refuses one): prompts of this model are counted exactly for now');
          return;
        }
        this.models.set(model, { state: 'calibrated', calibration, corrected: false });
        this.log.info({ model, ...calibration }, 'calibrated the prompt bound of a model');
      },
      (error: unknown) => {
        this.models.set(model, { state: 'failed', retryAt: performance.now() + PROBE_RETRY_MS });
        this.log.warn({ err: error, model }, 'could not probe the chat template: prompts of this model are counted exactly for now');
      },
    );
  }

  /**
   * An exact count of a chat with `inputs`: when above its bound, the template's overhead is
   * larger than probed, and each message's share is raised so that this chat's bound covers it
   * (and any like it, of however many messages).
   */
  observe(model: string, inputs: BoundInputs, exact: number): void {
    const entry = this.models.get(model);
    if (entry?.state !== 'calibrated') return;
    const bound = this.bound(model, inputs) ?? exact;
    if (exact <= bound) return;
    const { calibration } = entry;
    entry.calibration = { base: calibration.base, perMessage: calibration.perMessage + Math.ceil((exact - bound) / Math.max(inputs.messages, 1)) };
    if (!entry.corrected) {
      entry.corrected = true;
      this.log.warn({ model, exact, bound, ...entry.calibration }, "a prompt took more tokens than its bound: the model's template is larger than probed; raised its calibration");
    }
  }
}
