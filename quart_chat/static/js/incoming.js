// What the server says (docs/protocol.md, "Frames from the server"), frame by frame: each handler updates the
// module that owns what changed.

import { changeAnswered } from './actions.js';
import { link } from './connection.js';
import { ui } from './dom.js';
import { decodeFrame } from './frames.js';
import { HISTORY_PAGE, loadOlder, maybeProbeOlder } from './history.js';
import { ID_RE, ROOM_RULE, parseId } from './ids.js';
import { confirmUser, currentName, me } from './identity.js';
import { joinAnswered, joinHint, oldestJoin, refuseJoin, sendJoin } from './joining.js';
import { memberJoined, memberLeft, renderMembers, setMembers } from './members.js';
import { addMessages, addNotice, applyChangeFrame } from './messages.js';
import { messageCount } from './order.js';
import { maybeNotify } from './notify.js';
import { joinedOpen, markerReceived, maybeRead, recount } from './readmarks.js';
import { ensureRoom, getRoom, removeRoom, roomCreated, rooms, updateRoomEntry } from './roomlist.js';
import { failPending, flushRoom, maybeClearSendToasts, renderPending, resolvePending, sends } from './sending.js';
import { scheduleSave } from './session.js';
import { clearToasts, toast } from './toasts.js';
import { onTypingFrame, typingStopped } from './typingview.js';
import { scrollToBottom, updateComposer, updateEmptyState, updateLoadOlder } from './view.js';

const JOIN_RETRY_MS = 3000;

export const ERROR_TEXT = {
  rate_limited: "You're sending too fast — slow down",
  invalid_text: 'Message not sent: it is empty or too long',
  unavailable: 'Server storage unavailable — your message was not sent',
  not_joined: "You're not in that room",
  invalid_room: 'Invalid room name — use ' + ROOM_RULE,
  invalid_user: 'Invalid name — 1–32 characters, no control characters, and it cannot change after your first join',
  limit_exceeded: 'This server has reached its room limit — join an existing room',
  forbidden: 'You are not allowed in that room',
  bad_json: 'The server could not read a request',
  bad_request: 'The server rejected a malformed request',
  unknown_type: 'The server did not understand a request',
};

// Short reasons shown on a refused message in the pending list.
const REFUSED_TEXT = {
  rate_limited: 'sent too fast',
  invalid_text: 'empty, too long or with invalid characters',
  unavailable: 'server storage unavailable',
  not_joined: 'not in this room',
};

export function handleFrame(raw) {
  const f = decodeFrame(raw);
  if (!f) return;
  switch (f.type) {
    case 'joined': onJoined(f); break;
    case 'message': onMessage(f); break;
    case 'ack': onAck(f); break;
    case 'room_created': if (typeof f.room === 'string') roomCreated(f.room, f.ts); break;
    case 'room_removed': if (typeof f.room === 'string') removeRoom(f.room); break;
    case 'user_joined': onMemberEvent(f, true); break;
    case 'user_left': onMemberEvent(f, false); break;
    case 'error': onError(f); break;
    case 'message_edited':
    case 'message_deleted':
    case 'reaction': onChange(f); break;
    case 'typing': onTypingFrame(f); break;
    case 'read': onRead(f); break;
    default: break;   // `left` and `pong` need nothing: the page acted when it sent them
  }
}

function onJoined(f) {
  const name = f.room;
  if (typeof name !== 'string') return;
  joinAnswered(name);
  const room = ensureRoom(name);
  room.known = true;
  if (!room.wanted) return;   // left meanwhile; the server gets our `leave` next
  clearToasts('join');
  joinHint(null);
  const rejoin = room.everJoined;
  const restored = !rejoin && room.restored;
  if (typeof f.user === 'string' && f.user) confirmUser(f.user);
  room.everJoined = true;
  room.restored = false;
  room.joinedEpoch = link.epoch;
  setMembers(room, f.members);
  if (f.gap) addNotice(room, 'Some older messages were trimmed — a part of the history is missing here', 'gap', Date.now());
  const history = Array.isArray(f.history) ? f.history : [];
  const isActive = rooms.active === room.name;
  // Our own messages in the history were stored: nothing to resend for them.
  for (const m of history) if (m && m.client_id) resolvePending(m.client_id);
  if (!rejoin && !restored) {
    addMessages(room, history, { live: true, forceBottom: true });
    if (!history.length) room.hasMore = false;
    addNotice(room, 'You joined #' + room.name, 'self', Date.now());
    if (isActive) scrollToBottom();
  } else {
    // Back after a drop or a reload: what arrived since the last id seen is new (unread
    // when it is after the marker).
    addMessages(room, history, { live: true, forceBottom: restored, announce: true });
    if (restored && messageCount(room.entries) < HISTORY_PAGE && room.restoreFrom !== '0-0') loadOlder(room, true);
    else if (restored && room.restoreFrom === '0-0') room.hasMore = false;
  }
  markerReceived(room, f.read);
  recount(room);
  joinedOpen(room);
  flushRoom(room);
  if (isActive) {
    renderMembers();
    renderPending();
    updateEmptyState();
    updateComposer();
    updateLoadOlder();
    maybeProbeOlder(room);
    maybeRead();
  }
  updateRoomEntry(room);
  scheduleSave();
}

