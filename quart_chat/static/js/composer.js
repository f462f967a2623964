// The message box: sending what is typed to the active room, its height, and the server's
// limits as the user sees them (the length counter from 80% of CHAT_MAX_TEXT on, and refusing
// a text or frame the server would refuse). Both limits come from the page's data attributes.

import { announce } from './a11y.js';
import { el, ui } from './dom.js';
import { messageFits } from './frames.js';
import { counterView, excessOf, fmt, readLimit } from './limits.js';
import { closeRoom } from './readmarks.js';
import { cancelReply } from './reply.js';
import { activeRoom } from './roomlist.js';
import { sendText, sends } from './sending.js';
import { clearToasts, toast } from './toasts.js';

const MAX_HEIGHT_PX = 180;

const limits = { maxText: 2000, maxFrame: 16384 };   // until read from the page
let overSaid = false;   // "over the limit" was said for the text in the box

export function readLimits() {
  limits.maxText = readLimit(ui.message.dataset.maxText, limits.maxText);
  limits.maxFrame = readLimit(ui.message.dataset.maxFrame, limits.maxFrame);
}

export function onSend() {
  const room = activeRoom();
  if (!room) { toast('Join a room first', '', { code: 'no_room', group: 'join' }); return; }
  if (!room.everJoined) { ui.message.focus(); return; }   // still joining: the text stays here
  const text = ui.message.value;
  if (!text.trim() || tooLong(text)) { ui.message.focus(); return; }
  if (sendText(room.name, text, room.replyTo ? room.replyTo.id : null)) {
    closeRoom(room);   // the "New messages" line has said what it had to
    ui.message.value = '';
    autoGrow();
    cancelReply(room);
  }
  ui.message.focus();
}

export function autoGrow() {
  // CSSOM writes are allowed by the CSP (only style attributes in markup are not).
  const t = ui.message;
  t.style.height = 'auto';
  t.style.height = Math.min(t.scrollHeight + 2, MAX_HEIGHT_PX) + 'px';
  updateCounter();
}

// "1,850 / 2,000" beside the box; over the limit, how many too many, the box marked
// invalid, and a screen reader told once.
function updateCounter() {
  const max = limits.maxText;
  const { n, show, over, excess } = counterView(ui.message.value, max);
  ui.counter.hidden = !show;
  ui.counter.classList.toggle('over', over);
  if (show) {
    ui.counter.replaceChildren(
      document.createTextNode(fmt(n) + ' / ' + fmt(max)),
      el('span', 'sr-only', ' characters'),
      document.createTextNode(over ? ' · ' + fmt(excess) + ' too many' : ''));
  } else {
    ui.counter.replaceChildren();
  }
  if (over) ui.message.setAttribute('aria-invalid', 'true');
  else ui.message.removeAttribute('aria-invalid');
  if (over && !overSaid) announce('Over the limit of ' + fmt(max) + ' characters: ' + fmt(excess) + ' too many.');
  if (!over && overSaid) clearToasts('length');   // its cause is gone
  overSaid = over;
}

// Over CHAT_MAX_TEXT: not sent (the server would refuse it), and the toast says by how much.
export function tooLong(text) {
  const excess = excessOf(text, limits.maxText);
  if (!excess) return false;
  toast('Message too long: ' + fmt(limits.maxText + excess) + ' characters, the limit is ' + fmt(limits.maxText),
    'Shorten it by ' + fmt(excess) + ' to send it.', { code: 'too_long', group: 'length' });
  return true;
}

// Over CHAT_MAX_FRAME once encoded: the server would close the socket (1009), so it is not sent.
export function fitsFrame(roomName, text, replyTo) {
  if (messageFits(roomName, text, sends.prefix, limits.maxFrame, replyTo)) return true;
  toast('Message too long — it was not sent', 'Shorten it and try again.', { code: 'too_big', group: 'send' });
  return false;
}
