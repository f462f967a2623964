// What a person does to a message after it is sent (docs/protocol.md, "A message's
// life"): the tools beside each message and its actions menu (react, reply, and on one's
// own: edit, delete), editing in place (Enter saves, Escape cancels; Up in an empty message
// box edits one's last message), the delete confirmation, and the change frames on the wire
// with their `ack` or `error` (each carries a client_id of its own).

import { announce, focusComposer } from './a11y.js';
import { tooLong } from './composer.js';
import { link, sendFrame } from './connection.js';
import { button, el, placeNear, plainEnter, rovingIndex, ui } from './dom.js';
import { deleteFrame, editFits, editFrame, reactFrame } from './frames.js';
import { me } from './identity.js';
import { ERROR_TEXT } from './incoming.js';
import { canAddEmoji, lastOwnMessage } from './life.js';
import { findEntry, isMine } from './messages.js';
import { closePicker, openPicker, pickerOpen, placePicker } from './picker.js';
import { goToOriginal, startReply } from './reply.js';
import { activeRoom, getRoom } from './roomlist.js';
import { sends } from './sending.js';
import { toast } from './toasts.js';

const MAX_FRAME_FALLBACK = 16384;
const EDIT_MAX_HEIGHT_PX = 220;

// Why a change was refused, as the person sees it, where it differs from a message's
// refusal (the server's `error` codes; the others as incoming.js words them).
const REFUSED = {
  not_found: 'That message is no longer there',
  forbidden: 'Only its author can edit or delete a message',
  invalid_text: 'Not saved: the text is empty, too long or has invalid characters',
  limit_exceeded: 'This message already has the most different reactions it can take',
  unavailable: 'Server storage unavailable — the change was not saved',
  unknown_type: 'This server cannot edit, delete or react to messages',
};
const NOT_SENT = {
  edit: 'the edit was not saved', delete: 'the message was not deleted', react: 'the reaction was not sent',
};

const ops = new Map();   // client_id -> {kind, room, id, done(ok, code)}
let opCount = 0;
let editing = null;      // {room, id, entry, box, area, saving}
let menu = null;         // {trigger, room, id}
let pendingDelete = null; // {room, id, back}

// ------------------------------------------------------------------ the wire

function sendChange(room, kind, build, done) {
  if (!room || link.conn !== 'open' || room.joinedEpoch !== link.epoch) {
    toast('Not connected — ' + NOT_SENT[kind], 'Try again once the page is connected.',
      { code: 'offline', group: 'change' });
    return false;
  }
  const cid = sends.prefix + 'x' + (++opCount);
  if (!sendFrame(build(cid))) {
    toast('Not connected — ' + NOT_SENT[kind], '', { code: 'offline', group: 'change' });
    return false;
  }
  ops.set(cid, { kind, done });
  return true;
}

// The server's `ack` (ok) or `error` for one of our changes; false when `cid` is not one.
export function changeAnswered(cid, ok, code, serverMsg) {
  const op = typeof cid === 'string' ? ops.get(cid) : null;
  if (!op) return false;
  ops.delete(cid);
  if (!ok) {
    const precise = code === 'invalid_text' && serverMsg ? 'Not saved: ' + serverMsg : '';
    toast(precise || REFUSED[code] || ERROR_TEXT[code] || serverMsg || 'Error: ' + code, '', { code, group: 'change' });
  }
  if (op.done) op.done(ok, code);
  return true;
}

// The socket closed: no answer will come for what was in flight.
export function dropChanges() {
  const list = [...ops.values()];
  ops.clear();
  for (const op of list) if (op.done) op.done(false, 'closed');
}

export function toggleReaction(roomName, id, emoji) {
  const room = getRoom(roomName);
  const entry = room && findEntry(room, id);
  if (!entry || entry.msg.deleted) return;
  const users = (entry.msg.reactions || {})[emoji];
  const on = !(Array.isArray(users) && users.includes(me.user));
  if (on && !canAddEmoji(entry.msg.reactions, emoji)) {
    toast(REFUSED.limit_exceeded, '', { code: 'limit_exceeded', group: 'change' });
    return;
  }
  sendChange(room, 'react', (cid) => reactFrame(room.name, id, emoji, on, cid), (ok) => {
    if (ok) announce(on ? 'You reacted with ' + emoji : 'Your ' + emoji + ' reaction was removed');
  });
}

// ------------------------------------------------------------------ editing in place

