// Bookkeeping of this page's own messages the server has not confirmed yet. Pure: no DOM,
// no socket; the sending module shows these and puts them on the wire.
//
// A message keeps its client_id until it is confirmed or the user drops it: sending it again
// is safe (docs/protocol.md "Guarantees", G8: the server stores it once and acks the first id), so it is never
// shown twice. State: queued (waits for a joined socket), sent (in flight), failed (refused,
// or no answer for too long: Retry / Edit / Discard).

import { ID_RE } from './ids.js';

export const UNCONFIRMED_MS = 15000;   // sent this long ago with no ack: offer Retry
const RETIRED_KEEP = 200;
const RESTORE_MAX = 500;

// Unique to this page load, so that an echo of our own message is recognised as ours even
// after the pending entry is gone.
export function makeCidPrefix(random = Math.random(), now = Date.now()) {
  return 'c-' + random.toString(36).slice(2, 8) + now.toString(36).slice(-4) + '-';
}

export class PendingSends {
  constructor(prefix) {
    this.prefix = prefix;
    this.counter = 0;
    this.items = new Map();     // client_id -> entry, in the order typed
    // client_id -> text of messages the user edited away or discarded: if the server stored
    // one after all, the page says so rather than surprising the user silently.
    this.retired = new Map();
  }

  // `replyTo`: the id of the message this one answers, if any (kept for every resend).
  add(room, text, replyTo) {
    const p = { cid: this.prefix + (++this.counter), room, text, state: 'queued', epoch: -1, reason: '' };
    if (replyTo) p.replyTo = replyTo;
    this.items.set(p.cid, p);
    return p;
  }

  get(cid) { return this.items.get(cid); }

  has(cid) { return this.items.has(cid); }

  values() { return this.items.values(); }

  forRoom(room) {
    const out = [];
    for (const p of this.items.values()) if (p.room === room) out.push(p);
    return out;
  }

  failedIn(room) { return this.forRoom(room).filter((p) => p.state === 'failed').length; }

  anyFailed() {
    for (const p of this.items.values()) if (p.state === 'failed') return true;
    return false;
  }

  // A message of this page, even one whose entry is gone (confirmed, or sent before a reload).
  isOwn(cid) {
    return !!cid && (this.items.has(cid) || String(cid).startsWith(this.prefix));
  }

  // The user gave up on it (discard, edited into a new message, left the room).
  drop(p) {
    this.items.delete(p.cid);
    this.retired.set(p.cid, p.text);
    if (this.retired.size > RETIRED_KEEP) this.retired.delete(this.retired.keys().next().value);
  }

  dropRoom(room) {
    for (const p of this.forRoom(room)) this.drop(p);
  }

  // "Discard all": the refused ones not being edited.
  dropFailed(room) {
    for (const p of this.forRoom(room)) if (p.state === 'failed' && !p.editing) this.drop(p);
  }

  markSent(p, epoch, now) {
    p.state = 'sent';
    p.epoch = epoch;
    p.sentAt = now;
  }

  markQueued(p) { p.state = 'queued'; }

  fail(p, reason, unconfirmed = false) {
    p.unconfirmed = !!unconfirmed;
    p.state = 'failed';
    p.reason = reason;
  }

  // The server stored the message with this client_id (its `message`, `ack` or history).
  // `entry`: what was pending (now gone); `late`: the user had been told it was not sent.
  resolve(cid) {
    if (!cid) return { entry: null, late: false };
    const p = this.items.get(cid);
    if (p) {
      this.items.delete(cid);
      return { entry: p, late: p.state === 'failed' };
    }
    if (this.retired.has(cid)) {
      this.retired.delete(cid);
      return { entry: null, late: true };
    }
    return { entry: null, late: false };
  }

  // The socket closed: what was in flight is unconfirmed and goes again after the rejoin.
  // Returns the rooms touched.
  requeueInFlight() {
    const rooms = new Set();
    for (const p of this.items.values()) {
      if (p.state === 'sent') { p.state = 'queued'; rooms.add(p.room); }
    }
    return rooms;
  }

  // After a room's `joined` on socket `epoch`: what to send now, in the order typed. One sent
  // on an earlier socket goes again with the same client_id.
  toFlush(room, epoch) {
    return this.forRoom(room).filter((p) => !p.editing &&
      (p.state === 'queued' || (p.state === 'sent' && p.epoch !== epoch)));
  }

  // Sent on the socket still open (`epoch`), yet neither acked nor refused for too long.
  overdue(now, epoch) {
    const out = [];
    for (const p of this.items.values()) {
      if (p.state === 'sent' && p.epoch === epoch && now - p.sentAt > UNCONFIRMED_MS) out.push(p);
    }
    return out;
  }

  // What a reload of this tab keeps.
  snapshot() {
    const out = [];
    for (const p of this.items.values()) {
      const q = { cid: p.cid, room: p.room, text: p.text, failed: p.state === 'failed', reason: p.reason || '' };
      if (p.replyTo) q.replyTo = p.replyTo;
      out.push(q);
    }
    return out;
  }

  // Back after a reload: entries of rooms `roomOk` accepts; a refused one stays refused.
  restore(list, roomOk) {
    for (const q of list.slice(0, RESTORE_MAX)) {
      if (!q || typeof q.cid !== 'string' || typeof q.room !== 'string' || typeof q.text !== 'string') continue;
      if (!roomOk(q.room) || this.items.has(q.cid)) continue;
      const p = {
        cid: q.cid, room: q.room, text: q.text, epoch: -1,
        state: q.failed ? 'failed' : 'queued', reason: q.failed ? String(q.reason || 'error') : '',
      };
      if (typeof q.replyTo === 'string' && ID_RE.test(q.replyTo)) p.replyTo = q.replyTo;
      this.items.set(q.cid, p);
    }
  }
}
