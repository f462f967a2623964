// Pending sends: each message keeps its client_id until confirmed or dropped, so resending
// after a drop can never post it twice (docs/protocol.md "Guarantees", G8).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PendingSends, UNCONFIRMED_MS, makeCidPrefix } from '../../quart_chat/static/js/pending.js';

test('client ids are unique per page and carry its prefix', () => {
  const a = new PendingSends('c-aa-');
  const ids = [a.add('r', 'one'), a.add('r', 'two'), a.add('s', 'three')].map((p) => p.cid);
  assert.deepEqual(ids, ['c-aa-1', 'c-aa-2', 'c-aa-3']);
  assert.match(makeCidPrefix(0.123456789, 1764085000000), /^c-[0-9a-z]{1,6}[0-9a-z]{4}-$/);
  assert.notEqual(makeCidPrefix(0.1, 1), makeCidPrefix(0.2, 1));
  const cid = makeCidPrefix() + 999999;
  assert.ok(cid.length <= 64, 'within the protocol limit of 64 characters');
});

test('a new message is queued until sent; a drop sends it again with the same client id', () => {
  const s = new PendingSends('c-x-');
  const p = s.add('r', 'hello');
  assert.equal(p.state, 'queued');
  assert.deepEqual(s.toFlush('r', 1), [p]);
  s.markSent(p, 1, 1000);
  assert.deepEqual(s.toFlush('r', 1), [], 'in flight on this socket: not sent twice');
  assert.deepEqual([...s.requeueInFlight()], ['r'], 'the socket closed: its room is touched');
  assert.equal(p.state, 'queued');
  assert.deepEqual(s.toFlush('r', 2).map((q) => q.cid), ['c-x-1'], 'the same client id on the next socket');
});

test('one sent on an earlier socket goes again after the rejoin', () => {
  const s = new PendingSends('c-x-');
  const p = s.add('r', 'hello');
  s.markSent(p, 1, 0);
  assert.deepEqual(s.toFlush('r', 2), [p]);
  assert.deepEqual(s.toFlush('other', 2), [], 'only its own room');
});

test('flush keeps the order typed and skips refused and edited ones', () => {
  const s = new PendingSends('c-x-');
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((t) => s.add('r', t));
  s.fail(b, 'sent too fast');
  c.editing = true;
  assert.deepEqual(s.toFlush('r', 1), [a, d]);
});

test('resolving: a confirmed message leaves; one reported as not sent is a late delivery', () => {
  const s = new PendingSends('c-x-');
  const p = s.add('r', 'a');
  assert.deepEqual(s.resolve(p.cid), { entry: p, late: false });
  assert.equal(s.has(p.cid), false);
  assert.deepEqual(s.resolve(p.cid), { entry: null, late: false }, 'a second echo is nothing new');
  const q = s.add('r', 'b');
  s.fail(q, 'server storage unavailable');
  assert.deepEqual(s.resolve(q.cid), { entry: q, late: true });
  assert.deepEqual(s.resolve(undefined), { entry: null, late: false });
  assert.deepEqual(s.resolve('someone-else'), { entry: null, late: false });
});

test('a discarded message that the server stored after all is reported once', () => {
  const s = new PendingSends('c-x-');
  const p = s.add('r', 'a');
  s.drop(p);
  assert.equal(s.has(p.cid), false);
  assert.equal(s.isOwn(p.cid), true, 'still ours by its prefix');
  assert.deepEqual(s.resolve(p.cid), { entry: null, late: true });
  assert.deepEqual(s.resolve(p.cid), { entry: null, late: false });
});

test('the retired list is bounded, oldest out first', () => {
  const s = new PendingSends('c-x-');
  const all = [];
  for (let i = 0; i < 250; i++) { const p = s.add('r', 't'); all.push(p); s.drop(p); }
  assert.equal(s.retired.size, 200);
  assert.equal(s.resolve(all[0].cid).late, false, 'the oldest was forgotten');
  assert.equal(s.resolve(all[249].cid).late, true);
});

test('own messages: pending, or by this page prefix; never others', () => {
  const s = new PendingSends('c-me-');
  const restored = 'c-old-7';
  s.restore([{ cid: restored, room: 'r', text: 'x' }], () => true);
  assert.equal(s.isOwn(restored), true, 'restored from before a reload');
  assert.equal(s.isOwn('c-me-99'), true);
  assert.equal(s.isOwn('c-them-1'), false);
  assert.equal(s.isOwn(undefined), false);
});

test('overdue: sent on the open socket with no answer for too long', () => {
  const s = new PendingSends('c-x-');
  const p = s.add('r', 'a');
  const q = s.add('r', 'b');
  s.markSent(p, 3, 1000);
  s.markSent(q, 2, 1000);
  assert.deepEqual(s.overdue(1000 + UNCONFIRMED_MS, 3), [], 'not yet');
  assert.deepEqual(s.overdue(1001 + UNCONFIRMED_MS, 3), [p], 'the older socket one is requeued, not overdue');
});

test('drops by room, and "discard all" takes only the refused ones not being edited', () => {
  const s = new PendingSends('c-x-');
  const [a, b, c] = ['a', 'b', 'c'].map((t) => s.add('r', t));
  const other = s.add('o', 'x');
  s.fail(a, 'x');
  s.fail(b, 'x');
  b.editing = true;
  assert.equal(s.failedIn('r'), 2);
  assert.equal(s.anyFailed(), true);
  s.dropFailed('r');
  assert.deepEqual(s.forRoom('r'), [b, c]);
  s.dropRoom('r');
  assert.deepEqual([...s.values()], [other]);
  assert.equal(s.anyFailed(), false);
});

test('a reload keeps each message, its client id and whether it was refused', () => {
  const s = new PendingSends('c-x-');
  const a = s.add('r', 'queued one');
  const b = s.add('gone', 'in a room left');
  s.fail(s.add('r', 'refused'), 'sent too fast');
  s.markSent(a, 1, 0);
  const snap = JSON.parse(JSON.stringify(s.snapshot()));
  const t = new PendingSends('c-y-');
  t.restore([...snap, null, { cid: 5 }, { cid: 'c-x-1', room: 'r', text: 'duplicate' }], (room) => room === 'r');
  const got = [...t.values()].map((p) => [p.cid, p.text, p.state, p.reason]);
  assert.deepEqual(got, [
    ['c-x-1', 'queued one', 'queued', ''],
    ['c-x-3', 'refused', 'failed', 'sent too fast'],
  ]);
  assert.equal(t.has(b.cid), false, 'a room no longer joined is dropped');
});
