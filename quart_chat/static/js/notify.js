// Browser notifications of mentions (docs/protocol.md, the message object's `mentions`):
// asked for only when the user presses "Enable notifications" (a browser refuses a request
// made without a gesture, and asking on load is rude), shown for a message that mentions
// this user while they are not looking at its room.

import { ui } from './dom.js';
import { me } from './identity.js';
import { isMine } from './messages.js';
import { rooms } from './roomlist.js';
import { mentionsUser } from './unread.js';
import { activate } from './view.js';

const BODY_CHARS = 180;

function supported() { return typeof window.Notification === 'function'; }

function updateButton() {
  ui.notify.hidden = !supported() || Notification.permission !== 'default';
}

export function initNotify() {
  updateButton();
  ui.notify.addEventListener('click', async () => {
    try { await Notification.requestPermission(); } catch (e) { /* refused or unsupported */ }
    updateButton();
  });
}

// A live message (not history): notified when it mentions this user, is not theirs, and
// they are not looking at its room in a visible tab.
export function maybeNotify(room, msg) {
  if (!supported() || Notification.permission !== 'granted') return;
  if (isMine(msg) || !mentionsUser(msg, me.user)) return;
  if (document.visibilityState === 'visible' && rooms.active === room.name) return;
  const text = typeof msg.text === 'string' ? msg.text : '';
  try {
    const n = new Notification(msg.user + ' mentioned you in #' + room.name, {
      body: text.length > BODY_CHARS ? text.slice(0, BODY_CHARS) + '…' : text,
      tag: room.name + '/' + msg.id,
    });
    n.addEventListener('click', () => {
      window.focus();
      if (room.wanted) activate(room.name);
      n.close();
    });
  } catch (e) {
    /* some browsers allow notifications from a service worker only */
  }
}
