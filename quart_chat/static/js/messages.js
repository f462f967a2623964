// Each room's messages and notices, and the #messages view of the active one: every id once,
// in id order, with sender groups and day separators.

import { announceMessages } from './a11y.js';
import { endChangesTo } from './actions.js';
import { avatar, el, timeEl, ui } from './dom.js';
import { dayKey, dayLabel, dayStarts } from './days.js';
import { ID_RE, cmpKey, parseId } from './ids.js';
import { me } from './identity.js';
import { applyChange, changeOf, laterId } from './life.js';
import { syncParts } from './msgparts.js';
import { continues, positionFor } from './order.js';
import { originalChanged, quoteFor } from './reply.js';
import { mentionsUser } from './unread.js';
import { maybeRead, recount, syncDivider } from './readmarks.js';
import { getRoom, rooms } from './roomlist.js';
import { isOwnCid } from './sending.js';
import { scheduleSave } from './session.js';
import { atBottom, scrollToBottom, updateEmptyState, updateLoadOlder } from './view.js';

export function isMine(msg) {
  if (isOwnCid(msg.client_id)) return true;
  return me.user !== null && msg.user === me.user;
}

function renderMessage(entry) {
  const msg = entry.msg;
  const root = el('div', 'message');
  root.dataset.id = entry.id;
  root.dataset.day = dayKey(msg.ts);
  if (isMine(msg)) root.classList.add('mine');
  const user = typeof msg.user === 'string' ? msg.user : '';
  root.append(avatar(user, 'msg-avatar'));
  const bubble = el('div', 'bubble');
  const meta = el('div', 'meta');
  meta.append(el('span', 'user', user), timeEl('time', msg.ts));
  const text = el('div', 'text', typeof msg.text === 'string' ? msg.text : '');
  bubble.append(meta, text);
  root.append(bubble);
  syncParts(root, msg, partsContext(msg));
  return root;
}

function partsContext(msg) {
  const room = typeof msg.room === 'string' ? getRoom(msg.room) : null;
  const quote = room && msg.reply_to && !msg.deleted ? quoteFor(room, msg.reply_to) : null;
  return { me: me.user, mine: isMine(msg), quote, mentionsMe: !isMine(msg) && mentionsUser(msg, me.user) };
}

// A message's element brought up to date with its object (a change, a quote resolved).
export function refreshEntry(entry) {
  if (entry.el && entry.kind === 'message') syncParts(entry.el, entry.msg, partsContext(entry.msg));
}

// The room's message with this id, or null (newest first: changes are mostly to recent ones).
export function findEntry(room, id) {
  if (!room.ids.has(id)) return null;
  for (let i = room.entries.length - 1; i >= 0; i--) {
    const e = room.entries[i];
    if (e.kind === 'message' && e.id === id) return e;
  }
  return null;
}

// The replies to message `id` show its new state in their quotes.
export function refreshQuotes(room, id) {
  for (const e of room.entries) if (e.kind === 'message' && e.msg.reply_to === id) refreshEntry(e);
}

// message_edited, message_deleted, reaction (docs/protocol.md, "A message's life"), in
// stream order among the messages. Its change_id moves the room's last id seen (the `since`
// of the next join) like a message id, never back: a change replayed after a rejoin may be
// older than the newest message, and is applied all the same. A change to a message the
// page does not have (older than what it loaded, or gone before the page saw it) changes
// nothing shown; a deletion is remembered so that older history loaded later leaves that
// message out.
export function applyChangeFrame(room, f) {
  const change = changeOf(f);
  if (!change) return;
  if (change.changeId) {
    const last = laterId(room.lastId, change.changeId);
    if (last !== room.lastId) {
      room.lastId = last;
      scheduleSave();
    }
  }
  if (change.kind === 'delete') room.gone.add(change.id);
  const entry = findEntry(room, change.id);
  const changed = entry ? applyChange(entry.msg, change) : false;
  if (entry && changed) refreshEntry(entry);
  if (entry && changed && change.kind === 'delete') recount(room);   // a deleted message is not unread
  if (change.kind !== 'reaction') {
    originalChanged(room, change);
    if (change.kind === 'delete') endChangesTo(room, change.id);
    refreshQuotes(room, change.id);
  }
}

function renderNotice(entry) {
  const n = el('div', 'notice' + (entry.cls ? ' ' + entry.cls : ''));
  n.setAttribute('role', 'note');
  n.dataset.day = dayKey(entry.ts);
  n.append(el('span', 'notice-text', entry.text));
  if (entry.ts) n.append(timeEl('time', entry.ts));
  return n;
}

// An entry's element, built the first time its room is shown (a room never opened costs none).
export function entryEl(entry) {
  if (!entry.el) {
    entry.el = entry.kind === 'message' ? renderMessage(entry) : renderNotice(entry);
    if (entry.cont) entry.el.classList.add('cont');
  }
  return entry.el;
}

