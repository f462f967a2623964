// "Alice is typing…" (docs/protocol.md, `typing`): the #typing line under the active room's
// messages, fed by the others' `typing` frames, and this page's own `typing` frames while
// the user types (at most one a second per room; the server passes on one every 2 s).

import { link, sendFrame } from './connection.js';
import { ui } from './dom.js';
import { typingFrame } from './frames.js';
import { me } from './identity.js';
import { activeRoom, getRoom } from './roomlist.js';
import { TypingRoster, typingDue, typingLine } from './typing.js';

const EXPIRY_SLACK_MS = 20;

const roster = new TypingRoster();
const sentAt = new Map();   // room -> when this page last sent `typing` there
let timer = null;

export function onTypingFrame(f) {
  if (typeof f.room !== 'string' || typeof f.user !== 'string' || !f.user) return;
  if (f.user === me.user) return;   // this user's other tabs and devices
  const room = getRoom(f.room);
  if (!room || !room.wanted) return;
  roster.typing(f.room, f.user, Date.now());
  renderTyping();
}

// Their message arrived (or they left): the line goes at once, not 5 s later.
export function typingStopped(roomName, user) {
  if (roster.stopped(roomName, user)) renderTyping();
}

export function forgetTyping(roomName) {
  roster.clearRoom(roomName);
  sentAt.delete(roomName);
  renderTyping();
}

// The line changes only when the names do: #typing is a polite live region, and a screen
// reader hears each change, not each frame.
export function renderTyping() {
  const now = Date.now();
  roster.prune(now);
  const room = activeRoom();
  const line = room ? typingLine(roster.names(room.name, now)) : '';
  if (ui.typing.textContent !== line) ui.typing.textContent = line;
  ui.typing.classList.toggle('on', !!line);
  clearTimeout(timer);
  const next = roster.nextExpiry();
  timer = next === null ? null : setTimeout(renderTyping, Math.max(0, next - now) + EXPIRY_SLACK_MS);
}

// An input event in the message box: the others hear that this user types.
export function onComposerInput() {
  const room = activeRoom();
  if (!room || room.joinedEpoch !== link.epoch || link.conn !== 'open' || !ui.message.value.trim()) return;
  const now = Date.now();
  if (!typingDue(sentAt.has(room.name) ? sentAt.get(room.name) : null, now)) return;
  if (sendFrame(typingFrame(room.name))) sentAt.set(room.name, now);
}
