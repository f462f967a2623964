// Ordering: where a message goes among a room's entries (id order, each id once), which
// messages group under one sender, and the order of the room and member lists. Pure.

import { cmpKey } from './ids.js';
import { dayKey } from './days.js';

// Position of a message with `key` in `entries` (messages {kind: 'message', key} mixed with
// notices): after everything when it is the newest, so notices stay where they were said;
// else right before the first message with a greater id (at the very top when it is the oldest).
export function positionFor(entries, key) {
  for (let i = entries.length - 1; i >= 0; i--) {
    if (entries[i].kind !== 'message') continue;
    if (cmpKey(entries[i].key, key) < 0) return entries.length;
    return firstGreater(entries, key);
  }
  return entries.length;
}

function firstGreater(entries, key) {
  let firstMsg = -1;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    if (e.kind !== 'message') continue;
    if (firstMsg < 0) firstMsg = i;
    if (cmpKey(e.key, key) > 0) return i === firstMsg ? 0 : i;
  }
  return entries.length;
}

// Consecutive messages of one sender within a few minutes, on one day, form a group: the
// repeated avatar and name are hidden visually.
export const GROUP_MS = 5 * 60 * 1000;

export function continues(prev, entry) {
  return !!prev && prev.kind === 'message' && entry.kind === 'message' && prev.msg.user === entry.msg.user &&
    Math.abs(Number(entry.msg.ts) - Number(prev.msg.ts)) < GROUP_MS && dayKey(entry.msg.ts) === dayKey(prev.msg.ts);
}

export function firstMessageId(entries) {
  for (const e of entries) if (e.kind === 'message') return e.id;
  return null;
}

export function messageCount(entries) {
  let n = 0;
  for (const e of entries) if (e.kind === 'message') n++;
  return n;
}

// Rooms sort by name ignoring case; names differing only in case keep a fixed order.
export function cmpRooms(a, b) {
  if (a.sortKey !== b.sortKey) return a.sortKey < b.sortKey ? -1 : 1;
  if (a.name !== b.name) return a.name < b.name ? -1 : 1;
  return 0;
}

// Index of the first room in the sorted `order` not before `room` (binary search).
export function orderIndex(order, room) {
  let lo = 0;
  let hi = order.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cmpRooms(order[mid], room) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// Two sorted lists as one (a page of thousands of rooms costs one pass, not a search each).
export function mergeSorted(old, fresh, cmp) {
  const merged = new Array(old.length + fresh.length);
  let i = 0;
  let j = 0;
  let k = 0;
  while (i < old.length && j < fresh.length) merged[k++] = cmp(old[i], fresh[j]) <= 0 ? old[i++] : fresh[j++];
  while (i < old.length) merged[k++] = old[i++];
  while (j < fresh.length) merged[k++] = fresh[j++];
  return merged;
}

// The member list: this page's user first, then by name, ignoring case and accents.
export function sortMembers(names, me) {
  return [...names].sort((a, b) => {
    if (a === me) return -1;
    if (b === me) return 1;
    return a.localeCompare(b, undefined, { sensitivity: 'base' });
  });
}
