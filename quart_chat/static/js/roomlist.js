// The rooms: every room the page knows (the server's list, kept live), each one's state, the
// #rooms list in name order with its filter and unread badges, and which room is active.

import { button, el, ui } from './dom.js';
import { ROOM_RE } from './ids.js';
import { allows, apiFetch } from './identity.js';
import { cmpRooms, mergeSorted, orderIndex } from './order.js';
import { badgeCount } from './unread.js';

const ROOMS_PAGE = 1000;        // GET /rooms?limit= (the server's maximum)
const ROOMS_MAX_PAGES = 1000;   // a bound on one pass over the paged list
const BATCH_FROM = 16;          // from this many new rooms at once, one merge beats many inserts

const byName = new Map();
let order = [];                 // the rooms in #rooms order
let filter = '';                // the room field, lower case: #rooms shows the names containing it
let loading = false;
let again = false;

// Others read these; only this module writes them.
export const rooms = {
  active: null,                 // the active room's name
  loaded: false,                // a pass over GET /rooms completed
  gen: 0,                       // the current pass over GET /rooms
};

function newRoom(name, created) {
  const li = el('li', 'room');
  li.dataset.room = name;
  const btn = button('room-btn');
  btn.title = name;
  const hash = el('span', 'room-hash', '#');
  hash.setAttribute('aria-hidden', 'true');
  const label = el('span', 'room-name', name);
  const mentioned = el('span', 'mentioned');
  mentioned.hidden = true;
  const unread = el('span', 'unread');
  unread.hidden = true;
  btn.append(hash, label, mentioned, unread);
  li.append(btn);
  return {
    name,
    sortKey: name.toLowerCase(),
    created: Number(created) || 0,
    known: false,           // the server listed or announced it (else: typed here, maybe not created)
    seenGen: 0,             // the last pass over GET /rooms (or room_created) that saw it
    wanted: false,          // the user wants to be in it (joined or joining)
    everJoined: false,      // a `joined` arrived on this page (a rejoin uses `since`)
    restored: false,        // joined again after a reload: the first `joined` continues a session
    restoreFrom: null,      // ... from this id
    returnTo: null,         // the active room before this one was joined: where a refusal goes back
    joinedEpoch: -1,        // the socket of the last `joined`
    entries: [],            // {kind: 'message', id, key, msg, el, local?} | {kind: 'notice', text, cls, ts, el}
    ids: new Set(),
    lastId: null,           // the newest message or change id of the server's ordered stream: the next `since`
    gone: new Set(),        // ids of messages deleted while the page was here: never shown again
    originals: new Map(),   // id -> what GET history said of a replied-to message not loaded
    replies: 0,             // messages with a reply_to among the entries
    replyTo: null,          // the message the next one answers: {id, user, line}
    unread: 0,              // messages after the user's read marker, not their own (readmarks.js)
    mentioned: 0,           // ... of which mention the user
    divider: null,          // the first unread message when the room was opened: "New messages"
    dividerDue: false,      // ... decided at the room's `joined`
    members: new Set(),     // user names (the server counts tabs: one name, one entry)
    hasMore: null,          // older history? null: unknown
    loadingOlder: false,
    probing: false,
    stick: true,            // the view was at the bottom when last shown
    scrollTop: 0,
    li,
    unreadEl: unread,
    mentionedEl: mentioned,
    shownState: '',
  };
}

export function getRoom(name) { return byName.get(name) || null; }

export function allRooms() { return byName.values(); }

export function activeRoom() { return rooms.active ? getRoom(rooms.active) : null; }

export function setActive(name) { rooms.active = name; }

export function wantedRooms() { return [...byName.values()].filter((r) => r.wanted); }

export function firstWanted() {
  for (const r of byName.values()) if (r.wanted) return r;
  return null;
}

export function anyRoomHeld() {
  for (const r of byName.values()) if (r.wanted || r.everJoined) return true;
  return false;
}

