/**
 * What identifies a request line beyond its custom_id: a content fingerprint (so that a resubmitted
 * custom_id can be told apart from a changed one), its form and the endpoint it is meant for.
 * Pure functions of the line's JSON object.
 */
import { createHash } from 'node:crypto';
import { OPENAI_CHAT_COMPLETIONS_URL } from '../shared/openai-chat.js';
import type { RequestForm } from '../shared/schemas.js';

/** JSON with object keys sorted at every depth: equal objects give equal text, whatever their key order. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
}

/**
 * The fingerprint of a request line: sha256 of the canonical JSON of the whole object (model, prompt,
 * parameters, form), so that key order and whitespace do not matter and any other change does.
 */
export function requestFingerprint(obj: Record<string, unknown>): string {
  return createHash('sha256').update(canonicalJson(obj)).digest('hex').slice(0, 32);
}

/** The form of a line: an OpenAI batch line has `method`, `url` or `body` (a chat one the chat url). */
export function requestFormOf(obj: Record<string, unknown>): RequestForm {
  if (!('url' in obj || 'body' in obj || 'method' in obj)) return 'native';
  return obj.url === OPENAI_CHAT_COMPLETIONS_URL ? 'openai_chat' : 'openai';
}

/** The endpoint a line is meant for: an OpenAI line's `url`; a native line with messages is a chat. */
export function requestEndpointOf(obj: Record<string, unknown>): string {
  if (requestFormOf(obj) !== 'native') return typeof obj.url === 'string' ? obj.url : '/v1/completions';
  return 'messages' in obj ? '/v1/chat/completions' : '/v1/completions';
}
