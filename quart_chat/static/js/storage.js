// What this tab keeps across a reload: the stored records (sessionStorage for this tab,
// localStorage for the next new tab) and their format. Encoding and parsing are pure;
// the get/set wrappers only survive storage that is missing or refused (private mode).

import { ID_RE, ROOM_RE } from './ids.js';

export const LS_USER = 'quart_chat.username';
export const SESSION_KEY = 'quart_chat.session';
export const TOKEN_KEY = 'quart_chat.token';   // sessionStorage: token mode (docs/token-mode.md)
const ROOMS_MAX = 100;

export function lsGet(key) { try { return localStorage.getItem(key); } catch (e) { return null; } }
export function lsSet(key, v) { try { localStorage.setItem(key, v); } catch (e) { /* private mode */ } }
export function ssGet(key) { try { return sessionStorage.getItem(key); } catch (e) { return null; } }
export function ssSet(key, v) { try { sessionStorage.setItem(key, v); } catch (e) { /* private mode */ } }

// `rooms`: [name, last id seen or null]. This tab's record keeps the ids and the unconfirmed
// messages; a new tab saw nothing yet, so its record has neither (it joins plainly).
export function sessionRecords({ user, rooms, active, pending }) {
  return {
    tab: JSON.stringify({ v: 1, user, rooms, active, pending }),
    shared: JSON.stringify({ v: 1, user, rooms: rooms.map(([n]) => [n, null]), active }),
  };
}

// A stored record as {user, rooms: [{name, since}], active, pending}, or null when it is
// unusable. `fromTab`: it is this tab's own record (its ids and pending messages count).
export function parseSession(raw, fromTab) {
  if (!raw) return null;
  let data;
  try { data = JSON.parse(raw); } catch (e) { return null; }
  if (!data || data.v !== 1 || !Array.isArray(data.rooms)) return null;
  const rooms = [];
  for (const item of data.rooms.slice(0, ROOMS_MAX)) {
    if (!Array.isArray(item) || typeof item[0] !== 'string' || !ROOM_RE.test(item[0])) continue;
    const since = fromTab && typeof item[1] === 'string' && ID_RE.test(item[1]) ? item[1] : null;
    rooms.push({ name: item[0], since });
  }
  return {
    user: typeof data.user === 'string' ? data.user : null,
    rooms,
    active: typeof data.active === 'string' ? data.active : null,
    pending: fromTab && Array.isArray(data.pending) ? data.pending : [],
  };
}
