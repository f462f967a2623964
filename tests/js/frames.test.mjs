// The frames the page sends and reads (docs/protocol.md), and the CHAT_MAX_FRAME check.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeFrame, encodeFrame, frameBytes, joinFrame, leaveFrame, messageFits, messageFrame, pingFrame,
  rejoinOrder, sinceFor,
} from '../../quart_chat/static/js/frames.js';

test('a join carries the user and since only when given', () => {
  assert.deepEqual(joinFrame('general', 'Al', null), { type: 'join', room: 'general', user: 'Al' });
  assert.deepEqual(joinFrame('general', '', '5-0'), { type: 'join', room: 'general', since: '5-0' });
  assert.deepEqual(joinFrame('r', 'Al', '0-0'), { type: 'join', room: 'r', user: 'Al', since: '0-0' });
});

test('message, leave and ping frames have the protocol fields', () => {
  assert.deepEqual(messageFrame('r', 'hi', 'c-1'), { type: 'message', room: 'r', text: 'hi', client_id: 'c-1' });
  assert.deepEqual(leaveFrame('r'), { type: 'leave', room: 'r' });
  assert.deepEqual(pingFrame(), { type: 'ping' });
  assert.deepEqual(JSON.parse(encodeFrame(messageFrame('r', 'ä "q"', 'c-2'))), messageFrame('r', 'ä "q"', 'c-2'));
});

test('frames are measured in UTF-8 bytes, as the server counts them', () => {
  const ascii = frameBytes(messageFrame('r', 'a', 'c'));
  assert.equal(frameBytes(messageFrame('r', 'é', 'c')), ascii + 1, 'é is two bytes');
  assert.equal(frameBytes(messageFrame('r', '😀', 'c')), ascii + 3, 'an emoji is four bytes');
});

test('messageFits measures with the longest client_id the page may use', () => {
  const prefix = 'c-abcdef1234-';
  const overhead = frameBytes(messageFrame('room', '', prefix + 999999));
  const max = overhead + 10;
  assert.equal(messageFits('room', 'x'.repeat(10), prefix, max), true, 'exactly at the limit fits');
  assert.equal(messageFits('room', 'x'.repeat(11), prefix, max), false, 'one byte over does not');
  assert.equal(messageFits('room', 'é'.repeat(5), prefix, max), true);
  assert.equal(messageFits('room', 'é'.repeat(6), prefix, max), false, 'multi-byte text counts in bytes');
});

test('decodeFrame returns objects only', () => {
  assert.deepEqual(decodeFrame('{"type":"pong"}'), { type: 'pong' });
  for (const raw of ['not json', '', 'null', '42', '"text"', '[1,2]']) {
    assert.equal(decodeFrame(raw), null, `${JSON.stringify(raw)} is no frame`);
  }
});

test('since: everything after the last id seen, 0-0 for a room that had none, nothing on a first join', () => {
  assert.equal(sinceFor({ everJoined: false, restored: false, lastId: null }), null);
  assert.equal(sinceFor({ everJoined: true, lastId: '17-3' }), '17-3');
  assert.equal(sinceFor({ everJoined: true, lastId: null }), '0-0');
  assert.equal(sinceFor({ everJoined: false, restored: true, lastId: '9-1', restoreFrom: '9-1' }), '9-1');
  assert.equal(sinceFor({ everJoined: false, restored: true, lastId: null, restoreFrom: '0-0' }), '0-0');
});

test('rejoin puts the active room first and keeps the others in order', () => {
  const rooms = ['a', 'b', 'c', 'd'].map((name) => ({ name }));
  assert.deepEqual(rejoinOrder(rooms, 'c').map((r) => r.name), ['c', 'a', 'b', 'd']);
  assert.deepEqual(rejoinOrder(rooms, null).map((r) => r.name), ['a', 'b', 'c', 'd']);
  assert.deepEqual(rooms.map((r) => r.name), ['a', 'b', 'c', 'd'], 'the input is not reordered');
});
