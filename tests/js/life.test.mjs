// A message's life after it is sent (section 11 of the contract): change frames applied to
// the page's message objects, reaction chips, the reply quote, and which message Up edits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  COMMON_EMOJI, MAX_EMOJI_PER_MESSAGE, applyChange, beforeToFetch, canAddEmoji, changeOf, fetchedOriginal,
  firstLine, lastOwnMessage, laterId, quoteView, reactionChips, setReaction, validEmoji, whoReacted,
} from '../../quart_chat/static/js/life.js';
import { deleteFrame, editFits, editFrame, frameBytes, messageFits, messageFrame, reactFrame } from '../../quart_chat/static/js/frames.js';
import { PendingSends } from '../../quart_chat/static/js/pending.js';

const edited = (id, text, ts = 5, change = '9-0') =>
  ({ type: 'message_edited', room: 'r', id, text, edited_ts: ts, change_id: change });
const deleted = (id, change = '9-1') => ({ type: 'message_deleted', room: 'r', id, change_id: change });
const reaction = (id, emoji, user, on, change = '9-2') =>
  ({ type: 'reaction', room: 'r', id, emoji, user, on, change_id: change });
const apply = (msg, f) => applyChange(msg, changeOf(f));

test('an edit replaces the text and records when; applying it twice changes nothing', () => {
  const m = { id: '1-0', user: 'Al', text: 'helo', ts: 1 };
  assert.equal(apply(m, edited('1-0', 'hello', 1764085000000)), true);
  assert.equal(m.text, 'hello');
  assert.equal(m.edited_ts, 1764085000000);
  assert.equal(apply(m, edited('1-0', 'hello', 1764085000000)), false, 'a replayed frame is a no-op');
});

test('a delete keeps where the message stood and drops its text, reactions and reply', () => {
  const m = { id: '1-0', user: 'Al', text: 'secret', ts: 1, reply_to: '0-1', reactions: { '👍': ['Bo'] }, edited_ts: 3 };
  assert.equal(apply(m, deleted('1-0')), true);
  assert.deepEqual(m, { id: '1-0', user: 'Al', ts: 1, deleted: true }, 'the text is gone from the page too');
  assert.equal(apply(m, edited('1-0', 'back?')), false, 'nothing changes a deleted message');
  assert.equal(apply(m, reaction('1-0', '👍', 'Bo', true)), false);
  assert.equal(m.text, undefined);
});

test('reactions are set and unset, never toggled', () => {
  const m = { id: '1-0', user: 'Al', text: 'x', ts: 1 };
  assert.equal(apply(m, reaction('1-0', '👍', 'Bo', true)), true);
  assert.equal(apply(m, reaction('1-0', '👍', 'Bo', true)), false, 'on twice: still one');
  apply(m, reaction('1-0', '🎉', 'Al', true));
  apply(m, reaction('1-0', '👍', 'Cy', true));
  assert.deepEqual(m.reactions, { '👍': ['Bo', 'Cy'], '🎉': ['Al'] });
  assert.equal(apply(m, reaction('1-0', '🎉', 'Bo', false)), false, 'off for one who had not reacted: nothing');
  apply(m, reaction('1-0', '🎉', 'Al', false));
  assert.deepEqual(m.reactions, { '👍': ['Bo', 'Cy'] }, 'an emoji nobody uses any more goes');
  apply(m, reaction('1-0', '👍', 'Bo', false));
  apply(m, reaction('1-0', '👍', 'Cy', false));
  assert.equal('reactions' in m, false, 'absent when none, as the server sends it');
});

test('setReaction does not touch a reactions object shared with another message object', () => {
  const shared = { '👍': ['Bo'] };
  const m = { id: '1-0', reactions: shared };
  setReaction(m, '👍', 'Cy', true);
  assert.deepEqual(shared, { '👍': ['Bo'] });
  assert.deepEqual(m.reactions, { '👍': ['Bo', 'Cy'] });
});

