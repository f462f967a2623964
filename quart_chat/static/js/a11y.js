// Focus and what a screen reader hears: short notes in #sr-status (the connection, the length
// limit), new messages once each in #sr-log, and where the keyboard goes when what held it
// disappears.

import { el, plural, ui } from './dom.js';
import { validUser } from './ids.js';

const SR_LOG_KEEP = 20;        // lines kept in the message announcer
const BURST_SAID_ALONE = 3;    // more new messages at once are said as a count

let connSaid = '';             // the connection state last said: '', 'open', 'lost'

// Only a keyboard's focus is moved: a tap on a phone must not open its keyboard.
export function keyboardFocusIn(node) {
  const a = document.activeElement;
  return !!a && a !== document.body && node.contains(a) && a.matches(':focus-visible');
}

// Where the focus goes when what held it is gone (a closed toast, a retried message, a
// hidden button): the message box, or the join form when there is no room.
export function focusComposer() {
  if (!ui.message.disabled) ui.message.focus();
  else if (!ui.username.readOnly && !validUser(ui.username.value)) ui.username.focus();
  else ui.room.focus();
}

export function announce(text) {
  ui.srStatus.textContent = text;
}

// Said once per change of state, not at every retry of a reconnecting page.
export function announceConnected() {
  if (connSaid !== 'open') announce(connSaid === 'lost' ? 'Connected again' : 'Connected');
  connSaid = 'open';
}

export function announceDisconnected(note) {
  if (connSaid !== 'lost') announce('Disconnected: ' + note + '. Reconnecting by itself.');
  connSaid = 'lost';
}

// New messages of the active room, from others; many at once (a catch-up after a reconnect)
// as a count and the last one. #messages itself is a log read on demand: rebuilding it (a
// room switch, older history) says nothing.
export function announceMessages(roomName, list) {
  const line = (m) => (typeof m.user === 'string' ? m.user : '') + ': ' + (typeof m.text === 'string' ? m.text : '');
  const lines = list.length > BURST_SAID_ALONE
    ? [plural(list.length, 'new message', 'new messages') + ' in #' + roomName + '. The last, from ' + line(list[list.length - 1])]
    : list.map(line);
  for (const text of lines) ui.srLog.append(el('p', null, text));
  while (ui.srLog.childElementCount > SR_LOG_KEEP) ui.srLog.firstElementChild.remove();
}
