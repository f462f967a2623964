// Day separators and how times read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dayKey, dayLabel, dayStarts, fullTime, hhmm, isoTime } from '../../quart_chat/static/js/days.js';

test('dayKey is the local calendar day, empty when unknown', () => {
  assert.equal(dayKey(new Date(2026, 0, 5, 23, 59).getTime()), '2026-01-05');
  assert.equal(dayKey(new Date(2026, 11, 31, 0, 0).getTime()), '2026-12-31');
  assert.equal(dayKey(0), '');
  assert.equal(dayKey(undefined), '');
  assert.equal(dayKey('nonsense'), '');
});

test('Today and Yesterday by the calendar, older days as dates', () => {
  const now = new Date(2026, 2, 10, 0, 30);   // half past midnight
  assert.equal(dayLabel('2026-03-10', now), 'Today');
  assert.equal(dayLabel('2026-03-09', now), 'Yesterday', 'an hour ago, but yesterday');
  const older = dayLabel('2026-03-01', now);
  assert.notEqual(older, 'Yesterday');
  assert.match(older, /2026/);
});

test('a separator before the first entry of each day; unknown days neither start nor break one', () => {
  assert.deepEqual(dayStarts(['2026-01-01', '2026-01-01', '2026-01-02', '2026-01-02']), [true, false, true, false]);
  assert.deepEqual(dayStarts(['', '2026-01-01', '', '2026-01-01', '2026-01-03']), [false, true, false, false, true]);
  assert.deepEqual(dayStarts([]), []);
});

test('times read as HH:MM, with the exact time and the date for a title', () => {
  const ts = new Date(2026, 10, 30, 9, 5).getTime();
  assert.equal(hhmm(ts), '09:05');
  assert.equal(isoTime(ts), new Date(ts).toISOString());
  assert.match(fullTime(ts), /2026.*09:05$/);
  assert.equal(hhmm('x'), '');
  assert.equal(isoTime('x'), '');
  assert.equal(fullTime('x'), '');
});
