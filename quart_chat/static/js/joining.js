// Joining and leaving rooms: the join form and its hints, the `join` frames (with `since`
// when the page was in the room before), the joins awaiting a reply, and a refused join.

import { focusComposer, keyboardFocusIn } from './a11y.js';
import { link, sendFrame } from './connection.js';
import { ui } from './dom.js';
import { joinFrame, leaveFrame, sinceFor } from './frames.js';
import { ROOM_RE, ROOM_RULE, validUser } from './ids.js';
import { currentName, lockName, maybeUnlockName, me, rememberName } from './identity.js';
import {
  activeRoom, applyRoomFilter, ensureRoom, filtering, firstWanted, getRoom, removeRoom, resetRoom,
  rooms, updateRoomEntry, updateTitle,
} from './roomlist.js';
import { forgetReads } from './readmarks.js';
import { refuseRoom, sends } from './sending.js';
import { scheduleSave } from './session.js';
import { clearToasts } from './toasts.js';
import { forgetTyping } from './typingview.js';
import { activate } from './view.js';

const INVALID_ROOM_TEXT = 'Invalid room name — use ' + ROOM_RULE;

// Rooms whose `join` awaits a reply on the current socket, in the order sent: an error frame
// with ref `join` answers the oldest.
let joinQueue = [];

export function clearJoinQueue() { joinQueue = []; }

export function joinAnswered(name) {
  const i = joinQueue.indexOf(name);
  if (i >= 0) joinQueue.splice(i, 1);
}

export function oldestJoin() { return joinQueue.shift(); }

function joinRoom(name) {
  const roomName = String(name).trim();
  const user = currentName();
  if (!validUser(user)) {
    joinHint(user ? 'Names are 1–32 characters without control characters' : 'Pick a name first', 'name');
    ui.username.focus();
    return false;
  }
  if (!ROOM_RE.test(roomName)) {
    joinHint(roomName ? INVALID_ROOM_TEXT : 'Type a room name to join', 'invalid_room');
    ui.room.focus();
    return false;
  }
  joinHint(null);
  clearToasts('join');
  if (me.user === null && !me.tokenName) {
    ui.username.value = user;
    rememberName(user);
  }
  lockName();
  const room = ensureRoom(roomName);
  if (!room.wanted) {
    room.wanted = true;
    room.returnTo = rooms.active;
    if (link.conn === 'open') sendJoin(room);
    updateRoomEntry(room);
  }
  activate(room.name);
  return true;
}

// What is wrong with the join form is said in the form, next to the fields; it goes as soon
// as they are edited or a join succeeds.
export function joinHint(text, code) {
  ui.joinHint.textContent = text || '';
  ui.joinHint.hidden = !text;
  if (text) ui.joinHint.dataset.code = code;
  else delete ui.joinHint.dataset.code;
  const bad = text ? (code === 'name' ? ui.username : ui.room) : null;
  for (const f of [ui.username, ui.room]) {
    if (f === bad) f.setAttribute('aria-invalid', 'true');
    else f.removeAttribute('aria-invalid');
  }
}

// In token mode the name is the token's: repeating it is allowed (section 9).
export function sendJoin(room) {
  if (sendFrame(joinFrame(room.name, currentName(), sinceFor(room)))) joinQueue.push(room.name);
}

export function onJoinClick() {
  const name = ui.room.value.trim();
  if (joinRoom(name)) {
    ui.room.value = '';
    applyRoomFilter();
    ui.message.focus();
  }
}

export function onRoomClick(ev) {
  const li = ev.target.closest('[data-room]');
  if (!li || !ui.rooms.contains(li)) return;
  const room = getRoom(li.dataset.room);
  if (!room) return;
  if (room.wanted) activate(room.name);
  else if (!joinRoom(room.name)) return;
  if (filtering()) {
    ui.room.value = '';
    applyRoomFilter();
  }
  if (ev.detail === 0) ui.message.focus();   // from the keyboard (a pointer's click has detail >= 1)
}

export function leaveActive() {
  const room = activeRoom();
  if (!room) return;
  joinAnswered(room.name);
  forgetRoom(room);
  resetRoom(room);
  sends.dropRoom(room.name);
  sendFrame(leaveFrame(room.name));
  const next = firstWanted();
  const hadFocus = keyboardFocusIn(ui.leave);
  activate(next ? next.name : null);
  if (hadFocus && ui.leave.hidden) focusComposer();
  updateRoomEntry(room);
  updateTitle();
  maybeUnlockName();
  scheduleSave();
}

// What the page holds of the room beside its messages: its marker and who types there.
function forgetRoom(room) {
  forgetReads(room);
  forgetTyping(room.name);
}

// A join the server refused: the room is not joined, in any part of the page.
export function refuseJoin(room) {
  refuseRoom(room);
  forgetRoom(room);
  resetRoom(room);
  if (rooms.active === room.name) {
    const back = room.returnTo ? getRoom(room.returnTo) : null;
    const next = back && back.wanted ? back : firstWanted();
    activate(next ? next.name : null);
  }
  updateRoomEntry(room);
  if (!room.known) removeRoom(room.name);   // typed here and never created: no entry
  updateTitle();
  maybeUnlockName();
  scheduleSave();
}