test('malformed change frames are refused, not half applied', () => {
  assert.equal(changeOf({ type: 'message_edited', room: 'r', id: '1-0' }), null, 'no text');
  assert.equal(changeOf({ type: 'message_deleted', room: 'r', id: 'nope' }), null, 'not an id');
  assert.equal(changeOf(reaction('1-0', 'two words', 'Bo', true)), null, 'white space in an emoji');
  assert.equal(changeOf(reaction('1-0', '👍', 'Bo', 'yes')), null, 'on is a boolean');
  assert.equal(changeOf({ type: 'message', room: 'r', id: '1-0', text: 'x' }), null, 'not a change');
  assert.deepEqual(changeOf(deleted('1-0', '7-3')), { room: 'r', id: '1-0', changeId: '7-3', kind: 'delete' });
  assert.equal(changeOf({ ...deleted('1-0'), change_id: undefined }).changeId, null, 'no change_id: applied, no since move');
});

test('emoji as the server accepts them: 1-16 characters, no white space or control characters', () => {
  for (const [e] of COMMON_EMOJI) assert.ok(validEmoji(e), e);
  assert.equal(COMMON_EMOJI.length, 12);
  assert.ok(validEmoji('👩‍👩‍👧‍👦'), 'a family is 7 code points');
  assert.ok(validEmoji('x'.repeat(16)));
  assert.equal(validEmoji('x'.repeat(17)), false);
  assert.equal(validEmoji(''), false);
  assert.equal(validEmoji('a\tb'), false);
  assert.equal(validEmoji('a\u0007'), false);
  assert.equal(validEmoji(5), false);
});

test('chips: one per emoji in a fixed order, with count, mine and who', () => {
  const chips = reactionChips({ '🎉': ['Al'], '👍': ['Bo', 'Al'], '👀': [] }, 'Al');
  assert.deepEqual(chips.map((c) => [c.emoji, c.count, c.mine]), [['👍', 2, true], ['🎉', 1, true]]);
  assert.equal(chips[0].label, 'Bo, Al reacted with 👍');
  const order = (r) => reactionChips(r, null).map((c) => c.emoji);
  assert.deepEqual(order({ zz: ['A'], '🚀': ['A'], aa: ['A'], '👍': ['A'] }), ['👍', '🚀', 'aa', 'zz'],
    "the picker's order, then the others by code points");
  assert.deepEqual(order({ '🚀': ['A'], '👍': ['A'] }), order({ '👍': ['A'], '🚀': ['A'] }),
    'the same row whatever order the server sent');
  assert.deepEqual(reactionChips({ '👍': ['Bo'] }, 'Al')[0].mine, false);
  assert.deepEqual(reactionChips({ '👍': ['Bo'] }, null)[0].mine, false, 'no name yet: nothing is mine');
  assert.deepEqual(reactionChips(undefined, 'Al'), []);
});

test('a long list of who reacted is cut, and counted', () => {
  const users = Array.from({ length: 11 }, (_, i) => 'U' + i);
  assert.equal(whoReacted(users, '🔥'), 'U0, U1, U2, U3, U4, U5, U6, U7 and 3 others reacted with 🔥');
  assert.equal(whoReacted(users.slice(0, 9), '🔥'), 'U0, U1, U2, U3, U4, U5, U6, U7 and 1 other reacted with 🔥');
});

test('at most 20 distinct emoji on a message; one already there can always be added to', () => {
  const r = {};
  for (let i = 0; i < MAX_EMOJI_PER_MESSAGE; i++) r['e' + i] = ['Bo'];
  assert.equal(canAddEmoji(r, 'e3'), true);
  assert.equal(canAddEmoji(r, '👍'), false);
  assert.equal(canAddEmoji(undefined, '👍'), true);
});

test('Up edits the newest own message that is still there', () => {
  const mine = (m) => m.user === 'Al';
  const e = (id, user, extra = {}) => ({ kind: 'message', id, msg: { id, user, text: id, ...extra } });
  const entries = [e('1-0', 'Al'), e('2-0', 'Al'), { kind: 'notice', text: 'Bo joined' }, e('3-0', 'Al', { deleted: true }), e('4-0', 'Bo')];
  assert.equal(lastOwnMessage(entries, mine).id, '2-0');
  assert.equal(lastOwnMessage([e('4-0', 'Bo')], mine), null);
  assert.equal(lastOwnMessage([], mine), null);
});