export function ensureRoom(name, created) {
  let room = byName.get(name);
  if (!room) {
    room = newRoom(name, created);
    byName.set(name, room);
    insertRoomEntry(room);
    updateRoomsEmpty();
  } else if (created && !room.created) {
    room.created = Number(created) || 0;
  }
  return room;
}

// The server announced it (room_created): it exists, and the current pass counts it as seen.
export function roomCreated(name, ts) {
  if (!ROOM_RE.test(name) || !allows(name)) return;
  const room = ensureRoom(name, ts);
  room.known = true;
  room.seenGen = rooms.gen;
}

// Forget what the page holds of a room (a leave, or a refused join).
export function resetRoom(room) {
  room.wanted = false;
  room.everJoined = false;
  room.restored = false;
  room.joinedEpoch = -1;
  room.entries = [];
  room.ids = new Set();
  room.lastId = null;
  room.gone = new Set();
  room.originals = new Map();
  room.replies = 0;
  room.replyTo = null;
  room.unread = 0;
  room.mentioned = 0;
  room.divider = null;
  room.dividerDue = false;
  room.members = new Set();
  room.hasMore = null;
  room.stick = true;
}

function filteredOut(room) {
  return filter !== '' && !room.sortKey.includes(filter);
}

export function filtering() { return filter !== ''; }

// Typing in the room field narrows the list (the entries stay in #rooms, hidden).
export function applyRoomFilter() {
  const q = ui.room.value.trim().toLowerCase();
  if (q === filter) return;
  filter = q;
  for (const room of order) {
    const hide = filteredOut(room);
    if (room.li.hidden !== hide) room.li.hidden = hide;
  }
  updateRoomsEmpty();
}

function insertRoomEntry(room) {
  room.li.hidden = filteredOut(room);
  const i = orderIndex(order, room);
  const next = order[i];
  order.splice(i, 0, room);
  ui.rooms.insertBefore(room.li, next ? next.li : null);
  updateRoomEntry(room);
}

// A page of GET /rooms: one sort and one pass over the DOM, built in a DocumentFragment,
// instead of a search and an insertion per room.
function addRoomsBatch(items, gen) {
  const fresh = [];
  for (const item of items) {
    if (!item || typeof item.name !== 'string' || !ROOM_RE.test(item.name) || !allows(item.name)) continue;
    let room = byName.get(item.name);
    if (!room) {
      room = newRoom(item.name, item.created);
      byName.set(item.name, room);
      fresh.push(room);
    } else if (item.created && !room.created) {
      room.created = Number(item.created) || 0;
    }
    room.known = true;
    room.seenGen = gen;
  }
  if (!fresh.length) return;
  if (fresh.length < BATCH_FROM) {
    for (const room of fresh) insertRoomEntry(room);
  } else {
    fresh.sort(cmpRooms);
    order = mergeSorted(order, fresh, cmpRooms);
    for (const room of fresh) {
      room.li.hidden = filteredOut(room);
      updateRoomEntry(room);
    }
    const frag = document.createDocumentFragment();
    for (const room of order) frag.appendChild(room.li);
    ui.rooms.appendChild(frag);
  }
  updateRoomsEmpty();
}

// A room the user is in, or looks at, stays whatever the server's list says.
export function removeRoom(name) {
  const room = byName.get(name);
  if (!room || room.wanted || rooms.active === name) return false;
  byName.delete(name);
  const i = orderIndex(order, room);
  if (order[i] === room) order.splice(i, 1);
  else {
    const j = order.indexOf(room);
    if (j >= 0) order.splice(j, 1);
  }
  room.li.remove();
  updateRoomsEmpty();
  return true;
}

