// What a reload keeps: this tab's record (ids, unconfirmed messages) and the shared one
// a new tab starts from (names only).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSession, sessionRecords } from '../../quart_chat/static/js/storage.js';

const state = {
  user: 'Al',
  rooms: [['general', '12-0'], ['quiet', '0-0'], ['new', null]],
  active: 'quiet',
  pending: [{ cid: 'c-x-1', room: 'general', text: 'hi', failed: false, reason: '' }],
};

test('this tab resumes from the last ids seen, with its unconfirmed messages', () => {
  const { tab } = sessionRecords(state);
  assert.deepEqual(parseSession(tab, true), {
    user: 'Al',
    rooms: [{ name: 'general', since: '12-0' }, { name: 'quiet', since: '0-0' }, { name: 'new', since: null }],
    active: 'quiet',
    pending: state.pending,
  });
});

test('a new tab gets the rooms and the name, but neither ids nor pending messages', () => {
  const { shared } = sessionRecords(state);
  const got = parseSession(shared, false);
  assert.deepEqual(got.rooms.map((r) => r.since), [null, null, null]);
  assert.deepEqual(got.pending, []);
  assert.equal(got.user, 'Al');
  const leaked = parseSession(sessionRecords(state).tab, false);
  assert.deepEqual(leaked.pending, [], 'another tab never resends this tab messages');
  assert.deepEqual(leaked.rooms.map((r) => r.since), [null, null, null]);
});

test('unusable records and entries are dropped, not trusted', () => {
  for (const raw of [null, '', '{', '[]', '{"v":2,"rooms":[]}', '{"v":1}']) {
    assert.equal(parseSession(raw, true), null, String(raw));
  }
  const raw = JSON.stringify({
    v: 1, user: 7, active: 3,
    rooms: [['ok', 'bad id'], ['not a room!', '1-0'], 'x', [5], ['fine', '3-4']],
  });
  assert.deepEqual(parseSession(raw, true), {
    user: null, active: null, pending: [],
    rooms: [{ name: 'ok', since: null }, { name: 'fine', since: '3-4' }],
  });
});

test('at most 100 rooms are restored', () => {
  const rooms = Array.from({ length: 150 }, (_, i) => ['r' + i, null]);
  assert.equal(parseSession(JSON.stringify({ v: 1, rooms }), true).rooms.length, 100);
});
