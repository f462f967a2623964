// The WebSocket frames this page sends and reads (docs/protocol.md, "Frames from the client"
// and "Frames from the server"): building them, measuring them against CHAT_MAX_FRAME, and
// parsing what arrives. Pure: no DOM, no socket.

const encoder = new TextEncoder();

export function joinFrame(room, user, since) {
  const frame = { type: 'join', room };
  if (user) frame.user = user;
  if (since) frame.since = since;
  return frame;
}

// `replyTo`: the id of the earlier message of the room this one answers (docs/protocol.md,
// "A message's life").
export function messageFrame(room, text, clientId, replyTo) {
  const frame = { type: 'message', room, text, client_id: clientId };
  if (replyTo) frame.reply_to = replyTo;
  return frame;
}

// The changes to a message after it is sent (docs/protocol.md, "A message's life"): only
// the author edits or deletes; anyone in the room reacts (`on`: set or unset, never a toggle).
export function editFrame(room, id, text, clientId) {
  return { type: 'edit', room, id, text, client_id: clientId };
}

export function deleteFrame(room, id, clientId) {
  return { type: 'delete', room, id, client_id: clientId };
}

export function reactFrame(room, id, emoji, on, clientId) {
  return { type: 'react', room, id, emoji, on: !!on, client_id: clientId };
}

export function leaveFrame(room) { return { type: 'leave', room }; }

export function pingFrame() { return { type: 'ping' }; }

export function encodeFrame(frame) { return JSON.stringify(frame); }

// The server measures a frame in UTF-8 bytes, so "é" counts twice and an emoji four times.
export function frameBytes(frame) { return encoder.encode(encodeFrame(frame)).length; }

// Whether a message could go out without the server closing the socket (1009). It is measured
// with the longest client_id this page could give it, so a later resend fits as well.
export function messageFits(room, text, cidPrefix, maxFrame, replyTo) {
  return frameBytes(messageFrame(room, text, cidPrefix + 999999, replyTo)) <= maxFrame;
}

// The same for an edit of message `id` (an edit carries the id where a message has none).
export function editFits(room, id, text, cidPrefix, maxFrame) {
  return frameBytes(editFrame(room, id, text, cidPrefix + 'x' + 999999)) <= maxFrame;
}

// A server frame as an object, or null for anything that is not a JSON object.
export function decodeFrame(raw) {
  let f;
  try { f = JSON.parse(raw); } catch (e) { return null; }
  return f && typeof f === 'object' && !Array.isArray(f) ? f : null;
}

// The `since` of a join. Back in a room this page (or this tab, before a reload) was in:
// everything after the last id seen there ('0-0': it had no message yet). A first join
// takes the recent history (null: no `since`).
export function sinceFor(room) {
  if (room.everJoined) return room.lastId || '0-0';
  if (room.restored) return room.lastId || room.restoreFrom || null;
  return null;
}

// Rooms to join again on a new socket: the active one first, so what the user looks at
// comes back first; the others keep their order.
export function rejoinOrder(rooms, active) {
  return [...rooms].sort((a, b) => (a.name === active ? -1 : 0) - (b.name === active ? -1 : 0));
}

// Hints of presence (docs/protocol.md, `typing` and `read`): never stored as messages.
export function typingFrame(room) { return { type: 'typing', room }; }

export function readFrame(room, id) { return { type: 'read', room, id }; }
