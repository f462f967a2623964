// CHAT_MAX_TEXT as the page applies it: code points once trimmed, the counter from 80%.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { counterView, excessOf, readLimit } from '../../quart_chat/static/js/limits.js';
import { ROOM_RE, codePoints, textLength, validUser } from '../../quart_chat/static/js/ids.js';

test('limits come from the page, with a fallback only when it has none', () => {
  assert.equal(readLimit('16384', 1), 16384);
  assert.equal(readLimit('500', 2000), 500);
  for (const bad of [undefined, '', '0', '-5', '1.5', 'abc']) assert.equal(readLimit(bad, 7), 7, String(bad));
});

test('length is counted in code points once trimmed, as the server does', () => {
  assert.equal(codePoints('😀😀'), 2, 'an emoji is one character, not two UTF-16 units');
  assert.equal(textLength('  héllo \n'), 5);
  assert.equal(excessOf('x'.repeat(10), 10), 0);
  assert.equal(excessOf(' ' + 'x'.repeat(10) + '  ', 10), 0, 'surrounding white space is free');
  assert.equal(excessOf('😀'.repeat(12), 10), 2);
});

test('the counter shows from 80% of the limit and says how many too many', () => {
  assert.deepEqual(counterView('x'.repeat(79), 100), { n: 79, show: false, over: false, excess: 0 });
  assert.deepEqual(counterView('x'.repeat(80), 100), { n: 80, show: true, over: false, excess: 0 });
  assert.deepEqual(counterView('x'.repeat(100), 100), { n: 100, show: true, over: false, excess: 0 });
  assert.deepEqual(counterView('x'.repeat(103), 100), { n: 103, show: true, over: true, excess: 3 });
  assert.equal(counterView('x'.repeat(1), 1).show, true, 'ceil: a tiny limit still shows');
});

test('names and rooms as section 6 defines them', () => {
  assert.equal(validUser(' Al '), true);
  assert.equal(validUser('x'.repeat(32)), true);
  assert.equal(validUser('x'.repeat(33)), false);
  assert.equal(validUser('   '), false);
  assert.equal(validUser('a\u0007b'), false, 'a control character');
  assert.equal(validUser(null), false);
  assert.equal(ROOM_RE.test('team-1_x'), true);
  assert.equal(ROOM_RE.test('a b'), false);
  assert.equal(ROOM_RE.test('x'.repeat(65)), false);
});
