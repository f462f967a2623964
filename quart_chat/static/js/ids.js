// What ids, room names, user names and texts look like (docs/protocol.md, "Limits and validation").
// Pure: no DOM, no state.

export const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
// How the page words the rule for a room name (the pattern above).
export const ROOM_RULE = '1–64 letters, digits, _ or -';
export const ID_RE = /^\d{1,20}-\d{1,20}$/;
const CONTROL_RE = /\p{Cc}/u;

// A stream id as a (ms, seq) pair: ids compare as pairs, never as strings ("9-0" < "10-0").
export function parseId(id) {
  const s = String(id);
  const i = s.indexOf('-');
  if (i < 0) return [Number(s) || 0, 0];
  return [Number(s.slice(0, i)) || 0, Number(s.slice(i + 1)) || 0];
}

export function cmpKey(a, b) {
  return (a[0] - b[0]) || (a[1] - b[1]);
}

// The server counts characters as code points, not UTF-16 units (an emoji is one).
export function codePoints(s) { return [...s].length; }

export function validUser(name) {
  const t = String(name || '').trim();
  const n = codePoints(t);
  return n >= 1 && n <= 32 && !CONTROL_RE.test(t);
}

// The length the server checks against CHAT_MAX_TEXT: code points once trimmed.
export function textLength(text) { return codePoints(String(text).trim()); }
