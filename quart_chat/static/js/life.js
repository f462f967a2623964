// A message's life after it is sent (docs/protocol.md, "A message's life"): the
// change frames (message_edited, message_deleted, reaction) applied to the page's message
// objects, the reaction chips, the reply quote's line, and which message Up edits.
// Pure: no DOM, no socket.

import { ID_RE, cmpKey, codePoints, parseId } from './ids.js';

export const MAX_EMOJI_PER_MESSAGE = 20;   // distinct emoji on one message (the server's cap)
const EMOJI_MAX_CHARS = 16;
const NAMES_LISTED = 8;                    // more who reacted are counted, not named
const QUOTE_CHARS = 100;

// The picker's emoji, with the words a screen reader says for each.
export const COMMON_EMOJI = [
  ['👍', 'thumbs up'], ['❤️', 'heart'], ['😂', 'laughing'], ['🎉', 'party'],
  ['😮', 'surprised'], ['😢', 'sad'], ['🙏', 'thank you'], ['👀', 'eyes'],
  ['🔥', 'fire'], ['✅', 'done'], ['👎', 'thumbs down'], ['🚀', 'rocket'],
];

const BAD_EMOJI_RE = /[\s\p{Cc}]/u;

// What the server accepts as an emoji: 1-16 characters, no white space or control characters.
export function validEmoji(e) {
  if (typeof e !== 'string') return false;
  const n = codePoints(e);
  return n >= 1 && n <= EMOJI_MAX_CHARS && !BAD_EMOJI_RE.test(e);
}

// A change frame as {kind: 'edit' | 'delete' | 'reaction', room, id, changeId, ...}, or null
// when a field is missing or malformed (such a frame is ignored).
export function changeOf(f) {
  if (!f || typeof f.room !== 'string' || typeof f.id !== 'string' || !ID_RE.test(f.id)) return null;
  const changeId = typeof f.change_id === 'string' && ID_RE.test(f.change_id) ? f.change_id : null;
  const base = { room: f.room, id: f.id, changeId };
  if (f.type === 'message_edited') {
    if (typeof f.text !== 'string') return null;
    return { ...base, kind: 'edit', text: f.text, editedTs: Number(f.edited_ts) || 0 };
  }
  if (f.type === 'message_deleted') return { ...base, kind: 'delete' };
  if (f.type === 'reaction') {
    if (typeof f.user !== 'string' || !validEmoji(f.emoji) || typeof f.on !== 'boolean') return null;
    return { ...base, kind: 'reaction', emoji: f.emoji, user: f.user, on: f.on };
  }
  return null;
}

// Sets (on) or unsets one user's reaction; never a toggle, so a frame applied twice changes
// nothing the second time. msg.reactions stays {emoji: [user, ...]} in the order first seen,
// and is absent when there is none. Returns whether anything changed.
export function setReaction(msg, emoji, user, on) {
  const all = msg.reactions && typeof msg.reactions === 'object' ? msg.reactions : {};
  const users = Array.isArray(all[emoji]) ? all[emoji] : [];
  const has = users.includes(user);
  if (has === on) return false;
  const next = on ? [...users, user] : users.filter((u) => u !== user);
  const out = { ...all };
  if (next.length) out[emoji] = next;
  else delete out[emoji];
  if (Object.keys(out).length) msg.reactions = out;
  else delete msg.reactions;
  return true;
}

// Applies a change (changeOf) to a message object in place; returns whether it changed.
// A deleted message keeps its id, user and ts (where it stood) and loses everything else.
export function applyChange(msg, change) {
  if (msg.deleted) return false;
  if (change.kind === 'edit') {
    if (msg.text === change.text && msg.edited_ts === change.editedTs) return false;
    msg.text = change.text;
    msg.edited_ts = change.editedTs;
    return true;
  }
  if (change.kind === 'delete') {
    msg.deleted = true;
    delete msg.text;
    delete msg.reactions;
    delete msg.edited_ts;
    delete msg.reply_to;
    return true;
  }
  if (change.kind === 'reaction') return setReaction(msg, change.emoji, change.user, change.on);
  return false;
}