export function startEdit(room, entry) {
  if (!entry || entry.msg.deleted || !isMine(entry.msg) || !entry.el) return;
  if (editing) cancelEdit(false);
  closeMenu(false);
  const area = el('textarea', 'edit-input');
  area.value = typeof entry.msg.text === 'string' ? entry.msg.text : '';
  area.rows = 1;
  area.setAttribute('aria-label', 'Edit your message');
  area.setAttribute('aria-describedby', 'edit-hint-' + entry.id);
  const hint = el('div', 'edit-hint');
  hint.id = 'edit-hint-' + entry.id;
  hint.append('Escape to ', button('btn-link edit-cancel', 'cancel', () => cancelEdit(true)),
    ' • Enter to ', button('btn-link edit-save', 'save', () => saveEdit()));
  const box = el('div', 'edit-box');
  box.append(area, hint);
  entry.el.querySelector('.bubble > .text').after(box);
  entry.el.classList.add('editing');
  editing = { room: room.name, id: entry.id, entry, box, area, saving: false };
  area.addEventListener('keydown', onEditKey);
  area.addEventListener('input', () => growArea(area));
  growArea(area);
  area.focus();
  area.setSelectionRange(area.value.length, area.value.length);
  if (typeof entry.el.scrollIntoView === 'function') entry.el.scrollIntoView({ block: 'nearest' });
  announce('Editing your message. Enter saves, Escape cancels.');
}

function growArea(area) {
  area.style.height = 'auto';
  area.style.height = Math.min(area.scrollHeight + 2, EDIT_MAX_HEIGHT_PX) + 'px';
}

function onEditKey(ev) {
  if (plainEnter(ev)) {
    ev.preventDefault();
    saveEdit();
  } else if (ev.key === 'Escape') {
    ev.preventDefault();
    ev.stopPropagation();
    cancelEdit(true);
  }
}

export function cancelEdit(refocus) {
  if (!editing) return;
  const { box, entry } = editing;
  const hadFocus = box.contains(document.activeElement);
  editing = null;
  box.remove();
  if (entry.el) entry.el.classList.remove('editing');
  if (refocus || hadFocus) focusComposer();
}

function saveEdit() {
  if (!editing || editing.saving) return;
  const cur = editing;
  const text = cur.area.value;
  const msg = cur.entry.msg;
  if (!text.trim()) { askDelete(getRoom(cur.room), cur.entry, cur.area); return; }   // as Slack: empty means delete
  if (text.trim() === String(msg.text || '').trim()) { cancelEdit(true); return; }
  if (tooLong(text)) { cur.area.focus(); return; }
  const maxFrame = Number(ui.message.dataset.maxFrame) || MAX_FRAME_FALLBACK;
  if (!editFits(cur.room, cur.id, text, sends.prefix, maxFrame)) {
    toast('Edit too long — it was not saved', 'Shorten it and try again.', { code: 'too_big', group: 'change' });
    return;
  }
  const room = getRoom(cur.room);
  cur.saving = true;
  cur.box.classList.add('saving');
  const sent = sendChange(room, 'edit', (cid) => editFrame(cur.room, cur.id, text, cid), (ok, code) => {
    if (editing !== cur) return;
    if (ok || code === 'not_found') {
      if (ok) announce('Message edited');
      cancelEdit(true);
    } else {
      cur.saving = false;
      cur.box.classList.remove('saving');
      cur.area.focus();
    }
  });
  if (!sent) { cur.saving = false; cur.box.classList.remove('saving'); }
}

// Up in the empty message box: edit one's newest message in the active room.
export function editLastOwn() {
  const room = activeRoom();
  if (!room) return false;
  const entry = lastOwnMessage(room.entries, isMine);
  if (!entry) return false;
  startEdit(room, entry);
  return !!editing;
}

// A message was deleted (by its author, maybe in another tab): nothing more is done to it here.
export function endChangesTo(room, id) {
  if (editing && editing.room === room.name && editing.id === id) cancelEdit(false);
  if (menu && menu.room === room.name && menu.id === id) closeMenu(true);
  if (pendingDelete && pendingDelete.room === room.name && pendingDelete.id === id) ui.confirmDelete.close();
}

// ------------------------------------------------------------------ delete, after asking

function askDelete(room, entry, back) {
  if (!room || !entry) return;
  closeMenu(false);
  pendingDelete = { room: room.name, id: entry.id, back: back || null };
  ui.confirmPreview.textContent = typeof entry.msg.text === 'string' ? entry.msg.text : '';
  ui.confirmDelete.showModal();
  ui.confirmCancel.focus();
}

function confirmDelete() {
  const d = pendingDelete;
  if (!d) return;
  pendingDelete = null;
  ui.confirmDelete.close();
  const room = getRoom(d.room);
  if (editing && editing.id === d.id) cancelEdit(false);
  sendChange(room, 'delete', (cid) => deleteFrame(d.room, d.id, cid), (ok) => {
    if (ok) announce('Message deleted');
  });
  focusComposer();
}

function onDialogClosed() {
  // Closed without confirming (Cancel, Escape): back where the person was.
  const d = pendingDelete;
  pendingDelete = null;
  if (!d) return;
  if (d.back && d.back.isConnected) d.back.focus();
  else focusComposer();
}

