// The active room's view: switching rooms, keeping the newest message in sight, and the
// parts of the page that follow the active room (title, empty state, composer, "older").

import { closeActions } from './actions.js';
import { ui } from './dom.js';
import { maybeProbeOlder } from './history.js';
import { renderMembers } from './members.js';
import { entryEl, syncDays } from './messages.js';
import { firstMessageId } from './order.js';
import { closeRoom, maybeRead, openRoom } from './readmarks.js';
import { renderReplyBar } from './reply.js';
import { activeRoom, setActive, updateRoomEntry, updateTitle } from './roomlist.js';
import { hasPending, renderPending } from './sending.js';
import { updateSearch } from './search.js';
import { scheduleSave } from './session.js';
import { renderTyping } from './typingview.js';

const BOTTOM_SLACK_PX = 48;

export function atBottom() {
  const s = ui.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < BOTTOM_SLACK_PX;
}

export function scrollToBottom() {
  ui.scroller.scrollTop = ui.scroller.scrollHeight;
  ui.jumpLatest.hidden = true;
}

// Each room keeps where its view was: back in it, the page shows the same place.
export function activate(name) {
  const prev = activeRoom();
  if (prev) {
    prev.stick = atBottom();
    prev.scrollTop = ui.scroller.scrollTop;
    closeRoom(prev);
  }
  closeActions();
  setActive(name);
  const room = activeRoom();
  if (room) openRoom(room);
  if (prev) updateRoomEntry(prev);
  if (room) {
    updateRoomEntry(room);
    // Keep the active entry in sight in a long list.
    if (typeof room.li.scrollIntoView === 'function') room.li.scrollIntoView({ block: 'nearest' });
  }
  ui.roomTitle.textContent = room ? '#' + room.name : 'quart_chat';
  ui.leave.hidden = !room;
  const nodes = room ? room.entries.map(entryEl) : [];
  for (const n of nodes) n.classList.remove('enter');
  ui.messages.replaceChildren(...nodes);
  syncDays();
  ui.messages.setAttribute('aria-label', room ? 'Messages in #' + room.name : 'Messages');
  renderPending();
  renderMembers();
  renderReplyBar();
  updateEmptyState();
  updateComposer();
  updateLoadOlder();
  updateTitle();
  ui.jumpLatest.hidden = true;
  if (room) {
    if (room.stick) scrollToBottom();
    else ui.scroller.scrollTop = room.scrollTop;
    maybeProbeOlder(room);
  }
  document.body.classList.toggle('has-room', !!room);
  renderTyping();
  updateSearch();
  maybeRead();
  scheduleSave();
}

export function updateEmptyState() {
  const room = activeRoom();
  const title = ui.emptyState.querySelector('.empty-title');
  const hint = ui.emptyState.querySelector('.empty-hint');
  if (!room) {
    ui.emptyState.hidden = false;
    title.textContent = 'Pick a name and join a room';
    hint.textContent = 'Type your name and a room, then press Join — or click a room in the list.';
  } else if (!room.entries.length && !hasPending(room.name)) {
    ui.emptyState.hidden = false;
    title.textContent = room.everJoined ? 'No messages yet' : 'Joining #' + room.name + '…';
    hint.textContent = room.everJoined ? 'Say hello — your message will be the first one here.' : '';
  } else {
    ui.emptyState.hidden = true;
  }
}

export function updateComposer() {
  const room = activeRoom();
  ui.message.disabled = !room;
  // Until the first `joined` of a room nothing can be sent to it: the text stays in the box.
  ui.send.disabled = !room || !room.everJoined;
  ui.message.placeholder = !room ? 'Join a room to start chatting'
    : room.everJoined ? 'Message #' + room.name : 'Joining #' + room.name + '…';
  ui.message.title = room ? 'Enter sends, Shift+Enter starts a new line' : '';
}

export function updateLoadOlder() {
  const room = activeRoom();
  const show = !!room && room.hasMore !== false && firstMessageId(room.entries) !== null;
  ui.loadOlder.hidden = !show;
  ui.loadOlder.disabled = !!room && room.loadingOlder;
  ui.loadOlder.textContent = room && room.loadingOlder ? 'Loading…' : 'Load older messages';
}
