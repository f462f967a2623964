// Going to a message of a room, from a search result: scrolled to and lit up when it is
// loaded; else the history around it is loaded first (docs/protocol.md, GET history), and
// joined to what the page holds so that the room's view never has a hole in it.

import { ui } from './dom.js';
import { fetchHistory } from './history.js';
import { beforeToFetch } from './life.js';
import { addMessage, findEntry, syncDays } from './messages.js';
import { firstMessageId } from './order.js';
import { recount } from './readmarks.js';
import { flashEntry } from './reply.js';
import { activeRoom } from './roomlist.js';
import { toast } from './toasts.js';
import { isAfter } from './unread.js';
import { updateEmptyState, updateLoadOlder } from './view.js';

const CONTEXT = 25;        // the message and the ones before it, for context
const FILL_PAGE = 500;     // pages that join it to what is loaded (the server's largest)
const FILL_PAGES = 20;     // ... at most this many: 10,000 messages between them

export async function showMessage(room, id) {
  let e = findEntry(room, id);
  if (!e) {
    await loadAround(room, id);
    if (activeRoom() !== room) return;
    e = findEntry(room, id);
  }
  if (!e || !e.el || !e.el.isConnected) return;
  flashEntry(e.el);
}

function say(text) { toast(text, '', { code: 'info', group: 'search' }); }

// Keeps the view whole: the page of CONTEXT messages up to `id`, then the pages between it
// and the oldest message loaded; nothing is added when they cannot be joined.
async function loadAround(room, id) {
  if (room.loadingOlder) return;
  const entries = room.entries;   // a new array once the room is left
  room.loadingOlder = true;
  updateLoadOlder();
  try {
    const around = await fetchHistory(room, beforeToFetch(id), CONTEXT);
    if (room.entries !== entries) return;
    const got = around.messages;
    if (!got.length || got[got.length - 1].id !== id) {
      say('That message is no longer in the history');
      return;
    }
    const between = [];
    let first = firstMessageId(room.entries);
    for (let k = 0; first && isAfter(first, id) && k < FILL_PAGES; k++) {
      const page = await fetchHistory(room, first, FILL_PAGE);
      if (room.entries !== entries) return;
      if (!page.messages.length) break;
      between.push(...page.messages);
      first = page.messages[0].id;
      if (!page.hasMore) break;
    }
    if (first && isAfter(first, id)) {
      say('That message is too far back to show here');
      return;
    }
    for (const m of [...got, ...between]) addMessage(room, m, { live: false, rest: true });
    if (firstMessageId(room.entries) === got[0].id) room.hasMore = around.hasMore;
    recount(room);
    if (activeRoom() === room) {
      syncDays();
      updateEmptyState();
    }
  } catch (err) {
    toast('Could not load that message', err && err.message, { code: 'history', group: 'search' });
  } finally {
    room.loadingOlder = false;
    if (activeRoom() === room) updateLoadOlder();
  }
}
