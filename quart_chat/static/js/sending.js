// This page's own messages until the server confirms them: putting them on the wire with
// their client_id, sending them again after a drop or a rejoin (the same client_id: the
// server stores each once, docs/protocol.md "Guarantees", G8), and #pending, where the
// unconfirmed and refused ones wait with Retry / Edit / Discard.

import { announce, focusComposer, keyboardFocusIn } from './a11y.js';
import { fitsFrame, tooLong } from './composer.js';
import { link, sendFrame } from './connection.js';
import { button, el, plainEnter, plural, ui } from './dom.js';
import { messageFrame } from './frames.js';
import { PendingSends, makeCidPrefix } from './pending.js';
import { activeRoom, getRoom, rooms } from './roomlist.js';
import { scheduleSave } from './session.js';
import { clearToasts, toast } from './toasts.js';
import { scrollToBottom, updateEmptyState } from './view.js';

export const sends = new PendingSends(makeCidPrefix());

// Each pending message keeps one element (an Edit in progress survives other updates).
const views = new WeakMap();   // entry -> {node, key, editor}
let retryBar = null;
let retryBarText = null;

function viewOf(p) {
  let v = views.get(p);
  if (!v) { v = { node: null, key: '', editor: null }; views.set(p, v); }
  return v;
}

export function isOwnCid(cid) { return sends.isOwn(cid); }

export function hasPending(roomName) { return sends.forRoom(roomName).length > 0; }

// #pending is reconciled in place, not rebuilt.
export function renderPending() {
  const room = activeRoom();
  const items = room ? sends.forRoom(room.name) : [];
  const hadFocus = keyboardFocusIn(ui.pending);
  const failed = items.filter((p) => p.state === 'failed');
  const want = [];
  if (failed.length > 1) want.push(retryAllBar(failed.length));
  for (const p of items) want.push(pendingNode(p));
  let cur = ui.pending.firstChild;
  for (const n of want) {
    if (cur === n) { cur = cur.nextSibling; continue; }
    ui.pending.insertBefore(n, cur);
  }
  while (cur) {
    const nx = cur.nextSibling;
    cur.remove();
    cur = nx;
  }
  if (hadFocus && !ui.pending.contains(document.activeElement)) focusComposer();
}

function retryAllBar(n) {
  if (!retryBar) {
    retryBar = el('div', 'pending-bar');
    retryBarText = el('span', 'pending-bar-text');
    const actions = el('span', 'pending-actions');
    actions.append(
      button('btn-link retry-all', 'Retry all', () => retryAll()),
      button('btn-link discard-all', 'Discard all', () => discardAll()),
    );
    retryBar.append(retryBarText, actions);
  }
  retryBarText.textContent = plural(n, 'message', 'messages') + ' not sent';
  return retryBar;
}

function pendingNode(p) {
  const v = viewOf(p);
  const key = p.state + '|' + (p.reason || '') + '|' + (p.editing ? 'e' : '') + (p.unconfirmed ? 'u' : '');
  if (v.node && v.key === key) return v.node;
  if (!v.node) {
    v.node = el('div', 'pending-item');
    v.node.dataset.clientId = p.cid;
  }
  v.key = key;
  const item = v.node;
  item.className = 'pending-item ' + p.state + (p.editing ? ' editing' : '');
  const bubble = el('div', 'bubble');
  if (p.editing) {
    if (!v.editor) v.editor = makeEditor(p);
    bubble.append(v.editor.box);
  } else {
    bubble.append(el('div', 'pending-text', p.text));
    const status = el('div', 'pending-status');
    if (p.state === 'failed') {
      status.append(el('span', 'pending-reason', p.unconfirmed ? p.reason : 'Not sent: ' + (p.reason || 'error')));
      const actions = el('span', 'pending-actions');
      actions.append(
        button('btn-link retry', 'Retry', () => retryPending(p.cid)),
        button('btn-link edit', 'Edit', () => editPending(p.cid)),
        button('btn-link discard', 'Discard', () => discardPending(p.cid)),
      );
      status.append(actions);
    } else {
      status.textContent = p.state === 'queued' ? 'Waiting for connection…' : 'Sending…';
    }
    bubble.append(status);
  }
  item.replaceChildren(bubble);
  return item;
}

function makeEditor(p) {
  const box = el('div', 'pending-editor');
  const area = el('textarea', 'pending-edit');
  area.rows = 2;
  area.value = p.text;
  area.setAttribute('aria-label', 'Edit the message that was not sent');
  const actions = el('div', 'pending-actions');
  const save = button('btn btn-primary btn-small', 'Send', () => finishEdit(p.cid, true));
  const cancel = button('btn btn-ghost btn-small', 'Cancel', () => finishEdit(p.cid, false));
  actions.append(cancel, save);
  area.addEventListener('keydown', (ev) => {
    if (plainEnter(ev)) {
      ev.preventDefault();
      finishEdit(p.cid, true);
    } else if (ev.key === 'Escape') {
      ev.preventDefault();
      finishEdit(p.cid, false);
    }
  });
  box.append(area, actions);
  return { box, area };
}

