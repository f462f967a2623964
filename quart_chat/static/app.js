// quart_chat browser client: the entry module. ES modules, no build step, no inline code
// (strict CSP). It wires the page's controls and the connection to the modules in js/,
// each of which owns one part of the page's state (each says which in its first lines).
// The pure ones (frames, backoff, ids, limits, days, order, pending, storage, token, life,
// typing, unread, readbatch, mentions, searchterms) touch no DOM and are unit-tested by
// Node: node --test tests/js/

import { dropChanges, editLastOwn, wireActions } from './js/actions.js';
import { autoGrow, onSend, readLimits } from './js/composer.js';
import { reconnectNow, startConnection } from './js/connection.js';
import { bindUi, plainEnter, ui } from './js/dom.js';
import { rejoinOrder } from './js/frames.js';
import { loadOlder } from './js/history.js';
import { validUser } from './js/ids.js';
import { initIdentity, rememberName } from './js/identity.js';
import { handleFrame } from './js/incoming.js';
import { initNotify } from './js/notify.js';
import { maybeRead } from './js/readmarks.js';
import { initSearch } from './js/search.js';
import { onComposerInput } from './js/typingview.js';
import { clearJoinQueue, joinHint, leaveActive, onJoinClick, onRoomClick, sendJoin } from './js/joining.js';
import { syncDays } from './js/messages.js';
import { activeRoom, applyRoomFilter, loadRooms, rooms, updateRoomsEmpty, wantedRooms } from './js/roomlist.js';
import { checkUnconfirmed, requeueInFlight } from './js/sending.js';
import { cancelActiveReply } from './js/reply.js';
import { restoreSession, saveSession } from './js/session.js';
import { clearToasts } from './js/toasts.js';
import { activate, atBottom, scrollToBottom } from './js/view.js';

const CHECK_UNCONFIRMED_MS = 3000;
const DAY_LABELS_MS = 60000;   // "Today" becomes "Yesterday" at midnight

function wireJoinForm() {
  ui.join.addEventListener('click', onJoinClick);
  ui.room.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.isComposing) { ev.preventDefault(); onJoinClick(); }
  });
  ui.room.addEventListener('input', () => { joinHint(null); clearToasts('join'); applyRoomFilter(); });
  ui.username.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Enter' || ev.isComposing) return;
    ev.preventDefault();
    if (ui.room.value.trim()) onJoinClick();
    else ui.room.focus();
  });
  ui.username.addEventListener('input', () => {
    if (ui.joinHint.dataset.code === 'name') joinHint(null);
    clearToasts('join');
  });
  ui.username.addEventListener('change', () => {
    if (!ui.username.readOnly && validUser(ui.username.value)) rememberName(ui.username.value.trim());
  });
  ui.rooms.addEventListener('click', onRoomClick);
}

function wireConversation() {
  ui.send.addEventListener('click', onSend);
  ui.message.addEventListener('keydown', (ev) => {
    if (plainEnter(ev)) {
      ev.preventDefault();
      onSend();
    } else if (ev.key === 'ArrowUp' && !ui.message.value && !ev.shiftKey && !ev.altKey && !ev.ctrlKey && !ev.metaKey) {
      if (editLastOwn()) ev.preventDefault();   // Up in an empty box edits one's last message
    } else if (ev.key === 'Escape' && cancelActiveReply()) {
      ev.preventDefault();
    }
  });
  ui.replyCancel.addEventListener('click', cancelActiveReply);
  wireActions();
  ui.message.addEventListener('input', autoGrow);
  ui.message.addEventListener('input', onComposerInput);
  ui.loadOlder.addEventListener('click', () => loadOlder(null, false));
  ui.leave.addEventListener('click', leaveActive);
  ui.reconnect.addEventListener('click', reconnectNow);
  ui.jumpLatest.addEventListener('click', (ev) => {
    scrollToBottom();
    if (ev.detail === 0) ui.message.focus();   // the button is gone: the keyboard goes on in the box
  });
  ui.scroller.addEventListener('scroll', () => {
    const room = activeRoom();
    const bottom = atBottom();
    if (room) room.stick = bottom;
    if (bottom) {
      ui.jumpLatest.hidden = true;
      maybeRead();
    }
  }, { passive: true });
  // Read only what was seen: the tab shown again counts as looking.
  document.addEventListener('visibilitychange', maybeRead);
  window.addEventListener('focus', maybeRead);
  // A toast, a taller message box or a resized window shrinks the view: keep the newest in sight.
  if (typeof ResizeObserver === 'function') {
    new ResizeObserver(() => {
      const room = activeRoom();
      if (room && room.stick) ui.scroller.scrollTop = ui.scroller.scrollHeight;
    }).observe(ui.scroller);
  }
}

function init() {
  bindUi();
  readLimits();
  initIdentity();
  wireJoinForm();
  wireConversation();
  initNotify();
  initSearch();
  window.addEventListener('online', reconnectNow);
  setInterval(checkUnconfirmed, CHECK_UNCONFIRMED_MS);
  setInterval(syncDays, DAY_LABELS_MS);
  window.addEventListener('pagehide', saveSession);

  updateRoomsEmpty();
  activate(null);
  restoreSession();
  loadRooms();
  startConnection({
    connecting: clearJoinQueue,
    // Every room again, with `since` where the page has history (docs/protocol.md, "Reconnecting correctly").
    opened() {
      for (const r of rejoinOrder(wantedRooms(), rooms.active)) sendJoin(r);
      loadRooms();
    },
    frame: handleFrame,
    closed() {
      clearJoinQueue();
      requeueInFlight();
      dropChanges();
    },
  });
}

// A module runs after the document is parsed (it is deferred), so the elements are there.
init();
