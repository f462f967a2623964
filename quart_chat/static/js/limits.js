// The server's limits as the page applies them: CHAT_MAX_TEXT (characters) and CHAT_MAX_FRAME
// (bytes), read from the page, never copied. Pure.

import { textLength } from './ids.js';

const COUNTER_FROM = 0.8;   // the message box shows its length from 80% of the limit on

// A limit from a data attribute; `fallback` only when the page carries none (a stale template).
export function readLimit(value, fallback) {
  const n = Number(value);
  return Number.isInteger(n) && n > 0 ? n : fallback;
}

// What the counter beside the message box shows for a text.
export function counterView(text, max) {
  const n = textLength(text);
  return { n, show: n >= Math.ceil(max * COUNTER_FROM), over: n > max, excess: Math.max(0, n - max) };
}

// How many characters over the limit a text is (0: it may be sent).
export function excessOf(text, max) {
  return Math.max(0, textLength(text) - max);
}

export function fmt(n) { return n.toLocaleString(); }
