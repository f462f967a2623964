// Unread counts from a read marker (docs/protocol.md, `read` and `joined.read`): the
// messages loaded after the marker, less one's own and deleted ones, and of those the ones
// that mention this user. Every tab and device of a user holds the same marker, so they
// all show the same counts. Pure: no DOM.

import { ID_RE, cmpKey, parseId } from './ids.js';

// Whether stream id `a` is after `b` (b null: any id is).
export function isAfter(a, b) {
  if (!a || !ID_RE.test(a)) return false;
  if (!b || !ID_RE.test(b)) return true;
  return cmpKey(parseId(a), parseId(b)) > 0;
}

export function mentionsUser(msg, user) {
  return !!user && Array.isArray(msg.mentions) && msg.mentions.includes(user);
}

function counts(msg, marker, isMine) {
  return !msg.deleted && isAfter(msg.id, marker) && !isMine(msg);
}

// entries: a room's entries ({kind: 'message', id, msg} among notices); marker: the id read
// up to, or null (nothing read yet: every message loaded counts).
export function unreadCounts(entries, marker, isMine, user) {
  let unread = 0;
  let mentioned = 0;
  for (const e of entries) {
    if (e.kind !== 'message' || !counts(e.msg, marker, isMine)) continue;
    unread += 1;
    if (mentionsUser(e.msg, user)) mentioned += 1;
  }
  return { unread, mentioned };
}

// The first message a "New messages" line goes before, or null when none is unread.
export function firstUnreadId(entries, marker, isMine) {
  for (const e of entries) if (e.kind === 'message' && counts(e.msg, marker, isMine)) return e.id;
  return null;
}

// The newest message id among the entries (what "read up to here" names), or null.
export function newestMessageId(entries) {
  for (let i = entries.length - 1; i >= 0; i--) if (entries[i].kind === 'message') return entries[i].id;
  return null;
}

// A badge's text: "99+" past 99.
export function badgeCount(n) { return n > 99 ? '99+' : String(n); }