// A separator before the first entry of each day ("Today", "Yesterday", "Mon 30 Nov 2026").
// Separators are the view's alone (not in room.entries): this keeps those still in place and
// adds or drops the rest, so a message arriving does not rebuild them all.
// The "New messages" line (readmarks.js) stays right before its message, after the separator.
export function syncDays() {
  syncDivider();
  const nodes = [...ui.messages.children].filter((node) => !node.classList.contains('day-sep') &&
    !node.classList.contains('new-messages'));
  const starts = dayStarts(nodes.map((node) => node.dataset.day || ''));
  const keep = new Set();
  nodes.forEach((node, i) => {
    if (!starts[i]) return;
    const day = node.dataset.day;
    const at = node.previousElementSibling && node.previousElementSibling.classList.contains('new-messages')
      ? node.previousElementSibling : node;
    const before = at.previousElementSibling;
    let sep = before && before.classList.contains('day-sep') && before.dataset.day === day && !keep.has(before) ? before : null;
    if (!sep) {
      sep = el('div', 'day-sep');
      sep.dataset.day = day;
      const t = el('time', 'day-sep-label');
      t.dateTime = day;
      sep.append(t);
      ui.messages.insertBefore(sep, at);
    }
    keep.add(sep);
    const label = dayLabel(day);
    if (sep.firstElementChild.textContent !== label) sep.firstElementChild.textContent = label;
  });
  for (const sep of ui.messages.querySelectorAll(':scope > .day-sep')) if (!keep.has(sep)) sep.remove();
}

function updateGrouping(room, i) {
  const e = room.entries[i];
  if (!e || e.kind !== 'message') return;
  e.cont = continues(room.entries[i - 1], e);
  if (e.el) e.el.classList.toggle('cont', e.cont);
}

// Adds a message to its room once (dedupe by id), in id order. Returns true when new.
// opts.local: built here from an `ack` (the server's `message` may follow, or, for a resend
// G8 recognised, never come); opts.rest: from GET history. Neither moves lastId, which only
// follows the server's ordered stream (it is the `since` of the next join).
export function addMessage(room, msg, opts) {
  if (!msg || typeof msg.id !== 'string' || !ID_RE.test(msg.id)) return false;
  // Deleted: never shown again (the server leaves it out; older copies may still come).
  if (msg.deleted || room.gone.has(msg.id)) return false;
  const key = parseId(msg.id);
  const fromStream = !opts.local && !opts.rest;
  if (fromStream && (room.lastId === null || cmpKey(parseId(room.lastId), key) < 0)) {
    room.lastId = msg.id;
    scheduleSave();
  }
  if (room.ids.has(msg.id)) {
    if (!opts.local) replaceLocal(room, msg);
    return false;
  }
  room.ids.add(msg.id);
  const entry = { kind: 'message', id: msg.id, key, msg, el: null, local: !!opts.local };
  const idx = positionFor(room.entries, key);
  room.entries.splice(idx, 0, entry);
  if (rooms.active === room.name) {
    const next = room.entries[idx + 1];
    const nextEl = next && next.el && next.el.parentNode === ui.messages ? next.el : null;
    const node = entryEl(entry);
    if (opts.animate) node.classList.add('enter');
    ui.messages.insertBefore(node, nextEl);
  }
  updateGrouping(room, idx);
  updateGrouping(room, idx + 1);
  if (room.replies > 0) refreshQuotes(room, msg.id);   // an original loaded after its replies
  if (msg.reply_to) room.replies += 1;
  return true;
}

// The server's copy of a message first shown from its ack: take its fields (ts, text as stored).
function replaceLocal(room, msg) {
  for (let i = room.entries.length - 1; i >= 0; i--) {
    const e = room.entries[i];
    if (e.kind !== 'message' || e.id !== msg.id) continue;
    if (!e.local) return;
    e.local = false;
    e.msg = msg;
    if (e.el) {
      const old = e.el;
      e.el = null;
      const node = entryEl(e);
      if (old.parentNode) {
        old.replaceWith(node);
        syncDays();
      }
    }
    updateGrouping(room, i);
    updateGrouping(room, i + 1);
    return;
  }
}

export function addNotice(room, text, cls, ts) {
  const entry = { kind: 'notice', text, cls: cls || '', ts: ts || 0, el: null };
  room.entries.push(entry);
  if (rooms.active === room.name) {
    const stick = atBottom();
    const node = entryEl(entry);
    node.classList.add('enter');
    ui.messages.append(node);
    syncDays();
    if (stick) scrollToBottom();
  }
}

// Many messages at once, with the active room's scrolling and announcing done once.
// opts: live (arrived now: offer "New messages" when the view is scrolled up), forceBottom,
// announce, animate, local, rest (as addMessage). What is unread follows from the read
// marker (readmarks.js), whatever the source.
export function addMessages(room, list, opts) {
  const isActive = rooms.active === room.name;
  const stick = isActive && (atBottom() || opts.forceBottom);
  let added = 0;
  let mineAdded = false;
  const heard = [];
  for (const m of list) {
    if (addMessage(room, m, opts)) {
      added++;
      if (isMine(m)) mineAdded = true;
      else if (opts.announce) heard.push(m);
    }
  }
  if (isActive && heard.length) announceMessages(room.name, heard);
  if (added) recount(room);
  if (isActive && added) {
    syncDays();
    if (stick || mineAdded) scrollToBottom();
    else if (opts.live) ui.jumpLatest.hidden = false;
    updateEmptyState();
    updateLoadOlder();
    maybeRead();
  }
  return added;
}
