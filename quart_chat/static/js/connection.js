// The WebSocket: opening it, the heartbeat, reconnecting with backoff and jitter, and what
// #status shows. It knows nothing of rooms: the app hands it what to do on each event.

import { announceConnected, announceDisconnected, focusComposer, keyboardFocusIn } from './a11y.js';
import { attemptAfterClose, backoffDelay, closeNote, nextAttempt, statusText } from './backoff.js';
import { ui } from './dom.js';
import { encodeFrame, pingFrame } from './frames.js';
import { me, probeToken, wsUrl } from './identity.js';
import { clearToasts, stickyNote, toast } from './toasts.js';

const PING_EVERY_MS = 25000;
const STALE_AFTER_MS = 65000;   // nothing received for this long: drop and reconnect
const EXPIRED_TEXT = 'Your session has expired — get a new link';

// Others read these; only this module writes them.
export const link = {
  conn: 'closed',     // open | connecting | closed
  epoch: 0,           // one per socket: a reply on an older socket is not an answer now
  expired: false,     // the server refused the token: no more retries
};

let ws = null;
let attempt = 0;
let retryTimer = null;
let retryAt = 0;
let countdownTimer = null;
let pingTimer = null;
let openedAt = 0;
let lastRecv = 0;
let note = '';
let hooks = { connecting() {}, opened() {}, frame() {}, closed() {} };

export function startConnection(h) {
  hooks = h;
  connect();
}

export function sendFrame(frame) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(encodeFrame(frame));
  return true;
}

function setStatus(conn, why) {
  link.conn = conn;
  ui.status.dataset.state = conn;
  const text = statusText({
    conn, reconnecting: link.epoch > 1, expired: link.expired, note: why, expiredText: EXPIRED_TEXT,
    retryInMs: retryTimer ? retryAt - Date.now() : null,
  });
  ui.statusText.textContent = text;
  ui.status.title = text;
  ui.reconnect.hidden = conn !== 'closed' || link.expired;
}

function stopTimers() {
  clearTimeout(retryTimer);
  retryTimer = null;
  clearInterval(countdownTimer);
  countdownTimer = null;
}

function connect() {
  stopTimers();
  if (ws || link.expired) return;
  link.epoch += 1;
  hooks.connecting();
  setStatus('connecting');
  let sock;
  try {
    sock = new WebSocket(wsUrl());
  } catch (e) {
    onClosed(1006);
    return;
  }
  ws = sock;
  // A socket replaced meanwhile (dropped as stale) must not speak for the new one.
  sock.addEventListener('open', () => { if (ws === sock) onOpen(); });
  sock.addEventListener('message', (ev) => {
    if (ws !== sock) return;
    lastRecv = Date.now();
    hooks.frame(ev.data);
  });
  sock.addEventListener('close', (ev) => { if (ws === sock) { ws = null; onClosed(ev.code); } });
  sock.addEventListener('error', () => { /* a close event follows */ });
}

function onOpen() {
  openedAt = Date.now();
  lastRecv = Date.now();
  note = '';
  setStatus('open');
  clearToasts('conn');
  announceConnected();
  hooks.opened();
  clearInterval(pingTimer);
  pingTimer = setInterval(heartbeat, PING_EVERY_MS);
}

// A socket can die without a close event (a sleeping laptop, a NAT that forgot it): the
// server's silence is the only sign.
function heartbeat() {
  if (link.conn !== 'open' || !ws) return;
  if (Date.now() - lastRecv > STALE_AFTER_MS) {
    const stale = ws;
    ws = null;
    try { stale.close(4000, 'no response'); } catch (e) { /* ignore */ }
    onClosed(4000);
    return;
  }
  sendFrame(pingFrame());
}

function onClosed(code) {
  clearInterval(pingTimer);
  pingTimer = null;
  hooks.closed();
  if (me.token && code === 1008) { sessionExpired(); return; }   // the token expired while connected
  if (me.token && !openedAt) probeToken();   // refused with 401 before opening?
  attempt = attemptAfterClose(attempt, openedAt ? Date.now() - openedAt : 0);
  openedAt = 0;
  note = closeNote(code);
  // These two closes answer this page's own traffic (too big, not read fast enough): a toast
  // says so; any other close is told by #status alone.
  const opts = { code: 'closed', group: 'conn' };
  if (code === 1009) toast('The server closed the connection: a message was too big (1009)', 'Reconnecting…', opts);
  else if (code === 1013) toast('The server dropped this connection as too slow (1013)', 'Reconnecting…', opts);
  const delay = backoffDelay(attempt, Math.random());
  attempt = nextAttempt(attempt);
  retryAt = Date.now() + delay;
  retryTimer = setTimeout(connect, delay);
  setStatus('closed', note);
  announceDisconnected(note);
  clearInterval(countdownTimer);
  countdownTimer = setInterval(() => {
    if (link.conn === 'closed') setStatus('closed', note);
  }, 1000);
}

// "Retry now", or the browser says it is online again: skip the wait.
export function reconnectNow() {
  if (link.conn !== 'closed') return;
  const hadFocus = keyboardFocusIn(ui.reconnect);
  attempt = 0;
  connect();
  if (hadFocus && ui.reconnect.hidden) focusComposer();
}

// The server refused the token (it expired, or was never valid): retrying cannot help.
export function sessionExpired() {
  if (link.expired) return;
  link.expired = true;
  stopTimers();
  const old = ws;
  ws = null;
  try { if (old) old.close(); } catch (e) { /* ignore */ }
  setStatus('closed', EXPIRED_TEXT);
  clearToasts('conn');
  stickyNote('session-expired', 'expired', EXPIRED_TEXT,
    'Ask the site that sent you here for a new chat link, then open it.');
}