// ------------------------------------------------------------------ the actions menu

function menuItems(entry) {
  const items = [['react', 'Add reaction'], ['reply', 'Reply']];
  if (isMine(entry.msg)) items.push(['edit', 'Edit'], ['delete', 'Delete']);
  return items;
}

function openMenu(trigger, room, entry) {
  closePicker(false);
  closeMenu(false);
  const items = menuItems(entry).map(([action, label]) => {
    const b = button('menu-item menu-' + action, label, () => runMenu(action));
    b.setAttribute('role', 'menuitem');
    b.tabIndex = -1;
    return b;
  });
  ui.msgMenu.replaceChildren(...items);
  menu = { trigger, room: room.name, id: entry.id };
  trigger.setAttribute('aria-expanded', 'true');
  trigger.setAttribute('aria-controls', 'msg-menu');
  trigger.closest('.msg-tools').classList.add('open');
  placeNear(ui.msgMenu, trigger);
  items[0].focus();
}

export function closeMenu(refocus) {
  if (!menu) return;
  const { trigger } = menu;
  menu = null;
  ui.msgMenu.hidden = true;
  trigger.setAttribute('aria-expanded', 'false');
  trigger.removeAttribute('aria-controls');
  const tools = trigger.closest('.msg-tools');
  if (tools) tools.classList.remove('open');
  if (refocus && trigger.isConnected) trigger.focus();
}

function runMenu(action) {
  if (!menu) return;
  const { trigger, room: roomName, id } = menu;
  const room = getRoom(roomName);
  const entry = room && findEntry(room, id);
  closeMenu(action === 'react');
  if (!entry || entry.msg.deleted) return;
  if (action === 'react') openPicker(trigger, roomName, id, trigger);
  else if (action === 'reply') startReply(room, entry);
  else if (action === 'edit') startEdit(room, entry);
  else if (action === 'delete') askDelete(room, entry, trigger);
}

function onMenuKey(ev) {
  if (!menu) return;
  if (ev.key === 'Escape' || ev.key === 'Tab') {
    ev.preventDefault();
    ev.stopPropagation();
    closeMenu(true);
    return;
  }
  const items = [...ui.msgMenu.querySelectorAll('[role="menuitem"]')];
  const next = rovingIndex(ev.key, items.indexOf(document.activeElement), items.length);
  if (next < 0) return;
  ev.preventDefault();
  items[next].focus();
}

// ------------------------------------------------------------------ wiring

// One listener for every message's tools, chips and quote.
function onMessagesClick(ev) {
  const target = ev.target instanceof Element ? ev.target.closest('button') : null;
  const node = target && target.closest('.message[data-id]');
  const room = activeRoom();
  if (!node || !room) return;
  const entry = findEntry(room, node.dataset.id);
  if (!entry) return;
  const has = (cls) => target.classList.contains(cls);
  if (has('reaction')) toggleReaction(room.name, entry.id, target.dataset.emoji);
  else if (has('reaction-add') || has('tool-react')) {
    closeMenu(false);
    if (pickerOpen()) closePicker(false);
    else openPicker(target, room.name, entry.id, target);
  } else if (has('tool-reply')) startReply(room, entry);
  else if (has('tool-edit')) startEdit(room, entry);
  else if (has('tool-more')) {
    if (menu && menu.trigger === target) closeMenu(true);
    else openMenu(target, room, entry);
  } else if (has('reply-quote')) goToOriginal(room.name, target.dataset.replyTo);
}

// A press outside a popover closes it; so does scrolling the messages under it.
function onPointerDown(ev) {
  const t = ev.target;
  if (menu && !ui.msgMenu.contains(t) && !menu.trigger.contains(t)) closeMenu(false);
  const opener = t instanceof Element && t.closest('.tool-react, .reaction-add');
  if (pickerOpen() && !ui.emojiPicker.contains(t) && !opener) {
    closePicker(false);
  }
}

export function wireActions() {
  ui.messages.addEventListener('click', onMessagesClick);
  ui.msgMenu.addEventListener('keydown', onMenuKey);
  document.addEventListener('pointerdown', onPointerDown, true);
  // New messages scroll the view: an open popover stays beside its message.
  ui.scroller.addEventListener('scroll', () => {
    if (menu) placeNear(ui.msgMenu, menu.trigger);
    if (pickerOpen()) placePicker();
  }, { passive: true });
  ui.confirmOk.addEventListener('click', confirmDelete);
  ui.confirmCancel.addEventListener('click', () => ui.confirmDelete.close());
  ui.confirmDelete.addEventListener('close', onDialogClosed);
}

// A room switch: what belonged to the room shown closes.
export function closeActions() {
  closeMenu(false);
  closePicker(false);
  if (editing) cancelEdit(false);
}