function refreshPending(roomName) {
  if (rooms.active === roomName) {
    renderPending();
    updateEmptyState();
  }
  scheduleSave();
}

export function failPending(p, reason, unconfirmed) {
  sends.fail(p, reason, unconfirmed);
  refreshPending(p.room);
}

// Sent when its room is joined on the open socket; else it waits for the next `joined`.
function trySend(p) {
  const room = getRoom(p.room);
  if (room && room.wanted && room.joinedEpoch === link.epoch && link.conn === 'open' &&
      sendFrame(messageFrame(p.room, p.text, p.cid, p.replyTo))) {
    sends.markSent(p, link.epoch, Date.now());
    return true;
  }
  sends.markQueued(p);
  return false;
}

// Sent on a socket that is still open, yet neither acked nor refused: say so and offer Retry.
export function checkUnconfirmed() {
  for (const p of sends.overdue(Date.now(), link.epoch)) {
    failPending(p, 'No answer from the server yet — Retry cannot post it twice', true);
    announce('No answer from the server yet for a message you sent. Retry is offered; it cannot post it twice.');
  }
}

function retryPending(cid) {
  const p = sends.get(cid);
  if (!p) return;
  p.reason = '';
  trySend(p);   // the same client_id: if it was stored after all, the server only acks it
  refreshPending(p.room);
}

function retryAll() {
  const room = activeRoom();
  if (!room) return;
  for (const p of sends.forRoom(room.name)) {
    if (p.state !== 'failed' || p.editing) continue;
    p.reason = '';
    trySend(p);
  }
  refreshPending(room.name);
}

function discardPending(cid) {
  const p = sends.get(cid);
  if (!p) return;
  sends.drop(p);
  refreshPending(p.room);
  maybeClearSendToasts();
}

function discardAll() {
  const room = activeRoom();
  if (!room) return;
  sends.dropFailed(room.name);
  refreshPending(room.name);
  maybeClearSendToasts();
}

// Edit happens in place, in the pending item: a refused text never goes into the message
// box, where it could run together with what is being typed.
function editPending(cid) {
  const p = sends.get(cid);
  if (!p || p.state !== 'failed') return;
  p.editing = true;
  viewOf(p).editor = null;
  refreshPending(p.room);
  const v = viewOf(p);
  if (v.editor) {
    v.editor.area.focus();
    v.editor.area.setSelectionRange(v.editor.area.value.length, v.editor.area.value.length);
    if (typeof v.node.scrollIntoView === 'function') v.node.scrollIntoView({ block: 'nearest' });
  }
}

function finishEdit(cid, send) {
  const p = sends.get(cid);
  if (!p || !p.editing) return;
  const v = viewOf(p);
  const text = v.editor ? v.editor.area.value : p.text;
  // Over the limit: not sent, the editor stays open with the text (the toast says why).
  if (send && v.editor && text.trim() && text !== p.text && tooLong(text)) { v.editor.area.focus(); return; }
  p.editing = false;
  v.editor = null;
  if (!send) { refreshPending(p.room); return; }
  if (!text.trim()) { discardPending(cid); return; }
  if (text === p.text) { retryPending(cid); return; }
  // A changed text is a new message: a new client_id (the old one may have been stored).
  if (!fitsFrame(p.room, text, p.replyTo)) { refreshPending(p.room); return; }
  sends.drop(p);
  sendText(p.room, text, p.replyTo);
  refreshPending(p.room);
}

const LATE_TEXT = 'A message reported as not sent was delivered after all';

// The server stored one of our messages (its `message`, `ack` or history). True when it was
// pending here.
export function resolvePending(cid) {
  const { entry, late } = sends.resolve(cid);
  if (late) toast(LATE_TEXT, '', { code: 'late_delivery', group: 'send' });
  if (entry) refreshPending(entry.room);
  return !!entry;
}

export function maybeClearSendToasts() {
  if (!sends.anyFailed()) clearToasts('send', ['late_delivery']);
}

// `replyTo`: the id of the message this one answers, if any (docs/protocol.md, "A message's
// life").
export function sendText(roomName, text, replyTo) {
  if (!fitsFrame(roomName, text, replyTo)) return false;
  const p = sends.add(roomName, text, replyTo);
  trySend(p);
  if (rooms.active === roomName) {
    renderPending();
    updateEmptyState();
    scrollToBottom();
  }
  scheduleSave();
  return true;
}

// After a room's `joined`: send what waits for it, in the order it was typed. The history
// just received already resolved what the server had stored.
export function flushRoom(room) {
  const due = sends.toFlush(room.name, link.epoch);
  for (const p of due) trySend(p);
  if (due.length) refreshPending(room.name);
}

// The socket closed: what was in flight goes again after the rejoin.
export function requeueInFlight() {
  const touched = sends.requeueInFlight();
  if (rooms.active && touched.has(rooms.active)) renderPending();
}

// A join the server refused: nothing of that room can be sent.
export function refuseRoom(room) {
  for (const p of sends.forRoom(room.name)) {
    if (p.state !== 'failed') { p.state = 'failed'; p.reason = 'not in #' + room.name; }
  }
}
