// Message order within a room (id order, notices kept where they were said), sender groups,
// and the order of the room and member lists.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cmpKey, parseId } from '../../quart_chat/static/js/ids.js';
import {
  GROUP_MS, cmpRooms, continues, firstMessageId, mergeSorted, messageCount, orderIndex, positionFor, sortMembers,
} from '../../quart_chat/static/js/order.js';

const msg = (id, user = 'Al', ts = parseId(id)[0]) => ({ kind: 'message', id, key: parseId(id), msg: { id, user, ts } });
const notice = (text) => ({ kind: 'notice', text });

// Insert as the page does: at positionFor, skipping ids already there.
function insertAll(ids) {
  const entries = [];
  const seen = new Set();
  for (const id of ids) {
    if (seen.has(id)) continue;
    seen.add(id);
    entries.splice(positionFor(entries, parseId(id)), 0, msg(id));
  }
  return entries;
}

test('ids compare as (ms, seq) pairs, not as strings', () => {
  assert.ok(cmpKey(parseId('9-0'), parseId('10-0')) < 0);
  assert.ok(cmpKey(parseId('10-2'), parseId('10-10')) < 0);
  assert.equal(cmpKey(parseId('5-1'), parseId('5-1')), 0);
  assert.deepEqual(parseId('123'), [123, 0]);
});

test('messages arriving in any order end up in id order, each once', () => {
  const ids = ['10-0', '3-0', '10-1', '9-5', '3-0', '100-0', '9-10', '10-1', '1-0'];
  assert.deepEqual(insertAll(ids).map((e) => e.id), ['1-0', '3-0', '9-5', '9-10', '10-0', '10-1', '100-0']);
});

test('the newest goes after everything, notices included', () => {
  const entries = [msg('1-0'), notice('Bo joined')];
  assert.equal(positionFor(entries, parseId('2-0')), 2);
  assert.equal(positionFor([], parseId('2-0')), 0);
  assert.equal(positionFor([notice('You joined')], parseId('2-0')), 1, 'no message yet: after the notices');
});

test('an older message goes before the first greater id, the oldest at the very top', () => {
  const entries = [notice('gap'), msg('5-0'), notice('Bo joined'), msg('8-0'), msg('9-0')];
  assert.equal(positionFor(entries, parseId('1-0')), 0, 'older than all: above the notice too');
  assert.equal(positionFor(entries, parseId('6-0')), 3, 'right before 8-0');
  assert.equal(positionFor(entries, parseId('8-5')), 4);
});

test('first message id and count skip notices', () => {
  const entries = [notice('a'), msg('4-0'), notice('b'), msg('7-0')];
  assert.equal(firstMessageId(entries), '4-0');
  assert.equal(messageCount(entries), 2);
  assert.equal(firstMessageId([notice('a')]), null);
});

test('a sender groups within a few minutes on one day, not across others or notices', () => {
  const t = new Date(2026, 5, 10, 12, 0).getTime();
  const a = msg('1-0', 'Al', t);
  assert.equal(continues(a, msg('2-0', 'Al', t + GROUP_MS - 1)), true);
  assert.equal(continues(a, msg('2-0', 'Al', t + GROUP_MS)), false, 'too long after');
  assert.equal(continues(a, msg('2-0', 'Bo', t + 1000)), false, 'another sender');
  assert.equal(continues(notice('x'), msg('2-0', 'Al', t)), false, 'after a notice');
  assert.equal(continues(undefined, msg('2-0', 'Al', t)), false, 'the first');
  const lateNight = new Date(2026, 5, 10, 23, 59).getTime();
  assert.equal(continues(msg('1-0', 'Al', lateNight), msg('2-0', 'Al', lateNight + 2 * 60000)), false,
    'past midnight a new day starts a new group');
});

const room = (name) => ({ name, sortKey: name.toLowerCase() });

test('rooms sort by name ignoring case, with a fixed order between case variants', () => {
  const names = ['beta', 'Alpha', 'alpha', 'Gamma', '_x', '9'];
  assert.deepEqual(names.map(room).sort(cmpRooms).map((r) => r.name), ['9', '_x', 'Alpha', 'alpha', 'beta', 'Gamma'],
    '_ sorts before letters in lower case');
});

test('orderIndex finds where a room goes in a sorted list', () => {
  const order = ['a', 'c', 'e'].map(room);
  assert.equal(orderIndex(order, room('0')), 0);
  assert.equal(orderIndex(order, room('B')), 1);
  assert.equal(orderIndex(order, room('c')), 1, 'an equal one: its own index');
  assert.equal(orderIndex(order, room('z')), 3);
});

test('mergeSorted merges two sorted lists into one sorted list', () => {
  const merged = mergeSorted(['a', 'd', 'k'].map(room), ['b', 'c', 'z'].map(room), cmpRooms);
  assert.deepEqual(merged.map((r) => r.name), ['a', 'b', 'c', 'd', 'k', 'z']);
  assert.deepEqual(mergeSorted([], [room('x')], cmpRooms).map((r) => r.name), ['x']);
});

test('members: this page first, then by name ignoring case', () => {
  assert.deepEqual(sortMembers(new Set(['bo', 'Zed', 'Me', 'al']), 'Me'), ['Me', 'al', 'bo', 'Zed']);
  assert.deepEqual(sortMembers(['b', 'a'], null), ['a', 'b']);
});
