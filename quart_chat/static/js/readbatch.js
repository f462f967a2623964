// This page's read markers, one per room (docs/protocol.md, `read`): the newest of what it
// sent and what the server told it, and when to send the next one: only an id newer than
// the marker, at most once a second per room (a scroll through a busy room sends one frame,
// not one per message). Pure: the caller passes the clock and keeps the timers.

import { isAfter } from './unread.js';

export const READ_GAP_MS = 1000;

export class ReadBatch {
  constructor(gapMs = READ_GAP_MS) {
    this.gapMs = gapMs;
    this.marks = new Map();    // room -> id read up to
    this.sentAt = new Map();   // room -> when the last `read` went
    this.wanted = new Map();   // room -> the id to send when the gap is over
  }

  marker(room) { return this.marks.get(room) || null; }

  // The server's marker (`joined.read`, a `read` frame): it only moves forward. Returns
  // whether it moved.
  receive(room, id) {
    if (!isAfter(id, this.marker(room))) return false;
    this.marks.set(room, id);
    if (!isAfter(this.wanted.get(room), id)) this.wanted.delete(room);
    return true;
  }

  // The user has seen up to `id` now. {send: the id to send now or null, wait: ms until
  // due() should be asked, or null}.
  offer(room, id, now) {
    if (!isAfter(id, this.marker(room))) return { send: null, wait: null };
    const last = this.sentAt.get(room);
    if (last === undefined || now - last >= this.gapMs) {
      this.wanted.delete(room);
      return { send: this.sent(room, id, now), wait: null };
    }
    if (isAfter(id, this.wanted.get(room) || null)) this.wanted.set(room, id);
    return { send: null, wait: this.gapMs - (now - last) };
  }

  // The wait is over: the id to send now, or null (nothing newer is wanted any more).
  due(room, now) {
    const id = this.wanted.get(room);
    if (!id) return null;
    const last = this.sentAt.get(room);
    if (last !== undefined && now - last < this.gapMs) return null;
    this.wanted.delete(room);
    return isAfter(id, this.marker(room)) ? this.sent(room, id, now) : null;
  }

  sent(room, id, now) {
    this.marks.set(room, id);
    this.sentAt.set(room, now);
    return id;
  }

  forget(room) {
    this.marks.delete(room);
    this.sentAt.delete(room);
    this.wanted.delete(room);
  }
}
