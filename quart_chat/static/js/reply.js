// Replies (docs/protocol.md, "A message's life"): the "Replying to Alice: ..." bar above
// the message box, the quote a reply shows of its original (fetched once from GET history when the page
// has not loaded it), and going to the original from a quote.

import { announce, focusComposer } from './a11y.js';
import { el, ui } from './dom.js';
import { loadOlder } from './history.js';
import { apiFetch } from './identity.js';
import { applyChange, beforeToFetch, fetchedOriginal, firstLine, quoteView } from './life.js';
import { findEntry, refreshQuotes } from './messages.js';
import { activeRoom, getRoom } from './roomlist.js';
import { toast } from './toasts.js';

const FLASH_MS = 1600;
const PAGES_TO_FIND = 20;   // "Load older messages" pages a quote may load to reach its original

// What a reply to message `id` of `room` shows of it (life.quoteView).
export function quoteFor(room, id) {
  const e = findEntry(room, id);
  if (e) return quoteView(e.msg, false);
  if (room.gone.has(id)) return quoteView(null, true);
  const got = room.originals.get(id);
  if (!got) {
    fetchOriginal(room, id);
    return quoteView(null, false);
  }
  return got.state === 'found' ? quoteView(got.msg, false) : quoteView(null, got.state === 'deleted');
}

async function fetchOriginal(room, id) {
  room.originals.set(id, { state: 'loading' });
  const entries = room.entries;
  let result = { state: 'unknown' };
  try {
    const r = await apiFetch('/rooms/' + encodeURIComponent(room.name) + '/history?limit=1&before=' +
      encodeURIComponent(beforeToFetch(id)));
    if (r.ok) {
      const data = await r.json();
      result = fetchedOriginal(id, data && data.messages);
    }
  } catch (e) {
    /* left as "an earlier message" */
  }
  if (room.entries !== entries) return;   // the room was left meanwhile
  room.originals.set(id, result);
  refreshQuotes(room, id);
}

// A change to a message the page holds only as a replied-to original.
export function originalChanged(room, change) {
  const got = room.originals.get(change.id);
  if (got && got.msg) applyChange(got.msg, change);
  if (got && change.kind === 'delete') room.originals.set(change.id, { state: 'deleted' });
  if (change.kind === 'delete' && room.replyTo && room.replyTo.id === change.id) {
    cancelReply(room);
    toast('The message you were replying to was deleted', '', { code: 'info', group: 'reply' });
  }
}

export function startReply(room, entry) {
  const user = typeof entry.msg.user === 'string' ? entry.msg.user : '';
  room.replyTo = { id: entry.id, user, line: firstLine(entry.msg.text) };
  renderReplyBar();
  ui.message.focus();
  announce('Replying to ' + user + '. Escape cancels the reply.');
}

export function cancelReply(room) {
  if (!room || !room.replyTo) return false;
  room.replyTo = null;
  renderReplyBar();
  return true;
}

// The bar shows the active room's reply; the message box is described by it meanwhile.
export function renderReplyBar() {
  const room = activeRoom();
  const r = room && room.replyTo;
  ui.replyBar.hidden = !r;
  if (r) {
    ui.replyBarText.replaceChildren('Replying to ', el('strong', 'reply-bar-user', r.user),
      r.line ? ': ' : '', el('span', 'reply-bar-line', r.line));
    ui.message.setAttribute('aria-describedby', 'counter reply-bar-text');
  } else {
    ui.replyBarText.replaceChildren();
    ui.message.setAttribute('aria-describedby', 'counter');
  }
}

// A quote was clicked (or pressed with Enter): the original, scrolled into view and lit up
// for a moment, loading older pages when it is further back than what is shown.
export async function goToOriginal(roomName, id) {
  const room = getRoom(roomName);
  if (!room) return;
  let e = findEntry(room, id);
  for (let k = 0; !e && k < PAGES_TO_FIND && room.hasMore !== false && !room.gone.has(id); k++) {
    const first = room.entries;
    await loadOlder(room, false);
    if (room.entries !== first || activeRoom() !== room) return;
    e = findEntry(room, id);
  }
  if (activeRoom() !== room) return;
  if (!e || !e.el || !e.el.isConnected) {
    const deleted = room.gone.has(id) || (room.originals.get(id) || {}).state === 'deleted';
    toast(deleted ? 'The original message was deleted' : 'The original message is no longer in the history',
      '', { code: 'info', group: 'reply' });
    return;
  }
  flashEntry(e.el);
}

// A message's element scrolled into view and lit up for a moment; the focus goes to it so
// that the keyboard goes on from there.
export function flashEntry(node) {
  node.scrollIntoView({ block: 'center' });
  node.classList.remove('flash');
  void node.offsetWidth;   // restart the animation when it is still running
  node.classList.add('flash');
  setTimeout(() => node.classList.remove('flash'), FLASH_MS);
  node.tabIndex = -1;
  node.focus({ preventScroll: true });
}

// Escape in the message box: the reply goes, the text stays.
export function cancelActiveReply() {
  const room = activeRoom();
  if (!cancelReply(room)) return false;
  announce('Reply cancelled');
  focusComposer();
  return true;
}
