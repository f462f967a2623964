// Who this page is: the name the server confirmed and, in token mode (docs/token-mode.md),
// the token, the name it carries and the rooms it allows; the URLs that carry the token.

import { sessionExpired } from './connection.js';
import { ui } from './dom.js';
import { anyRoomHeld } from './roomlist.js';
import { LS_USER, TOKEN_KEY, lsGet, lsSet, ssGet, ssSet } from './storage.js';
import { decodeJwtName, decodeJwtRooms, roomAllowed, tokenFromHash } from './token.js';

// Others read these; only this module writes them.
export const me = {
  user: null,          // the name confirmed by the server (joined.user)
  token: null,         // token mode: the JWT this tab connects with
  tokenName: null,     // ... the name it carries
  tokenRooms: null,    // ... the room patterns it allows (null: every room)
};

export function initIdentity() {
  me.token = readToken();
  me.tokenName = me.token ? decodeJwtName(me.token) : null;
  me.tokenRooms = me.token ? decodeJwtRooms(me.token) : null;
  if (me.tokenName) {
    ui.username.value = me.tokenName;
    lockName();
  } else {
    const savedName = lsGet(LS_USER);
    if (savedName && !ui.username.value) ui.username.value = savedName;
  }
}

function readToken() {
  const t = tokenFromHash(location.hash);
  if (t === null) return ssGet(TOKEN_KEY);
  ssSet(TOKEN_KEY, t);
  // Keep the token out of the address bar, the history and any copied link.
  try { history.replaceState(null, '', location.pathname + location.search); } catch (e) { /* ignore */ }
  return t;
}

// Rooms the token does not allow are not listed (the server refuses them anyway).
export function allows(room) { return roomAllowed(me.tokenRooms, room); }

export function currentName() {
  if (me.tokenName) return me.tokenName;
  return me.user !== null ? me.user : ui.username.value.trim();
}

export function confirmUser(name) {
  me.user = name;
  ui.username.value = name;
  lsSet(LS_USER, name);
  lockName();
}

// Remembered for the next visit once typed, before any join confirms it.
export function rememberName(name) { lsSet(LS_USER, name); }

// The server fixes a connection's name at its first join: the field says so.
export function lockName() {
  ui.username.readOnly = true;
  ui.username.classList.add('locked');
  ui.username.title = me.tokenName ? 'Your name comes from your sign-in token'
    : 'Your name is fixed once you have joined a room';
}

export function maybeUnlockName() {
  if (me.tokenName) return;
  if (!anyRoomHeld() && me.user === null) {
    ui.username.readOnly = false;
    ui.username.classList.remove('locked');
    ui.username.removeAttribute('title');
  }
}

export function wsUrl() {
  const base = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  return me.token ? base + '?token=' + encodeURIComponent(me.token) : base;
}

export function apiFetch(url) {
  const headers = { Accept: 'application/json' };
  if (me.token) headers.Authorization = 'Bearer ' + me.token;
  return fetch(url, { cache: 'no-store', headers }).then((r) => {
    if (r.status === 401 && me.token) sessionExpired();
    return r;
  });
}

// A WebSocket refused with 401 looks to the page like any failed connection: a REST call
// with the same token tells (apiFetch notices the 401).
export function probeToken() {
  apiFetch('/rooms?limit=1').catch(() => { /* offline: the retries go on */ });
}
