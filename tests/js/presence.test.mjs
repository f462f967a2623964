// Typing, read markers and mentions on the page's side: the roster with its expiry, unread
// and mention counts from a marker, the read batching, and a text cut into mentions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TypingRoster, typingDue, typingLine } from '../../quart_chat/static/js/typing.js';
import { badgeCount, firstUnreadId, isAfter, newestMessageId, unreadCounts } from '../../quart_chat/static/js/unread.js';
import { ReadBatch } from '../../quart_chat/static/js/readbatch.js';
import { mentionParts } from '../../quart_chat/static/js/mentions.js';

test('a typing entry lasts 5 s after the last frame, and goes at once with a message', () => {
  const r = new TypingRoster(5000);
  assert.equal(r.typing('g', 'Al', 1000), true, 'new: the line changes');
  assert.equal(r.typing('g', 'Al', 3000), false, 'again: the same line, a later expiry');
  r.typing('g', 'Bo', 4000);
  assert.deepEqual(r.names('g', 7999), ['Al', 'Bo']);
  assert.deepEqual(r.names('g', 8000), ['Bo'], "Al's last frame was at 3000");
  assert.equal(r.nextExpiry(), 8000);
  assert.equal(r.prune(8000), true);
  assert.equal(r.stopped('g', 'Bo'), true, 'his message arrived');
  assert.deepEqual(r.names('g', 8001), []);
  assert.equal(r.nextExpiry(), null);
  r.typing('dev', 'Cy', 0);
  assert.deepEqual(r.names('g', 1), [], 'rooms apart');
});

test('the typing line names one or two, and counts more', () => {
  assert.equal(typingLine([]), '');
  assert.equal(typingLine(['Alice']), 'Alice is typing…');
  assert.equal(typingLine(['Alice', 'Bob']), 'Alice and Bob are typing…');
  assert.equal(typingLine(['Alice', 'Bob', 'Cy']), 'Several people are typing…');
});

test('typing goes out at most once a second', () => {
  assert.equal(typingDue(null, 5), true);
  assert.equal(typingDue(1000, 1999), false);
  assert.equal(typingDue(1000, 2000), true);
});

const msg = (id, user, more) => ({ kind: 'message', id, msg: { id, user, text: 'x', ...more } });
const mine = (m) => m.user === 'Al';

test('unread: after the marker, not one\'s own, not deleted; mentions of this user apart', () => {
  const entries = [   // in id order, as a room holds them
    msg('9-5', 'Cy', { mentions: ['Bo'] }), msg('10-0', 'Bo'), { kind: 'notice', text: 'Bo joined' },
    msg('11-0', 'Al'), msg('12-0', 'Bo', { mentions: ['Al'] }), msg('13-0', 'Bo', { deleted: true }),
  ];
  assert.deepEqual(unreadCounts(entries, null, mine, 'Al'), { unread: 3, mentioned: 1 }, 'no marker: all loaded');
  assert.deepEqual(unreadCounts(entries, '10-0', mine, 'Al'), { unread: 1, mentioned: 1 });
  assert.deepEqual(unreadCounts(entries, '12-0', mine, 'Al'), { unread: 0, mentioned: 0 });
  assert.deepEqual(unreadCounts(entries, '9-10', mine, 'Al'), { unread: 2, mentioned: 1 }, 'ids compare as pairs');
  assert.equal(firstUnreadId(entries, '9-10', mine), '10-0');
  assert.equal(firstUnreadId(entries, '10-0', mine), '12-0', "one's own is never the first unread");
  assert.equal(firstUnreadId(entries, '13-0', mine), null);
  assert.equal(newestMessageId(entries), '13-0');
  assert.equal(isAfter('10-0', '9-0'), true);
  assert.equal(isAfter('9-0', '9-0'), false);
  assert.equal(badgeCount(100), '99+');
});

test('reads: only newer than the marker, at most once a second, the newest wanted last', () => {
  const b = new ReadBatch(1000);
  assert.deepEqual(b.offer('g', '5-0', 0), { send: '5-0', wait: null });
  assert.deepEqual(b.offer('g', '5-0', 2000), { send: null, wait: null }, 'not newer: nothing');
  assert.deepEqual(b.offer('g', '6-0', 300), { send: null, wait: 700 });
  assert.deepEqual(b.offer('g', '7-0', 600), { send: null, wait: 400 });
  assert.equal(b.due('g', 900), null, 'too early');
  assert.equal(b.due('g', 1000), '7-0', 'the newest of the batch');
  assert.equal(b.due('g', 3000), null, 'nothing more wanted');
  assert.equal(b.marker('g'), '7-0');
  // Another tab read further: this one does not send what is already read.
  assert.equal(b.receive('g', '9-0'), true);
  assert.equal(b.receive('g', '8-0'), false, 'a marker never moves back');
  assert.deepEqual(b.offer('g', '8-5', 5000), { send: null, wait: null });
  assert.deepEqual(b.offer('g', '9-1', 5000), { send: '9-1', wait: null });
  b.offer('g', '9-2', 5100);
  b.receive('g', '9-3');
  assert.equal(b.due('g', 6100), null, 'what was wanted was read elsewhere meanwhile');
  b.forget('g');
  assert.equal(b.marker('g'), null);
  assert.deepEqual(b.offer('dev', '1-0', 5100), { send: '1-0', wait: null }, 'rooms apart');
});

const texts = (parts) => parts.map((p) => (p.mention ? '[' + p.text + ']' : p.text)).join('');

test('mentions: the names the server found, as @name parts, the text kept whole', () => {
  const t = 'hi @Al and @Alice, @Al_x @Bo! mail al@Al.';
  const parts = mentionParts(t, ['Al', 'Alice']);
  assert.equal(parts.map((p) => p.text).join(''), t, 'the parts make the text');
  assert.equal(texts(parts), 'hi [@Al] and [@Alice], @Al_x @Bo! mail al[@Al].');
  assert.equal(texts(mentionParts('@Mary Ann, @Mary', ['Mary', 'Mary Ann'])), '[@Mary Ann], [@Mary]');
  assert.equal(texts(mentionParts('@Alé', ['Al'])), '@Alé', 'a letter goes on with the name');
  assert.equal(texts(mentionParts('@Al—ok', ['Al'])), '[@Al]—ok');
  assert.deepEqual(mentionParts('no names', []), [{ text: 'no names', mention: null }]);
  assert.deepEqual(mentionParts('', ['Al']), []);
  assert.deepEqual(mentionParts('<b>@Al</b>', ['Al']).map((p) => p.text), ['<b>', '@Al', '</b>'], 'text, never markup');
});
