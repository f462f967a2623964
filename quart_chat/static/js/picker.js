// The emoji picker: a small dialog of common emoji next to a message, opened from its tools,
// its actions menu or its "add a reaction" chip. Arrow keys move, Enter or a click picks
// (an emoji this user already put on the message takes it off), Escape closes; the focus
// goes back where it came from.

import { button, el, placeNear, rovingIndex, ui } from './dom.js';
import { me } from './identity.js';
import { COMMON_EMOJI } from './life.js';
import { findEntry } from './messages.js';
import { getRoom } from './roomlist.js';
import { toggleReaction } from './actions.js';

const COLS = 6;

let open = null;   // {room, id, anchor, returnTo}

export function pickerOpen() { return open !== null; }

function buttons() { return [...ui.emojiGrid.querySelectorAll('.emoji-choice')]; }

function build() {
  if (ui.emojiGrid.childElementCount) return;
  for (const [emoji, words] of COMMON_EMOJI) {
    const b = button('emoji-choice', emoji, () => pick(emoji));
    b.dataset.emoji = emoji;
    b.title = words;
    b.setAttribute('aria-label', words);
    b.tabIndex = -1;
    ui.emojiGrid.append(b);
  }
  ui.emojiPicker.addEventListener('keydown', onKey);
  ui.emojiPicker.prepend(el('div', 'popover-title', 'Add a reaction'));
}

// `anchor`: the element it opens beside; `returnTo`: where the focus goes when it closes.
export function openPicker(anchor, roomName, id, returnTo) {
  build();
  const room = getRoom(roomName);
  const entry = room && findEntry(room, id);
  if (!entry) return;
  open = { room: roomName, id, anchor, returnTo: returnTo || anchor };
  const mine = entry.msg.reactions || {};
  for (const b of buttons()) {
    const users = mine[b.dataset.emoji];
    b.setAttribute('aria-pressed', Array.isArray(users) && users.includes(me.user) ? 'true' : 'false');
    b.tabIndex = -1;
  }
  placeNear(ui.emojiPicker, anchor);
  const first = buttons()[0];
  first.tabIndex = 0;
  first.focus();
}

export function placePicker() {
  if (open && open.anchor.isConnected) placeNear(ui.emojiPicker, open.anchor);
  else closePicker(false);
}

export function closePicker(refocus) {
  if (!open) return;
  const back = open.returnTo;
  open = null;
  ui.emojiPicker.hidden = true;
  if (refocus && back && back.isConnected) back.focus();
}

function pick(emoji) {
  if (!open) return;
  const { room, id } = open;
  closePicker(true);
  toggleReaction(room, id, emoji);
}

function onKey(ev) {
  if (ev.key === 'Escape') {
    ev.preventDefault();
    ev.stopPropagation();
    closePicker(true);
    return;
  }
  if (ev.key === 'Tab') {   // a small dialog: Tab leaves it, back where it came from
    ev.preventDefault();
    closePicker(true);
    return;
  }
  const all = buttons();
  const i = all.indexOf(document.activeElement);
  const next = rovingIndex(ev.key, Math.max(i, 0), all.length, COLS);
  if (next < 0) return;
  ev.preventDefault();
  for (const b of all) b.tabIndex = -1;
  all[next].tabIndex = 0;
  all[next].focus();
}