export function updateRoomEntry(room) {
  const li = room.li;
  const isActive = rooms.active === room.name;
  const showUnread = room.unread > 0 && !isActive;
  const showMentioned = room.mentioned > 0 && !isActive;
  // Thousands of entries: touch the DOM only when what it shows changed.
  const key = (room.wanted ? 'w' : '') + (isActive ? 'a' : '') + (showUnread ? room.unread : '') +
    (showMentioned ? '@' + room.mentioned : '');
  if (key === room.shownState) return;
  room.shownState = key;
  li.classList.toggle('joined', room.wanted);
  li.classList.toggle('active', isActive);
  const btn = li.firstElementChild;
  if (isActive) btn.setAttribute('aria-current', 'true');
  else btn.removeAttribute('aria-current');
  badge(room.mentionedEl, showMentioned ? room.mentioned : 0, '@', room.mentioned === 1 ? ' mention' : ' mentions');
  if (showUnread) {
    room.unreadEl.textContent = badgeCount(room.unread);
    room.unreadEl.hidden = false;
    room.unreadEl.setAttribute('aria-label', room.unread + ' unread');
    li.classList.add('has-unread');
  } else {
    room.unreadEl.textContent = '';
    room.unreadEl.hidden = true;
    room.unreadEl.removeAttribute('aria-label');
    li.classList.remove('has-unread');
  }
}

function badge(node, n, prefix, what) {
  node.hidden = !n;
  node.textContent = n ? prefix + badgeCount(n) : '';
  if (n) node.setAttribute('aria-label', n + what);
  else node.removeAttribute('aria-label');
}

export function updateRoomsEmpty() {
  const n = byName.size;
  ui.roomCount.textContent = n ? n.toLocaleString('en') : '';
  if (n > 0 && filter !== '') {
    ui.roomsEmpty.hidden = order.some((room) => !room.li.hidden);
    ui.roomsEmpty.textContent = ROOM_RE.test(ui.room.value.trim())
      ? 'No room matches — press Join to create #' + ui.room.value.trim()
      : 'No room matches';
  } else if (n > 0) ui.roomsEmpty.hidden = true;
  else {
    ui.roomsEmpty.hidden = false;
    ui.roomsEmpty.textContent = rooms.loaded ? 'No rooms yet — name one and press Join.' : 'Loading rooms…';
  }
}

export function updateTitle() {
  let total = 0;
  for (const r of byName.values()) if (r.wanted && r.name !== rooms.active) total += r.unread;
  const base = rooms.active ? '#' + rooms.active + ' · quart_chat' : 'quart_chat';
  document.title = (total ? '(' + total + ') ' : '') + base;
}

// Every page of GET /rooms, following `next` until it is null. A pass that completes also
// drops the rooms it no longer lists (removed while this page was not connected). A call
// during a pass makes one more pass after it, not a second one at once.
export async function loadRooms() {
  if (loading) { again = true; return; }
  loading = true;
  try {
    let restarts = 0;
    for (;;) {
      const gen = ++rooms.gen;
      let after = null;
      let pages = 0;
      let restart = false;
      for (;;) {
        const url = '/rooms?limit=' + ROOMS_PAGE + (after !== null ? '&after=' + encodeURIComponent(after) : '');
        const r = await apiFetch(url);
        if (r.status === 404 && after !== null && restarts < 3) { restart = true; break; } // `after` was removed
        if (!r.ok) throw new Error('HTTP ' + r.status);
        const data = await r.json();
        addRoomsBatch(data && Array.isArray(data.rooms) ? data.rooms : [], gen);
        const next = data ? data.next : null;
        pages += 1;
        if (typeof next !== 'string' || !next || next === after || pages >= ROOMS_MAX_PAGES) break;
        after = next;
      }
      if (restart) { restarts += 1; continue; }
      for (const room of [...byName.values()]) {
        if (room.known && room.seenGen < gen && !room.wanted) removeRoom(room.name);
      }
      rooms.loaded = true;
      updateRoomsEmpty();
      break;
    }
  } catch (e) {
    if (!rooms.loaded) {
      ui.roomsEmpty.hidden = byName.size > 0;
      ui.roomsEmpty.textContent = 'Could not load the room list — it will retry when connected.';
    }
  } finally {
    loading = false;
    if (again) {
      again = false;
      loadRooms();
    }
  }
}
