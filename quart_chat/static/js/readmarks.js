// Read markers on the page (docs/protocol.md, `read` and `joined.read`): one per room and
// user, the same on every tab and device of the user. This page sends how far the user has
// read (the newest message shown, while the room is active, the tab visible and the view at
// the bottom), follows the marker its other tabs move, counts the unread messages and
// mentions from it, and draws the "New messages" line where a room opened unread.

import { link, sendFrame } from './connection.js';
import { el, ui } from './dom.js';
import { readFrame } from './frames.js';
import { me } from './identity.js';
import { findEntry, isMine } from './messages.js';
import { ReadBatch } from './readbatch.js';
import { activeRoom, getRoom, rooms, updateRoomEntry, updateTitle } from './roomlist.js';
import { firstUnreadId, newestMessageId, unreadCounts } from './unread.js';
import { atBottom } from './view.js';

const batch = new ReadBatch();
const timers = new Map();   // room -> the batched `read` waiting for its second to pass
let line = null;            // the "New messages" element (one: only the active room shows it)

export function recount(room) {
  const { unread, mentioned } = unreadCounts(room.entries, batch.marker(room.name), isMine, me.user);
  if (unread === room.unread && mentioned === room.mentioned) return;
  room.unread = unread;
  room.mentioned = mentioned;
  updateRoomEntry(room);
  updateTitle();
}

// `joined.read` or a `read` frame: another tab or device read this far.
export function markerReceived(room, id) {
  if (typeof id === 'string' && batch.receive(room.name, id)) recount(room);
}

export function forgetReads(room) {
  batch.forget(room.name);
  clearTimeout(timers.get(room.name));
  timers.delete(room.name);
  room.divider = null;
  room.dividerDue = false;
}

function joinedNow(room) {
  return !!room && room.wanted && room.joinedEpoch === link.epoch && link.conn === 'open';
}

function looking(room) {
  return joinedNow(room) && rooms.active === room.name && document.visibilityState === 'visible' && atBottom();
}

function send(room, id) {
  if (id && sendFrame(readFrame(room.name, id))) recount(room);
}

// Called whenever what the user sees may have changed: a message shown, a scroll, a room
// switch, the tab shown again.
export function maybeRead() {
  const room = activeRoom();
  if (!looking(room)) return;
  const { send: now, wait } = batch.offer(room.name, newestMessageId(room.entries), Date.now());
  if (now) send(room, now);
  else if (wait !== null && !timers.has(room.name)) {
    const name = room.name;
    timers.set(name, setTimeout(() => {
      timers.delete(name);
      const r = getRoom(name);
      // What was offered was seen; it goes even if the user has looked away since.
      if (joinedNow(r)) send(r, batch.due(name, Date.now()));
      maybeRead();
    }, wait));
  }
}

// The room becomes the active one: its line goes before the first unread message, decided
// now, or at its `joined` when its history and marker are not there yet.
export function openRoom(room) {
  room.divider = null;
  room.dividerDue = !room.everJoined;
  if (room.everJoined) room.divider = firstUnreadId(room.entries, batch.marker(room.name), isMine);
}

export function joinedOpen(room) {
  if (!room.dividerDue || rooms.active !== room.name) return;
  room.dividerDue = false;
  room.divider = firstUnreadId(room.entries, batch.marker(room.name), isMine);
  syncDivider();
}

// The user left the room's view, or sent: the line has said what it had to.
export function closeRoom(room) {
  room.divider = null;
  room.dividerDue = false;
  if (rooms.active === room.name) syncDivider();
}

// The line right before its message in #messages (after that day's separator), or nowhere.
export function syncDivider() {
  const room = activeRoom();
  const e = room && room.divider ? findEntry(room, room.divider) : null;
  if (!e || !e.el || e.el.parentNode !== ui.messages) {
    if (line) line.remove();
    return;
  }
  if (!line) {
    line = el('div', 'new-messages');
    line.append(el('span', 'new-messages-label', 'New messages'));
  }
  if (e.el.previousSibling !== line) ui.messages.insertBefore(line, e.el);
}