// This user's marker moved on another tab or device: the counts here follow.
function onRead(f) {
  const room = getRoom(f.room);
  if (room && room.wanted) markerReceived(room, f.id);
}

// A change to a message (docs/protocol.md, "A message's life"), in stream order with the
// messages.
function onChange(f) {
  const room = getRoom(f.room);
  if (room && room.wanted) applyChangeFrame(room, f);
}

function onMessage(f) {
  const room = getRoom(f.room);
  if (!room || !room.wanted) return;
  if (resolvePending(f.client_id)) maybeClearSendToasts();
  if (typeof f.user === 'string') typingStopped(room.name, f.user);
  if (addMessages(room, [f], { live: true, animate: true, announce: true })) maybeNotify(room, f);
  if (rooms.active === room.name) updateEmptyState();
}

// The server stored our message (or had stored it already: a resend G8 recognised). Show it
// now, from what we sent; its `message` frame, when one follows, has the same id.
function onAck(f) {
  const cid = typeof f.client_id === 'string' ? f.client_id : null;
  if (!cid || changeAnswered(cid, true)) return;
  const p = sends.get(cid);
  if (p && typeof f.id === 'string' && ID_RE.test(f.id)) {
    const room = getRoom(p.room);
    if (room && room.wanted && !room.ids.has(f.id)) {
      const msg = { id: f.id, room: p.room, user: me.user || currentName(), text: p.text.trim(),
        ts: parseId(f.id)[0], client_id: cid };
      if (p.replyTo) msg.reply_to = p.replyTo;
      addMessages(room, [msg], { live: true, animate: true, local: true });
    }
  }
  if (resolvePending(cid)) maybeClearSendToasts();
}

function onMemberEvent(f, joined) {
  const room = getRoom(f.room);
  if (!room || !room.wanted || typeof f.user !== 'string') return;
  const changed = joined ? memberJoined(room, f.user) : memberLeft(room, f.user);
  if (!changed) return;
  if (!joined) typingStopped(room.name, f.user);
  addNotice(room, f.user + (joined ? ' joined' : ' left'), joined ? 'join' : 'leave', f.ts);
  if (rooms.active === room.name) {
    renderMembers();
    updateEmptyState();
  }
}

function onError(f) {
  const code = typeof f.code === 'string' ? f.code : 'error';
  const serverMsg = typeof f.message === 'string' ? f.message : '';
  if (changeAnswered(f.ref, false, code, serverMsg)) return;
  if (f.ref === 'typing' || f.ref === 'read') return;   // hints: a refused one needs no word
  let title = ERROR_TEXT[code] || serverMsg || 'Error: ' + code;
  const p = typeof f.ref === 'string' ? sends.get(f.ref) : null;
  if (p) {
    // Refused: the text stays in the pending list (Retry / Edit / Discard), never in the box.
    // invalid_text: the server says what is wrong (e.g. "text is longer than 2000 characters").
    const precise = code === 'invalid_text' && serverMsg;
    failPending(p, precise ? serverMsg : REFUSED_TEXT[code] || ERROR_TEXT[code] || serverMsg || code);
    if (code === 'invalid_text') {
      title = 'Message not sent: ' + (precise ? serverMsg : 'it is empty, too long or has invalid characters');
    }
    const n = sends.failedIn(p.room);
    const how = code === 'invalid_text' ? 'with Edit' : 'with Retry';
    toast(title, n > 1 ? n + ' messages are kept above, ' + how : 'It is kept above, ' + how, { code, group: 'send' });
    return;
  }
  if (f.ref === 'join') {
    const name = oldestJoin();
    const room = name ? getRoom(name) : null;
    if (room && room.wanted) {
      if (code === 'unavailable') {
        title = 'Server storage unavailable — could not join #' + room.name + ', retrying';
        const epoch = link.epoch;
        setTimeout(() => {
          if (link.epoch === epoch && link.conn === 'open' && room.wanted && room.joinedEpoch !== epoch) sendJoin(room);
        }, JOIN_RETRY_MS);
      } else {
        refuseJoin(room);
        if (code === 'invalid_user') ui.username.focus();
        title = (ERROR_TEXT[code] || 'Could not join') + ' (#' + room.name + ')';
      }
    }
    toast(title, code === 'unavailable' || ERROR_TEXT[code] ? '' : serverMsg, { code, group: 'join' });
    return;
  }
  toast(title, serverMsg, { code });
}
