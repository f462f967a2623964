// Reconnection arithmetic: exponential backoff with jitter, when it starts over, and what a
// close code means to a reader. Pure: the connection module owns the timers.

export const BACKOFF_START_MS = 500;
export const BACKOFF_CAP_MS = 10000;
export const STABLE_AFTER_MS = 5000;   // a connection open this long resets the backoff
const MAX_ATTEMPT = 10;

// Half the capped exponential plus a random half of it: many pages cut off by one restart
// do not all come back in the same instant. `random` is in [0, 1).
export function backoffDelay(attempt, random) {
  const base = Math.min(BACKOFF_CAP_MS, BACKOFF_START_MS * 2 ** attempt);
  return Math.round(base / 2 + random * base / 2);
}

export function nextAttempt(attempt) { return Math.min(attempt + 1, MAX_ATTEMPT); }

// A socket that stayed up for a while was a success: the next drop starts the backoff over.
export function attemptAfterClose(attempt, openForMs) {
  return openForMs > STABLE_AFTER_MS ? 0 : attempt;
}

const CLOSE_TEXT = {
  1000: 'connection closed',
  1001: 'server going away (1001)',
  1006: 'connection lost',
  1008: 'refused by server (1008)',
  1009: 'message too big (1009)',
  1011: 'server error (1011)',
  1012: 'server restarting (1012)',
  1013: 'connection too slow (1013)',
  4000: 'no response from server',
};

export function closeNote(code) {
  return CLOSE_TEXT[code] || (code ? 'closed (' + code + ')' : 'connection lost');
}

// What #status says. `retryInMs` is null when no retry is scheduled.
export function statusText({ conn, reconnecting, expired, note, retryInMs, expiredText }) {
  if (conn === 'open') return 'Connected';
  if (conn === 'connecting') return reconnecting ? 'Reconnecting…' : 'Connecting…';
  if (expired) return expiredText;
  const secs = Math.max(0, Math.ceil((retryInMs || 0) / 1000));
  return 'Disconnected' + (note ? ': ' + note : '') + (retryInMs !== null ? ' — retrying in ' + secs + ' s' : '');
}
