// PROTOCOL.md's default encoding: reading the server's frames, writing the client's.

const SPACE = 0x20;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * A frame from the server, read.
 * @typedef {{ kind: 'opened', how: 'ok' | 'resumed' | 'new', token: string, replay: number }
 *   | { kind: 'ack', n: number }
 *   | { kind: 'pong' }
 *   | { kind: 'message', seq: number, data: string | Uint8Array }
 *   | { kind: 'other', data: string | Uint8Array }} ServerFrame
 */

/** A decimal number without sign or leading zeros, or -1. */
function decimal(text) {
  if (!/^(0|[1-9][0-9]*)$/.test(text)) return -1;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : -1;
}

/**
 * Reads a text (string) or binary (ArrayBuffer or view) frame the server sent in a session.
 * @param {string | ArrayBuffer | ArrayBufferView} data
 * @returns {ServerFrame}
 */
export function readFrame(data) {
  if (typeof data === 'string') return readText(data);
  const bytes = data instanceof ArrayBuffer
    ? new Uint8Array(data)
    : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  // `<seq> ` is ASCII before the payload's own bytes.
  const space = bytes.indexOf(SPACE);
  if (space > 0 && space <= 20) {
    const seq = decimal(decoder.decode(bytes.subarray(0, space)));
    if (seq > 0) return { kind: 'message', seq, data: bytes.subarray(space + 1) };
  }
  return { kind: 'other', data: bytes };
}

/** @param {string} text @returns {ServerFrame} */
function readText(text) {
  if (text.startsWith('#')) {
    const parts = text.split(' ');
    switch (parts[0]) {
      case '#ok':
      case '#new':
        if (parts.length === 2 && parts[1]) {
          return { kind: 'opened', how: parts[0].slice(1), token: parts[1], replay: 0 };
        }
        break;
      case '#resumed': {
        const replay = parts.length === 3 ? decimal(parts[2]) : -1;
        if (parts[1] && replay >= 0) return { kind: 'opened', how: 'resumed', token: parts[1], replay };
        break;
      }
      case '#ack': {
        const n = parts.length === 2 ? decimal(parts[1]) : -1;
        if (n >= 0) return { kind: 'ack', n };
        break;
      }
      case '#pong':
        if (parts.length === 1) return { kind: 'pong' };
        break;
      default:
    }
    return { kind: 'other', data: text };
  }
  const space = text.indexOf(' ');
  if (space > 0) {
    const seq = decimal(text.slice(0, space));
    if (seq > 0) return { kind: 'message', seq, data: text.slice(space + 1) };
  }
  return { kind: 'other', data: text };
}

/**
 * A message of the client's as sent in a session: `<n> <payload>`, `n` 0 when unnumbered.
 * @param {number} n
 * @param {string | Uint8Array} payload
 * @returns {string | Uint8Array}
 */
export function writeMessage(n, payload) {
  if (typeof payload === 'string') return `${n} ${payload}`;
  const head = encoder.encode(`${n} `);
  const out = new Uint8Array(head.length + payload.length);
  out.set(head, 0);
  out.set(payload, head.length);
  return out;
}

/** The acknowledgement of every message up to `seq`. @param {number} seq */
export const writeAck = (seq) => `#ack ${seq}`;

/** The keep-alive the server answers with `#pong`. */
export const PING = '#ping';
