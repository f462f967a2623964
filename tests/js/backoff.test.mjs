// Reconnecting: exponential backoff with jitter, when it starts over, and what #status says.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BACKOFF_CAP_MS, BACKOFF_START_MS, STABLE_AFTER_MS, attemptAfterClose, backoffDelay, closeNote, nextAttempt,
  statusText,
} from '../../quart_chat/static/js/backoff.js';

test('the delay doubles per attempt, between half and all of its base', () => {
  for (let attempt = 0; attempt < 5; attempt++) {
    const base = BACKOFF_START_MS * 2 ** attempt;
    assert.equal(backoffDelay(attempt, 0), base / 2, 'no jitter: half the base');
    assert.equal(backoffDelay(attempt, 0.999999), base, 'most jitter: the whole base');
    const d = backoffDelay(attempt, 0.5);
    assert.ok(d > base / 2 && d < base, `${d} within (${base / 2}, ${base})`);
  }
});

test('the delay is capped however many attempts failed', () => {
  assert.equal(backoffDelay(30, 0.999999), BACKOFF_CAP_MS);
  assert.equal(backoffDelay(30, 0), BACKOFF_CAP_MS / 2);
});

test('attempts count up to a bound', () => {
  let a = 0;
  for (let i = 0; i < 50; i++) a = nextAttempt(a);
  assert.equal(a, 10);
  assert.equal(nextAttempt(0), 1);
});

test('a connection that stayed up starts the backoff over; a short one does not', () => {
  assert.equal(attemptAfterClose(6, STABLE_AFTER_MS + 1), 0);
  assert.equal(attemptAfterClose(6, STABLE_AFTER_MS), 6);
  assert.equal(attemptAfterClose(6, 0), 6, 'never opened');
});

test('close codes read as reasons', () => {
  assert.equal(closeNote(1009), 'message too big (1009)');
  assert.equal(closeNote(4000), 'no response from server');
  assert.equal(closeNote(4321), 'closed (4321)');
  assert.equal(closeNote(0), 'connection lost');
});

test('status text for each state', () => {
  const base = { expired: false, note: '', retryInMs: null, expiredText: 'expired', reconnecting: false };
  assert.equal(statusText({ ...base, conn: 'open' }), 'Connected');
  assert.equal(statusText({ ...base, conn: 'connecting' }), 'Connecting…');
  assert.equal(statusText({ ...base, conn: 'connecting', reconnecting: true }), 'Reconnecting…');
  assert.equal(statusText({ ...base, conn: 'closed', note: 'connection lost', retryInMs: 2100 }),
    'Disconnected: connection lost — retrying in 3 s');
  assert.equal(statusText({ ...base, conn: 'closed', retryInMs: -50 }), 'Disconnected — retrying in 0 s');
  assert.equal(statusText({ ...base, conn: 'closed', note: 'x' }), 'Disconnected: x', 'no retry planned');
  assert.equal(statusText({ ...base, conn: 'closed', expired: true, retryInMs: 10 }), 'expired');
});