// "Alice, Bob reacted with 👍"; past NAMES_LISTED names, "... and 3 others".
export function whoReacted(users, emoji) {
  const named = users.slice(0, NAMES_LISTED);
  const rest = users.length - named.length;
  const who = named.join(', ') + (rest > 0 ? ' and ' + rest + (rest === 1 ? ' other' : ' others') : '');
  return who + ' reacted with ' + emoji;
}

// Where an emoji's chip stands: the picker's emoji in the picker's order, then any other by
// code points. A fixed order, not the order of arrival: the server's `reactions` object has
// no order of its own, and every page (live or just reloaded) must show the same row.
const PICKER_RANK = new Map(COMMON_EMOJI.map(([e], i) => [e, i]));

export function cmpEmoji(a, b) {
  const ra = PICKER_RANK.has(a) ? PICKER_RANK.get(a) : PICKER_RANK.size;
  const rb = PICKER_RANK.has(b) ? PICKER_RANK.get(b) : PICKER_RANK.size;
  if (ra !== rb) return ra - rb;
  return a < b ? -1 : a > b ? 1 : 0;
}

// The chips a message shows: one per emoji (cmpEmoji's order), with its count, whether this
// user (`me`) is among those who reacted, and who they are.
export function reactionChips(reactions, me) {
  if (!reactions || typeof reactions !== 'object') return [];
  const chips = [];
  for (const emoji of Object.keys(reactions).sort(cmpEmoji)) {
    const list = reactions[emoji];
    const users = Array.isArray(list) ? list.filter((u) => typeof u === 'string') : [];
    if (!users.length) continue;
    chips.push({ emoji, count: users.length, users, mine: me !== null && users.includes(me),
      label: whoReacted(users, emoji) });
  }
  return chips;
}

// Whether one more distinct emoji may go on this message (an existing one always may).
export function canAddEmoji(reactions, emoji) {
  if (!reactions || typeof reactions !== 'object') return true;
  return emoji in reactions || Object.keys(reactions).length < MAX_EMOJI_PER_MESSAGE;
}

// The message Up edits: the newest of `entries` that `isMine` and that is not deleted.
export function lastOwnMessage(entries, isMine) {
  for (let i = entries.length - 1; i >= 0; i--) {
    const e = entries[i];
    if (e.kind === 'message' && !e.msg.deleted && isMine(e.msg)) return e;
  }
  return null;
}

// The first line of a text with something on it, cut to QUOTE_CHARS characters.
export function firstLine(text) {
  const line = String(text || '').split('\n').map((s) => s.trim()).find((s) => s) || '';
  const chars = [...line];
  return chars.length > QUOTE_CHARS ? chars.slice(0, QUOTE_CHARS - 1).join('') + '…' : line;
}

// What a reply's quote shows for its original: {state: 'shown', user, line} | {state:
// 'deleted'} | {state: 'unknown'} (not loaded: "an earlier message").
export function quoteView(original, deleted) {
  if (deleted || (original && original.deleted)) return { state: 'deleted' };
  if (!original) return { state: 'unknown' };
  const user = typeof original.user === 'string' ? original.user : '';
  return { state: 'shown', user, line: firstLine(original.text) };
}

// The `before` that makes GET history?limit=1 return message `id` itself (before is exclusive).
export function beforeToFetch(id) {
  const [ms, seq] = parseId(id);
  return ms + '-' + (seq + 1);
}

// What GET history?before=beforeToFetch(id)&limit=1 says of message `id`: the message, or
// that it was deleted (an older message is still held, so `id` was not trimmed away: streams
// lose their oldest first), or nothing known (trimmed, or deleted when it was the oldest).
export function fetchedOriginal(id, messages) {
  const list = Array.isArray(messages) ? messages : [];
  const m = list[list.length - 1];
  if (m && m.id === id) return m.deleted ? { state: 'deleted' } : { state: 'found', msg: m };
  if (m && typeof m.id === 'string' && ID_RE.test(m.id) && cmpKey(parseId(m.id), parseId(id)) < 0) {
    return { state: 'deleted' };
  }
  return { state: 'unknown' };
}

// The later of two stream ids (either may be null): a room's "last id seen" follows message
// ids and change ids alike.
export function laterId(a, b) {
  if (!a || !ID_RE.test(a)) return b && ID_RE.test(b) ? b : a || null;
  if (!b || !ID_RE.test(b)) return a;
  return cmpKey(parseId(a), parseId(b)) < 0 ? b : a;
}
