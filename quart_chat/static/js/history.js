// Older history of a room, page by page from GET /rooms/<name>/history, and whether there is
// any (so "Load older messages" only shows when it can load something).

import { ui } from './dom.js';
import { apiFetch } from './identity.js';
import { addMessage, syncDays } from './messages.js';
import { firstMessageId } from './order.js';
import { recount } from './readmarks.js';
import { activeRoom, rooms } from './roomlist.js';
import { toast } from './toasts.js';
import { atBottom, scrollToBottom, updateEmptyState, updateLoadOlder } from './view.js';

export const HISTORY_PAGE = 50;

function historyUrl(room, before, limit) {
  return '/rooms/' + encodeURIComponent(room.name) + '/history?limit=' + limit +
    (before ? '&before=' + encodeURIComponent(before) : '');
}

// One page of GET history: {messages (oldest first, each with its room), hasMore}; an
// error is thrown with the server's words.
export async function fetchHistory(room, before, limit) {
  const r = await apiFetch(historyUrl(room, before, limit));
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) throw new Error(data && data.error && data.error.message ? data.error.message : 'HTTP ' + r.status);
  const messages = data && Array.isArray(data.messages) ? data.messages : [];
  for (const m of messages) if (m && typeof m === 'object' && !m.room) m.room = room.name;
  return { messages, hasMore: !!(data && data.has_more) };
}

// One message before the first shown tells whether the button is useful.
export async function maybeProbeOlder(room) {
  if (room.hasMore !== null || room.probing) return;
  const first = firstMessageId(room.entries);
  if (first === null) return;
  room.probing = true;
  try {
    const r = await apiFetch(historyUrl(room, first, 1));
    if (!r.ok) return;
    const data = await r.json();
    if (room.hasMore === null && firstMessageId(room.entries) === first) {
      room.hasMore = Array.isArray(data.messages) && data.messages.length > 0;
    }
  } catch (e) {
    /* left unknown: the button stays */
  } finally {
    room.probing = false;
    if (rooms.active === room.name) updateLoadOlder();
  }
}

// One page of older history. `auto`: filling the view after a reload (no toast, the view
// kept at the bottom when it was there); else the user clicked "Load older messages", and
// the view stays on what they were reading.
export async function loadOlder(roomArg, auto) {
  const room = roomArg && roomArg.name ? roomArg : activeRoom();
  if (!room || room.loadingOlder) return;
  const first = firstMessageId(room.entries);
  if (first === null && !auto) { room.hasMore = false; updateLoadOlder(); return; }
  room.loadingOlder = true;
  if (rooms.active === room.name) updateLoadOlder();
  try {
    const page = await fetchHistory(room, first, HISTORY_PAGE);
    if (!room.wanted) return;
    const isActive = rooms.active === room.name;
    const s = ui.scroller;
    const stick = isActive && atBottom();
    const prevHeight = s.scrollHeight;
    const prevTop = s.scrollTop;
    for (const m of page.messages) addMessage(room, m, { live: false, rest: true });
    room.hasMore = page.hasMore;
    recount(room);
    if (isActive && rooms.active === room.name) {
      syncDays();
      updateEmptyState();
      if (auto && stick) scrollToBottom();
      else s.scrollTop = prevTop + (s.scrollHeight - prevHeight);
    }
  } catch (e) {
    if (!auto) toast('Could not load older messages', e && e.message, { code: 'history', group: 'history' });
  } finally {
    room.loadingOlder = false;
    if (rooms.active === room.name) updateLoadOlder();
  }
}