test('a quote shows the first line with something on it, cut short', () => {
  assert.equal(firstLine('\n  \n  first line  \nsecond'), 'first line');
  assert.equal(firstLine(''), '');
  const long = firstLine('é'.repeat(150));
  assert.equal([...long].length, 100);
  assert.ok(long.endsWith('…'));
  assert.deepEqual(quoteView({ user: 'Al', text: 'hi\nthere' }, false), { state: 'shown', user: 'Al', line: 'hi' });
  assert.deepEqual(quoteView({ user: 'Al', deleted: true }, false), { state: 'deleted' });
  assert.deepEqual(quoteView(null, true), { state: 'deleted' });
  assert.deepEqual(quoteView(null, false), { state: 'unknown' });
});

test('fetching one original: before is the id with seq + 1; an older message means it was deleted', () => {
  assert.equal(beforeToFetch('1764085000000-0'), '1764085000000-1');
  assert.equal(beforeToFetch('5-9'), '5-10');
  const m = { id: '5-9', user: 'Al', text: 'x' };
  assert.deepEqual(fetchedOriginal('5-9', [m]), { state: 'found', msg: m });
  assert.deepEqual(fetchedOriginal('5-9', [{ id: '5-2', text: 'older' }]), { state: 'deleted' },
    'history still reaches behind it: it was not trimmed, so it was deleted');
  assert.deepEqual(fetchedOriginal('5-9', []), { state: 'unknown' }, 'trimmed (or deleted as the oldest)');
  assert.deepEqual(fetchedOriginal('5-9', [{ id: '5-9', deleted: true }]), { state: 'deleted' });
  assert.deepEqual(fetchedOriginal('5-9', null), { state: 'unknown' });
});

test('the last id seen follows message ids and change ids, compared as pairs', () => {
  assert.equal(laterId('9-0', '10-0'), '10-0');
  assert.equal(laterId('10-2', '10-10'), '10-10');
  assert.equal(laterId('10-10', '10-2'), '10-10');
  assert.equal(laterId(null, '3-0'), '3-0');
  assert.equal(laterId('3-0', null), '3-0');
  assert.equal(laterId('3-0', 'junk'), '3-0');
  assert.equal(laterId(null, null), null);
});

test('change frames and a reply carry the contract fields', () => {
  assert.deepEqual(editFrame('r', '1-0', 'new', 'c-1'), { type: 'edit', room: 'r', id: '1-0', text: 'new', client_id: 'c-1' });
  assert.deepEqual(deleteFrame('r', '1-0', 'c-2'), { type: 'delete', room: 'r', id: '1-0', client_id: 'c-2' });
  assert.deepEqual(reactFrame('r', '1-0', '👍', 0, 'c-3'), { type: 'react', room: 'r', id: '1-0', emoji: '👍', on: false, client_id: 'c-3' });
  assert.deepEqual(messageFrame('r', 'yes', 'c-4', '1-0'), { type: 'message', room: 'r', text: 'yes', client_id: 'c-4', reply_to: '1-0' });
  assert.equal('reply_to' in messageFrame('r', 'yes', 'c-4'), false);
  const text = 'x'.repeat(100);
  const plain = frameBytes(messageFrame('r', text, 'c-a-999999'));
  assert.equal(messageFits('r', text, 'c-a-', plain), true);
  assert.equal(messageFits('r', text, 'c-a-', plain, '1-0'), false, 'a reply is measured with its reply_to');
  const max = 200;
  assert.equal(editFits('r', '1-0', 'x'.repeat(100), 'c-a-', max), true);
  assert.equal(editFits('r', '1-0', 'x'.repeat(200), 'c-a-', max), false);
});

test('a pending reply keeps its reply_to through a reload', () => {
  const s = new PendingSends('c-x-');
  const p = s.add('r', 'yes', '1-0');
  s.add('r', 'plain');
  assert.equal(p.replyTo, '1-0');
  const snap = s.snapshot();
  assert.deepEqual(snap[0].replyTo, '1-0');
  assert.equal('replyTo' in snap[1], false);
  const t = new PendingSends('c-y-');
  t.restore(JSON.parse(JSON.stringify([...snap, { ...snap[1], cid: 'c-x-9', replyTo: 'junk' }])), () => true);
  assert.equal(t.get('c-x-1').replyTo, '1-0');
  assert.equal('replyTo' in t.get('c-x-2'), false);
  assert.equal('replyTo' in t.get('c-x-9'), false, 'a stored reply_to that is not an id is dropped');
});
