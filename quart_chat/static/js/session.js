// This tab's session across a reload: the user, the rooms joined with the last id seen in
// each, the active room and the messages not confirmed yet. Saved a moment after each change,
// and when the page goes away.

import { ui } from './dom.js';
import { validUser } from './ids.js';
import { currentName, lockName, me } from './identity.js';
import { allRooms, ensureRoom, firstWanted, getRoom, rooms, updateRoomEntry } from './roomlist.js';
import { sends } from './sending.js';
import { LS_USER, SESSION_KEY, lsGet, lsSet, parseSession, sessionRecords, ssGet, ssSet } from './storage.js';
import { activate } from './view.js';

const SAVE_AFTER_MS = 200;   // a burst of changes (a catch-up) is saved once

let saveTimer = null;

export function scheduleSave() {
  if (saveTimer !== null) return;
  saveTimer = setTimeout(saveSession, SAVE_AFTER_MS);
}

export function saveSession() {
  clearTimeout(saveTimer);
  saveTimer = null;
  const joined = [];
  for (const r of allRooms()) {
    if (r.wanted) joined.push([r.name, r.lastId || (r.everJoined ? '0-0' : null)]);
  }
  const user = me.user || (joined.length ? currentName() : null);
  const { tab, shared } = sessionRecords({ user, rooms: joined, active: rooms.active, pending: sends.snapshot() });
  ssSet(SESSION_KEY, tab);
  lsSet(SESSION_KEY, shared);
}

// This tab after a reload joins again from the last id seen in each room. A new tab saw
// nothing yet: it joins plainly (the recent history), as a first join.
export function restoreSession() {
  const own = ssGet(SESSION_KEY);
  const data = own ? parseSession(own, true) : parseSession(lsGet(SESSION_KEY), false);
  if (!data) return;
  const name = me.tokenName || (data.user !== null ? data.user : lsGet(LS_USER));
  if (!validUser(name || '')) return;
  if (!data.rooms.length) return;
  for (const { name: roomName, since } of data.rooms) {
    const room = ensureRoom(roomName);
    room.wanted = true;
    room.restored = since !== null;
    room.lastId = since && since !== '0-0' ? since : null;
    room.restoreFrom = since;
    updateRoomEntry(room);
  }
  if (!me.tokenName) ui.username.value = name.trim();
  lockName();
  sends.restore(data.pending, (roomName) => {
    const room = getRoom(roomName);
    return !!room && room.wanted;
  });
  const active = data.active !== null && getRoom(data.active);
  const first = active && active.wanted ? active : firstWanted();
  activate(first ? first.name : null);
}
