// quart_chat browser client. Plain ES2020, no build step, no inline code (strict CSP).
// Every user-supplied string is rendered with textContent / text nodes only.
'use strict';

(() => {
  // ---------------------------------------------------------------- constants
  const WS_URL = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  const MAX_FRAME_BYTES = 16384;        // CHAT_MAX_FRAME default; bigger frames close the socket (1009)
  const PING_EVERY_MS = 25000;
  const STALE_AFTER_MS = 65000;         // nothing received for this long -> drop and reconnect
  const BACKOFF_START_MS = 500;
  const BACKOFF_CAP_MS = 10000;
  const STABLE_AFTER_MS = 5000;         // a connection open this long resets the backoff
  const HISTORY_PAGE = 50;
  const TOAST_MS = 8000;
  const MAX_TOASTS = 4;
  const AVATAR_COLORS = 10;
  const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
  const CONTROL_RE = /\p{Cc}/u;
  const LS_USER = 'quart_chat.username';
  const LS_ROOM = 'quart_chat.lastRoom';

  const ERROR_TEXT = {
    rate_limited: "You're sending too fast — slow down",
    invalid_text: 'Message not sent: it is empty or too long',
    unavailable: 'Server storage unavailable — your message was not sent',
    not_joined: "You're not in that room",
    invalid_room: 'Invalid room name — use 1–64 letters, digits, _ or -',
    invalid_user: 'Invalid name — 1–32 characters, no control characters, and it cannot change after your first join',
    bad_json: 'The server could not read a request',
    bad_request: 'The server rejected a malformed request',
    unknown_type: 'The server did not understand a request',
  };

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

  // ---------------------------------------------------------------- DOM helpers
  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function button(cls, text, onClick) {
    const b = el('button', cls, text);
    b.type = 'button';
    if (onClick) b.addEventListener('click', onClick);
    return b;
  }

  const ui = {};

  // ---------------------------------------------------------------- state
  const state = {
    ws: null,
    conn: 'closed',           // open | connecting | closed
    epoch: 0,                 // increments per socket
    attempt: 0,               // backoff attempt counter
    retryTimer: null,
    retryAt: 0,
    countdownTimer: null,
    pingTimer: null,
    openedAt: 0,
    lastRecv: 0,
    closeNote: '',
    user: null,               // name confirmed by the server (joined.user)
    rooms: new Map(),         // name -> Room
    active: null,             // active room name
    joinQueue: [],            // room names whose join awaits a reply on the current socket (in order)
    pending: new Map(),       // client_id -> {cid, room, text, state: queued|sent|failed, epoch, reason}
    restored: new Map(),      // client_id -> text put back in the message box after an error
    cidPrefix: 'c-' + Math.random().toString(36).slice(2, 8) + '-',
    cidCounter: 0,
    roomsLoaded: false,
  };

  // ---------------------------------------------------------------- small utils
  function parseId(id) {
    const s = String(id);
    const i = s.indexOf('-');
    if (i < 0) return [Number(s) || 0, 0];
    return [Number(s.slice(0, i)) || 0, Number(s.slice(i + 1)) || 0];
  }

  function cmpKey(a, b) {
    return (a[0] - b[0]) || (a[1] - b[1]);
  }

  function pad2(n) { return n < 10 ? '0' + n : String(n); }

  function hhmm(ts) {
    const d = new Date(Number(ts));
    if (Number.isNaN(d.getTime())) return '';
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes());
  }

  function fullTime(ts) {
    const d = new Date(Number(ts));
    return Number.isNaN(d.getTime()) ? '' : d.toLocaleString();
  }

  function hashString(s) {
    let h = 0;
    for (const ch of s) h = (Math.imul(h, 31) + ch.codePointAt(0)) | 0;
    return Math.abs(h);
  }

  function initials(name) {
    const parts = String(name).trim().split(/\s+/u).filter(Boolean);
    if (!parts.length) return '?';
    const first = [...parts[0]][0] || '?';
    const second = parts.length > 1 ? ([...parts[parts.length - 1]][0] || '') : '';
    return (first + second).toUpperCase();
  }

  // The avatar letters are painted by CSS (::before content: attr(data-initial)) so they
  // never appear in the element's text: #members and .user hold the names alone.
  function avatar(name, extraCls) {
    const a = el('span', 'avatar av-' + (hashString(String(name)) % AVATAR_COLORS) + (extraCls ? ' ' + extraCls : ''));
    a.dataset.initial = initials(name);
    a.setAttribute('aria-hidden', 'true');
    return a;
  }

  function codePoints(s) { return [...s].length; }

  function validUser(name) {
    const t = name.trim();
    const n = codePoints(t);
    return n >= 1 && n <= 32 && !CONTROL_RE.test(t);
  }

  function lsGet(key) { try { return localStorage.getItem(key); } catch (e) { return null; } }
  function lsSet(key, v) { try { localStorage.setItem(key, v); } catch (e) { /* private mode */ } }

  const encoder = new TextEncoder();

  // ---------------------------------------------------------------- rooms model
  function newRoom(name, created) {
    const li = el('li', 'room');
    li.dataset.room = name;
    const btn = button('room-btn');
    btn.title = name;
    const hash = el('span', 'room-hash', '#');
    hash.setAttribute('aria-hidden', 'true');
    const label = el('span', 'room-name', name);
    const unread = el('span', 'unread');
    unread.hidden = true;
    btn.append(hash, label, unread);
    li.append(btn);
    return {
      name,
      created: Number(created) || 0,
      wanted: false,          // the user wants to be in this room (joined or joining)
      everJoined: false,      // a `joined` arrived at least once (so rejoin uses `since`)
      joinedEpoch: -1,        // socket epoch of the last `joined`
      entries: [],            // {kind:'message', id, key, msg, el} | {kind:'notice', text, cls, el}
      ids: new Set(),
      lastId: null,
      unread: 0,
      members: new Set(),     // user names (the server counts tabs: one name, one entry)
      hasMore: null,          // older history available? null = unknown
      loadingOlder: false,
      probing: false,
      stick: true,
      scrollTop: 0,
      li,
      unreadEl: unread,
    };
  }

  function ensureRoom(name, created) {
    let room = state.rooms.get(name);
    if (!room) {
      room = newRoom(name, created);
      state.rooms.set(name, room);
      insertRoomEntry(room);
      updateRoomsEmpty();
    } else if (created && !room.created) {
      room.created = Number(created) || 0;
    }
    return room;
  }

  function insertRoomEntry(room) {
    const key = room.name.toLowerCase();
    let before = null;
    for (const li of ui.rooms.children) {
      const other = li.dataset.room;
      const ok = other.toLowerCase();
      if (ok > key || (ok === key && other > room.name)) { before = li; break; }
    }
    ui.rooms.insertBefore(room.li, before);
    updateRoomEntry(room);
  }

  function updateRoomEntry(room) {
    const li = room.li;
    li.classList.toggle('joined', room.wanted);
    li.classList.toggle('active', state.active === room.name);
    const btn = li.firstElementChild;
    if (state.active === room.name) btn.setAttribute('aria-current', 'true');
    else btn.removeAttribute('aria-current');
    if (room.unread > 0 && state.active !== room.name) {
      room.unreadEl.textContent = room.unread > 99 ? '99+' : String(room.unread);
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

  function updateRoomsEmpty() {
    if (state.rooms.size > 0) ui.roomsEmpty.hidden = true;
    else {
      ui.roomsEmpty.hidden = false;
      ui.roomsEmpty.textContent = state.roomsLoaded ? 'No rooms yet — name one and press Join.' : 'Loading rooms…';
    }
  }

  function updateTitle() {
    let total = 0;
    for (const r of state.rooms.values()) if (r.wanted && r.name !== state.active) total += r.unread;
    const base = state.active ? '#' + state.active + ' · quart_chat' : 'quart_chat';
    document.title = (total ? '(' + total + ') ' : '') + base;
  }

  async function loadRooms() {
    try {
      const r = await fetch('/rooms', { cache: 'no-store', headers: { Accept: 'application/json' } });
      if (!r.ok) throw new Error('HTTP ' + r.status);
      const data = await r.json();
      for (const item of (data && Array.isArray(data.rooms) ? data.rooms : [])) {
        if (item && typeof item.name === 'string') ensureRoom(item.name, item.created);
      }
      state.roomsLoaded = true;
      updateRoomsEmpty();
    } catch (e) {
      if (!state.roomsLoaded) {
        ui.roomsEmpty.hidden = state.rooms.size > 0;
        ui.roomsEmpty.textContent = 'Could not load the room list — it will retry when connected.';
      }
    }
  }

  // ---------------------------------------------------------------- messages model + DOM
  function isMine(msg) {
    if (msg.client_id && state.pending.has(msg.client_id)) return true;
    if (msg.client_id && String(msg.client_id).startsWith(state.cidPrefix)) return true;
    return state.user !== null && msg.user === state.user;
  }

  function renderMessage(entry) {
    const msg = entry.msg;
    const root = el('div', 'message');
    root.dataset.id = entry.id;
    if (isMine(msg)) root.classList.add('mine');
    const user = typeof msg.user === 'string' ? msg.user : '';
    root.append(avatar(user, 'msg-avatar'));
    const bubble = el('div', 'bubble');
    const meta = el('div', 'meta');
    const who = el('span', 'user', user);
    const time = el('time', 'time', hhmm(msg.ts));
    const d = new Date(Number(msg.ts));
    if (!Number.isNaN(d.getTime())) time.dateTime = d.toISOString();
    time.title = fullTime(msg.ts);
    meta.append(who, time);
    const text = el('div', 'text', typeof msg.text === 'string' ? msg.text : '');
    bubble.append(meta, text);
    root.append(bubble);
    return root;
  }

  function renderNotice(entry) {
    const n = el('div', 'notice' + (entry.cls ? ' ' + entry.cls : ''));
    n.setAttribute('role', 'note');
    n.append(el('span', 'notice-text', entry.text));
    if (entry.ts) {
      const t = el('time', 'time', hhmm(entry.ts));
      t.title = fullTime(entry.ts);
      n.append(t);
    }
    return n;
  }

  function entryEl(entry) {
    if (!entry.el) {
      entry.el = entry.kind === 'message' ? renderMessage(entry) : renderNotice(entry);
      if (entry.cont) entry.el.classList.add('cont');
    }
    return entry.el;
  }

  function atBottom() {
    const s = ui.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
  }

  function scrollToBottom() {
    ui.scroller.scrollTop = ui.scroller.scrollHeight;
    ui.jumpLatest.hidden = true;
  }

  // Position of a message in room.entries: after everything when it is the newest, else
  // right before the first message with a greater id (at the very top when it is the oldest).
  function positionFor(room, key) {
    const entries = room.entries;
    for (let i = entries.length - 1; i >= 0; i--) {
      if (entries[i].kind !== 'message') continue;
      if (cmpKey(entries[i].key, key) < 0) return entries.length; // newest: append
      return findFirstGreater(entries, key);
    }
    return entries.length; // no message yet
  }

  function findFirstGreater(entries, key) {
    let firstMsg = -1;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      if (e.kind !== 'message') continue;
      if (firstMsg < 0) firstMsg = i;
      if (cmpKey(e.key, key) > 0) return i === firstMsg ? 0 : i;
    }
    return entries.length;
  }

  // Adds a message to its room once (dedupe by id), in id order. Returns true when new.
  function addMessage(room, msg, opts) {
    if (!msg || typeof msg.id !== 'string' || room.ids.has(msg.id)) return false;
    room.ids.add(msg.id);
    const key = parseId(msg.id);
    const entry = { kind: 'message', id: msg.id, key, msg, el: null };
    const idx = positionFor(room, key);
    room.entries.splice(idx, 0, entry);
    if (room.lastId === null || cmpKey(parseId(room.lastId), key) < 0) room.lastId = msg.id;
    if (state.active === room.name) {
      const next = room.entries[idx + 1];
      const nextEl = next && next.el && next.el.parentNode === ui.messages ? next.el : null;
      const node = entryEl(entry);
      if (opts.animate) node.classList.add('enter');
      ui.messages.insertBefore(node, nextEl);
    }
    updateGrouping(room, idx);
    updateGrouping(room, idx + 1);
    if (opts.countUnread && state.active !== room.name && !isMine(msg)) {
      room.unread += 1;
      updateRoomEntry(room);
      updateTitle();
    }
    return true;
  }

  // Consecutive messages of one sender within a few minutes form a group: the repeated avatar
  // and name are hidden visually (the .user element stays, with the name, for every message).
  const GROUP_MS = 5 * 60 * 1000;

  function updateGrouping(room, i) {
    const e = room.entries[i];
    if (!e || e.kind !== 'message') return;
    const prev = room.entries[i - 1];
    e.cont = !!prev && prev.kind === 'message' && prev.msg.user === e.msg.user &&
      Math.abs(Number(e.msg.ts) - Number(prev.msg.ts)) < GROUP_MS;
    if (e.el) e.el.classList.toggle('cont', e.cont);
  }

  function addNotice(room, text, cls, ts) {
    const entry = { kind: 'notice', text, cls: cls || '', ts: ts || 0, el: null };
    room.entries.push(entry);
    if (state.active === room.name) {
      const stick = atBottom();
      const node = entryEl(entry);
      node.classList.add('enter');
      ui.messages.append(node);
      if (stick) scrollToBottom();
    }
  }

  // Batch insert with the active room's scroll behaviour handled once.
  function addMessages(room, list, opts) {
    const isActive = state.active === room.name;
    const stick = isActive && (atBottom() || opts.forceBottom);
    let added = 0;
    let mineAdded = false;
    for (const m of list) {
      if (addMessage(room, m, opts)) {
        added++;
        if (isMine(m)) mineAdded = true;
      }
    }
    if (isActive && added) {
      if (stick || mineAdded) scrollToBottom();
      else if (opts.live) ui.jumpLatest.hidden = false;
      updateEmptyState();
      updateLoadOlder();
    }
    return added;
  }

  function firstMessageId(room) {
    for (const e of room.entries) if (e.kind === 'message') return e.id;
    return null;
  }

  // ---------------------------------------------------------------- members
  // `joined.members` is a de-duplicated list of names; `user_joined` comes when a name enters
  // the room and `user_left` when its last connection leaves: members are a set of names.
  function setMembers(room, list) {
    room.members = new Set();
    for (const n of (Array.isArray(list) ? list : [])) if (typeof n === 'string') room.members.add(n);
    if (state.user !== null) room.members.add(state.user);
  }

  // Each returns whether the set changed (a `joined` snapshot may already hold the name).
  function memberJoined(room, name) {
    if (room.members.has(name)) return false;
    room.members.add(name);
    return true;
  }

  function memberLeft(room, name) {
    // this page is still in the room, whatever another connection of the same name did
    if (name === state.user && room.wanted && room.everJoined) return false;
    return room.members.delete(name);
  }

  function renderMembers() {
    const room = activeRoom();
    const names = room ? [...room.members] : [];
    names.sort((a, b) => {
      if (a === state.user) return -1;
      if (b === state.user) return 1;
      return a.localeCompare(b, undefined, { sensitivity: 'base' });
    });
    const items = names.map((n) => {
      const li = el('li', 'member' + (n === state.user ? ' me' : ''));
      li.append(avatar(n), el('span', 'member-name', n));
      li.title = n;
      return li;
    });
    ui.members.replaceChildren(...items);
    ui.memberCount.textContent = room ? String(names.length) : '';
    ui.roomSubtitle.textContent = room
      ? (room.everJoined ? names.length + (names.length === 1 ? ' member' : ' members') : 'Joining…')
      : 'Not in a room';
  }

  // ---------------------------------------------------------------- active room / view
  function activeRoom() {
    return state.active ? state.rooms.get(state.active) || null : null;
  }

  function activate(name) {
    const prev = activeRoom();
    if (prev) {
      prev.stick = atBottom();
      prev.scrollTop = ui.scroller.scrollTop;
    }
    state.active = name;
    const room = activeRoom();
    if (room) {
      room.unread = 0;
      lsSet(LS_ROOM, room.name);
    }
    for (const r of state.rooms.values()) updateRoomEntry(r);
    ui.roomTitle.textContent = room ? '#' + room.name : 'quart_chat';
    ui.leave.hidden = !room;
    const nodes = room ? room.entries.map(entryEl) : [];
    for (const n of nodes) n.classList.remove('enter');
    ui.messages.replaceChildren(...nodes);
    renderPending();
    renderMembers();
    updateEmptyState();
    updateComposer();
    updateLoadOlder();
    updateTitle();
    ui.jumpLatest.hidden = true;
    if (room) {
      if (room.stick) scrollToBottom();
      else ui.scroller.scrollTop = room.scrollTop;
      maybeProbeOlder(room);
    }
    document.body.classList.toggle('has-room', !!room);
  }

  function updateEmptyState() {
    const room = activeRoom();
    if (!room) {
      ui.emptyState.hidden = false;
      ui.emptyState.querySelector('.empty-title').textContent = 'Pick a name and join a room';
      ui.emptyState.querySelector('.empty-hint').textContent =
        'Type your name and a room, then press Join — or click a room in the list.';
    } else if (!room.entries.length && !pendingFor(room.name).length) {
      ui.emptyState.hidden = false;
      ui.emptyState.querySelector('.empty-title').textContent =
        room.everJoined ? 'No messages yet' : 'Joining #' + room.name + '…';
      ui.emptyState.querySelector('.empty-hint').textContent =
        room.everJoined ? 'Say hello — your message will be the first one here.' : '';
    } else {
      ui.emptyState.hidden = true;
    }
  }

  function updateComposer() {
    const room = activeRoom();
    const enabled = !!room;
    ui.message.disabled = !enabled;
    ui.send.disabled = !enabled;
    ui.message.placeholder = room ? 'Message #' + room.name : 'Join a room to start chatting';
    ui.message.title = room ? 'Enter sends, Shift+Enter starts a new line' : '';
  }

  function updateLoadOlder() {
    const room = activeRoom();
    const show = !!room && room.hasMore !== false && firstMessageId(room) !== null;
    ui.loadOlder.hidden = !show;
    ui.loadOlder.disabled = !!room && room.loadingOlder;
    ui.loadOlder.textContent = room && room.loadingOlder ? 'Loading…' : 'Load older messages';
  }

  function leaveActive() {
    const room = activeRoom();
    if (!room) return;
    room.wanted = false;
    room.everJoined = false;
    room.joinedEpoch = -1;
    room.entries = [];
    room.ids = new Set();
    room.lastId = null;
    room.unread = 0;
    room.members = new Set();
    room.hasMore = null;
    room.stick = true;
    for (const [cid, p] of state.pending) if (p.room === room.name) state.pending.delete(cid);
    sendFrame({ type: 'leave', room: room.name });
    const next = [...state.rooms.values()].find((r) => r.wanted);
    activate(next ? next.name : null);
    updateRoomEntry(room);
    maybeUnlockName();
  }

  // ---------------------------------------------------------------- older history
  function historyUrl(room, before, limit) {
    return '/rooms/' + encodeURIComponent(room.name) + '/history?limit=' + limit +
      '&before=' + encodeURIComponent(before);
  }

  async function maybeProbeOlder(room) {
    // Learn whether anything precedes the first shown message, so the button only shows when useful.
    if (room.hasMore !== null || room.probing) return;
    const first = firstMessageId(room);
    if (first === null) return;
    room.probing = true;
    try {
      const r = await fetch(historyUrl(room, first, 1), { cache: 'no-store' });
      if (!r.ok) return;
      const data = await r.json();
      if (room.hasMore === null && firstMessageId(room) === first) {
        room.hasMore = Array.isArray(data.messages) && data.messages.length > 0;
      }
    } catch (e) {
      /* leave unknown: the button stays */
    } finally {
      room.probing = false;
      if (state.active === room.name) updateLoadOlder();
    }
  }

  async function loadOlder() {
    const room = activeRoom();
    if (!room || room.loadingOlder) return;
    const first = firstMessageId(room);
    if (first === null) { room.hasMore = false; updateLoadOlder(); return; }
    room.loadingOlder = true;
    updateLoadOlder();
    try {
      const r = await fetch(historyUrl(room, first, HISTORY_PAGE), { cache: 'no-store' });
      let data = null;
      try { data = await r.json(); } catch (e) { data = null; }
      if (!r.ok) {
        const msg = data && data.error && data.error.message ? data.error.message : 'HTTP ' + r.status;
        throw new Error(msg);
      }
      const list = data && Array.isArray(data.messages) ? data.messages : [];
      const isActive = state.active === room.name;
      const s = ui.scroller;
      const prevHeight = s.scrollHeight;
      const prevTop = s.scrollTop;
      for (const m of list) {
        if (m && typeof m === 'object' && !m.room) m.room = room.name;
        addMessage(room, m, { live: false, countUnread: false });
      }
      room.hasMore = !!(data && data.has_more);
      if (isActive && state.active === room.name) {
        updateEmptyState();
        s.scrollTop = prevTop + (s.scrollHeight - prevHeight);
      }
    } catch (e) {
      toast('Could not load older messages', e && e.message, { code: 'history' });
    } finally {
      room.loadingOlder = false;
      if (state.active === room.name) updateLoadOlder();
    }
  }

  // ---------------------------------------------------------------- pending (own unsent/unconfirmed)
  function pendingFor(roomName) {
    return [...state.pending.values()].filter((p) => p.room === roomName);
  }

  function renderPending() {
    const room = activeRoom();
    const items = room ? pendingFor(room.name) : [];
    ui.pending.replaceChildren(...items.map(renderPendingItem));
  }

  function renderPendingItem(p) {
    const item = el('div', 'pending-item ' + p.state);
    item.dataset.clientId = p.cid;
    const bubble = el('div', 'bubble');
    bubble.append(el('div', 'pending-text', p.text));
    const status = el('div', 'pending-status');
    if (p.state === 'failed') {
      status.append(el('span', 'pending-reason', 'Not sent: ' + (p.reason || 'error')));
      const actions = el('span', 'pending-actions');
      actions.append(
        button('btn-link', 'Retry', () => retryPending(p.cid)),
        button('btn-link', 'Edit', () => editPending(p.cid)),
        button('btn-link', 'Discard', () => { state.pending.delete(p.cid); renderPending(); updateEmptyState(); }),
      );
      status.append(actions);
    } else {
      status.textContent = p.state === 'queued' ? 'Waiting for connection…' : 'Sending…';
    }
    bubble.append(status);
    item.append(bubble);
    return item;
  }

  function failPending(p, reason) {
    p.state = 'failed';
    p.reason = reason;
    const room = activeRoom();
    if (room && room.name === p.room && ui.message.value.trim() === '' && !ui.message.disabled) {
      // Put the text back where the user typed it.
      state.pending.delete(p.cid);
      state.restored.set(p.cid, p.text);
      if (state.restored.size > 50) state.restored.delete(state.restored.keys().next().value);
      ui.message.value = p.text;
      autoGrow();
      ui.message.focus();
    }
    if (state.active === p.room) { renderPending(); updateEmptyState(); }
  }

  function retryPending(cid) {
    const p = state.pending.get(cid);
    if (!p) return;
    state.pending.delete(cid);
    sendText(p.room, p.text);
  }

  function editPending(cid) {
    const p = state.pending.get(cid);
    if (!p) return;
    state.pending.delete(cid);
    if (state.active !== p.room) activate(p.room);
    const cur = ui.message.value;
    ui.message.value = cur.trim() ? cur + '\n' + p.text : p.text;
    autoGrow();
    ui.message.focus();
    renderPending();
    updateEmptyState();
  }

  function resolvePending(msg) {
    if (!msg || !msg.client_id) return;
    if (state.pending.delete(msg.client_id) && state.active === msg.room) renderPending();
    // Reported as failed, yet stored after all (e.g. a slow Redis): do not let it be sent twice.
    const text = state.restored.get(msg.client_id);
    if (text !== undefined) {
      state.restored.delete(msg.client_id);
      if (ui.message.value === text) {
        ui.message.value = '';
        autoGrow();
      }
      toast('A message reported as not sent was delivered after all', '', { code: 'late_delivery' });
    }
  }

  // ---------------------------------------------------------------- sending
  function sendFrame(obj) {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(obj));
    return true;
  }

  function sendText(roomName, text) {
    const cid = state.cidPrefix + (++state.cidCounter);
    const frame = { type: 'message', room: roomName, text, client_id: cid };
    if (encoder.encode(JSON.stringify(frame)).length > MAX_FRAME_BYTES) {
      toast('Message too long — it was not sent', 'Shorten it and try again.', { code: 'too_big' });
      return false;
    }
    const p = { cid, room: roomName, text, state: 'queued', epoch: -1, reason: '' };
    state.pending.set(cid, p);
    const room = state.rooms.get(roomName);
    if (room && room.wanted && state.conn === 'open' && sendFrame(frame)) {
      p.state = 'sent';
      p.epoch = state.epoch;
    }
    if (state.active === roomName) {
      renderPending();
      updateEmptyState();
      scrollToBottom();
    }
    return true;
  }

  function flushQueued() {
    for (const p of state.pending.values()) {
      if (p.state !== 'queued') continue;
      const room = state.rooms.get(p.room);
      if (!room || !room.wanted) continue;
      if (sendFrame({ type: 'message', room: p.room, text: p.text, client_id: p.cid })) {
        p.state = 'sent';
        p.epoch = state.epoch;
      }
    }
    if (state.active) renderPending();
  }

  function onSend() {
    const room = activeRoom();
    if (!room) { toast('Join a room first', '', { code: 'no_room' }); return; }
    const text = ui.message.value;
    if (!text.trim()) { ui.message.focus(); return; }
    if (sendText(room.name, text)) {
      ui.message.value = '';
      autoGrow();
    }
    ui.message.focus();
  }

  function autoGrow() {
    // CSSOM writes are allowed by the CSP (only style attributes in markup are not).
    const t = ui.message;
    t.style.height = 'auto';
    t.style.height = Math.min(t.scrollHeight + 2, 180) + 'px';
  }

  // ---------------------------------------------------------------- joining
  function currentName() {
    return state.user !== null ? state.user : ui.username.value.trim();
  }

  function lockName() {
    ui.username.readOnly = true;
    ui.username.classList.add('locked');
    ui.username.title = 'Your name is fixed once you have joined a room';
  }

  function maybeUnlockName() {
    const anyJoined = [...state.rooms.values()].some((r) => r.wanted || r.everJoined);
    if (!anyJoined && state.user === null) {
      ui.username.readOnly = false;
      ui.username.classList.remove('locked');
      ui.username.removeAttribute('title');
    }
  }

  function joinRoom(name) {
    const roomName = String(name).trim();
    const user = currentName();
    if (!validUser(user)) {
      toast(user ? 'Names are 1–32 characters without control characters' : 'Pick a name first', '', { code: 'name' });
      ui.username.focus();
      return false;
    }
    if (!ROOM_RE.test(roomName)) {
      toast(roomName ? ERROR_TEXT.invalid_room : 'Type a room name to join', '', { code: 'invalid_room' });
      ui.room.focus();
      return false;
    }
    if (state.user === null) {
      ui.username.value = user;
      lsSet(LS_USER, user);
    }
    lockName();
    const room = ensureRoom(roomName);
    if (!room.wanted) {
      room.wanted = true;
      if (state.conn === 'open') sendJoin(room);
    }
    activate(room.name);
    return true;
  }

  function sendJoin(room) {
    const frame = { type: 'join', room: room.name, user: currentName() };
    if (room.everJoined) frame.since = room.lastId || '0-0';
    if (sendFrame(frame)) state.joinQueue.push(room.name);
  }

  function onJoinClick() {
    const name = ui.room.value.trim();
    if (joinRoom(name)) {
      ui.room.value = '';
      ui.message.focus();
    }
  }

  function onRoomClick(ev) {
    const li = ev.target.closest('[data-room]');
    if (!li || !ui.rooms.contains(li)) return;
    const room = state.rooms.get(li.dataset.room);
    if (!room) return;
    if (room.wanted) activate(room.name);
    else joinRoom(room.name);
  }

  // ---------------------------------------------------------------- incoming frames
  function handleFrame(raw) {
    let f;
    try { f = JSON.parse(raw); } catch (e) { return; }
    if (!f || typeof f !== 'object') return;
    switch (f.type) {
      case 'joined': onJoined(f); break;
      case 'message': onMessage(f); break;
      case 'room_created':
        if (typeof f.room === 'string') ensureRoom(f.room, f.ts);
        break;
      case 'user_joined': onMemberEvent(f, true); break;
      case 'user_left': onMemberEvent(f, false); break;
      case 'left': break; // handled when the user clicked Leave
      case 'pong': break;
      case 'error': onError(f); break;
      default: break;
    }
  }

  function onJoined(f) {
    const name = f.room;
    if (typeof name !== 'string') return;
    const qi = state.joinQueue.indexOf(name);
    if (qi >= 0) state.joinQueue.splice(qi, 1);
    const room = ensureRoom(name);
    if (!room.wanted) return; // left meanwhile; the server gets our `leave` next
    const rejoin = room.everJoined;
    if (typeof f.user === 'string' && f.user) {
      state.user = f.user;
      ui.username.value = f.user;
      lsSet(LS_USER, f.user);
      lockName();
    }
    room.everJoined = true;
    room.joinedEpoch = state.epoch;
    setMembers(room, f.members);
    if (f.gap) addNotice(room, 'Some older messages were trimmed — a part of the history is missing here', 'gap', Date.now());
    const history = Array.isArray(f.history) ? f.history : [];
    const isActive = state.active === room.name;
    if (!rejoin) {
      addMessages(room, history, { live: true, countUnread: false, forceBottom: true });
      if (!history.length) room.hasMore = false;
      addNotice(room, 'You joined #' + room.name, 'self', Date.now());
      if (isActive) scrollToBottom();
    } else {
      addMessages(room, history, { live: true, countUnread: true });
      // Messages sent on an earlier socket that the server never stored: give them back.
      for (const p of state.pending.values()) {
        if (p.room === room.name && p.state === 'sent' && p.epoch !== state.epoch) {
          failPending(p, 'the connection dropped before the server confirmed it');
        }
      }
    }
    flushQueued();
    if (isActive) {
      renderMembers();
      renderPending();
      updateEmptyState();
      updateLoadOlder();
      maybeProbeOlder(room);
    }
    updateRoomEntry(room);
  }

  function onMessage(f) {
    const room = state.rooms.get(f.room);
    if (!room || !room.wanted) return;
    resolvePending(f);
    addMessages(room, [f], { live: true, countUnread: true, animate: true });
    if (state.active === room.name) updateEmptyState();
  }

  function onMemberEvent(f, joined) {
    const room = state.rooms.get(f.room);
    if (!room || !room.wanted || typeof f.user !== 'string') return;
    const changed = joined ? memberJoined(room, f.user) : memberLeft(room, f.user);
    if (!changed) return;
    addNotice(room, f.user + (joined ? ' joined' : ' left'), joined ? 'join' : 'leave', f.ts);
    if (state.active === room.name) {
      renderMembers();
      updateEmptyState();
    }
  }

  function onError(f) {
    const code = typeof f.code === 'string' ? f.code : 'error';
    const serverMsg = typeof f.message === 'string' ? f.message : '';
    let title = ERROR_TEXT[code] || serverMsg || 'Error: ' + code;
    const p = typeof f.ref === 'string' ? state.pending.get(f.ref) : null;
    if (p) {
      if (code === 'invalid_text') title = 'Message not sent: it is empty, too long or has invalid characters';
      failPending(p, ERROR_TEXT[code] ? title : (serverMsg || code));
      const restored = !state.pending.has(p.cid);
      toast(title, restored ? joinDetail(serverMsg, 'Your text is back in the message box.') : serverMsg, { code });
      return;
    }
    if (f.ref === 'join') {
      const name = state.joinQueue.shift();
      const room = name ? state.rooms.get(name) : null;
      if (room) {
        if (code === 'unavailable') {
          title = 'Server storage unavailable — could not join #' + room.name + ', retrying';
          const epoch = state.epoch;
          setTimeout(() => {
            if (state.epoch === epoch && state.conn === 'open' && room.wanted && room.joinedEpoch !== epoch) sendJoin(room);
          }, 3000);
        } else if (!room.everJoined) {
          room.wanted = false;
          updateRoomEntry(room);
          if (state.active === room.name) {
            const next = [...state.rooms.values()].find((r) => r.wanted);
            activate(next ? next.name : null);
          }
          maybeUnlockName();
          if (code === 'invalid_user') ui.username.focus();
          title = (ERROR_TEXT[code] || 'Could not join') + ' (#' + room.name + ')';
        }
      }
    }
    toast(title, serverMsg, { code });
  }

  function joinDetail(a, b) { return a ? a.replace(/[.!\s]*$/u, '') + '. ' + b : b; }

  // ---------------------------------------------------------------- connection
  function setStatus(conn, note) {
    state.conn = conn;
    ui.status.dataset.state = conn;
    let text;
    if (conn === 'open') text = 'Connected';
    else if (conn === 'connecting') text = state.epoch > 1 ? 'Reconnecting…' : 'Connecting…';
    else {
      const secs = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
      text = 'Disconnected' + (note ? ': ' + note : '') + (state.retryTimer ? ' — retrying in ' + secs + ' s' : '');
    }
    ui.statusText.textContent = text;
    ui.status.title = text;
    ui.reconnect.hidden = conn !== 'closed';
  }

  function connect() {
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    clearInterval(state.countdownTimer);
    state.countdownTimer = null;
    if (state.ws) return;
    state.epoch += 1;
    state.joinQueue = [];
    setStatus('connecting');
    let ws;
    try {
      ws = new WebSocket(WS_URL);
    } catch (e) {
      onClosed(1006);
      return;
    }
    state.ws = ws;
    ws.addEventListener('open', () => { if (state.ws === ws) onOpen(); });
    ws.addEventListener('message', (ev) => {
      if (state.ws !== ws) return;
      state.lastRecv = Date.now();
      handleFrame(ev.data);
    });
    ws.addEventListener('close', (ev) => { if (state.ws === ws) { state.ws = null; onClosed(ev.code); } });
    ws.addEventListener('error', () => { /* a close event follows */ });
  }

  function onOpen() {
    state.openedAt = Date.now();
    state.lastRecv = Date.now();
    state.closeNote = '';
    setStatus('open');
    // Rejoin every room (active one first), with `since` where we already have history.
    const rooms = [...state.rooms.values()].filter((r) => r.wanted);
    rooms.sort((a, b) => (a.name === state.active ? -1 : 0) - (b.name === state.active ? -1 : 0));
    for (const r of rooms) sendJoin(r);
    flushQueued();
    clearInterval(state.pingTimer);
    state.pingTimer = setInterval(heartbeat, PING_EVERY_MS);
    loadRooms();
  }

  function heartbeat() {
    if (state.conn !== 'open' || !state.ws) return;
    if (Date.now() - state.lastRecv > STALE_AFTER_MS) {
      dropSocket();
      return;
    }
    sendFrame({ type: 'ping' });
  }

  function dropSocket() {
    const ws = state.ws;
    state.ws = null;
    try { if (ws) ws.close(4000, 'no response'); } catch (e) { /* ignore */ }
    onClosed(4000);
  }

  function onClosed(code) {
    clearInterval(state.pingTimer);
    state.pingTimer = null;
    state.joinQueue = [];
    const wasOpenFor = state.openedAt ? Date.now() - state.openedAt : 0;
    if (wasOpenFor > STABLE_AFTER_MS) state.attempt = 0;
    state.openedAt = 0;
    state.closeNote = CLOSE_TEXT[code] || (code ? 'closed (' + code + ')' : 'connection lost');
    if (code === 1009) toast('The server closed the connection: a message was too big (1009)', 'Reconnecting…', { code: 'closed' });
    else if (code === 1013) toast('The server dropped this connection as too slow (1013)', 'Reconnecting…', { code: 'closed' });
    const base = Math.min(BACKOFF_CAP_MS, BACKOFF_START_MS * 2 ** state.attempt);
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    state.attempt = Math.min(state.attempt + 1, 10);
    state.retryAt = Date.now() + delay;
    state.retryTimer = setTimeout(connect, delay);
    setStatus('closed', state.closeNote);
    clearInterval(state.countdownTimer);
    state.countdownTimer = setInterval(() => {
      if (state.conn === 'closed') setStatus('closed', state.closeNote);
    }, 1000);
  }

  function reconnectNow() {
    if (state.conn !== 'closed') return;
    state.attempt = 0;
    connect();
  }

  // ---------------------------------------------------------------- toasts
  function toast(title, detail, opts) {
    const code = (opts && opts.code) || 'info';
    const last = ui.errors.lastElementChild;
    if (last && !last.classList.contains('leaving') && last.dataset.title === title) {
      // Same error again (e.g. a burst of rate_limited): bump a counter instead of stacking.
      const n = Number(last.dataset.count || '1') + 1;
      last.dataset.count = String(n);
      last.querySelector('.toast-count').textContent = '×' + n;
      clearTimeout(last._timer);
      last._timer = setTimeout(() => dismissToast(last), TOAST_MS);
      return;
    }
    const t = el('div', 'toast');
    t.setAttribute('role', 'alert');
    t.dataset.code = code;
    t.dataset.title = title;
    const body = el('div', 'toast-body');
    const head = el('div', 'toast-title');
    head.append(document.createTextNode(title), el('span', 'toast-count'));
    body.append(head);
    if (detail && detail !== title) body.append(el('div', 'toast-detail', detail));
    const close = button('toast-close', '×', () => dismissToast(t));
    close.setAttribute('aria-label', 'Dismiss');
    t.append(body, close);
    ui.errors.append(t);
    while (ui.errors.children.length > MAX_TOASTS) ui.errors.firstElementChild.remove();
    t._timer = setTimeout(() => dismissToast(t), TOAST_MS);
  }

  function dismissToast(t) {
    if (!t.isConnected || t.classList.contains('leaving')) return;
    clearTimeout(t._timer);
    t.classList.add('leaving');
    setTimeout(() => t.remove(), 250);
  }

  // ---------------------------------------------------------------- wiring
  function init() {
    for (const id of ['username', 'room', 'join', 'message', 'send', 'messages', 'rooms', 'members',
      'status', 'errors', 'scroller', 'pending', 'leave', 'reconnect']) ui[id] = $(id);
    ui.loadOlder = $('load-older');
    ui.jumpLatest = $('jump-latest');
    ui.emptyState = $('empty-state');
    ui.roomsEmpty = $('rooms-empty');
    ui.roomTitle = $('room-title');
    ui.roomSubtitle = $('room-subtitle');
    ui.memberCount = $('member-count');
    ui.statusText = $('status-text');

    const savedName = lsGet(LS_USER);
    if (savedName && !ui.username.value) ui.username.value = savedName;

    ui.join.addEventListener('click', onJoinClick);
    ui.room.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.isComposing) { ev.preventDefault(); onJoinClick(); }
    });
    ui.username.addEventListener('keydown', (ev) => {
      if (ev.key !== 'Enter' || ev.isComposing) return;
      ev.preventDefault();
      if (ui.room.value.trim()) onJoinClick();
      else ui.room.focus();
    });
    ui.username.addEventListener('change', () => {
      if (!ui.username.readOnly && validUser(ui.username.value)) lsSet(LS_USER, ui.username.value.trim());
    });
    ui.rooms.addEventListener('click', onRoomClick);
    ui.send.addEventListener('click', onSend);
    ui.message.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
        ev.preventDefault();
        onSend();
      }
    });
    ui.message.addEventListener('input', autoGrow);
    ui.loadOlder.addEventListener('click', loadOlder);
    ui.leave.addEventListener('click', leaveActive);
    ui.reconnect.addEventListener('click', reconnectNow);
    ui.jumpLatest.addEventListener('click', scrollToBottom);
    ui.scroller.addEventListener('scroll', () => {
      const room = activeRoom();
      const bottom = atBottom();
      if (room) room.stick = bottom;
      if (bottom) ui.jumpLatest.hidden = true;
    }, { passive: true });
    window.addEventListener('online', reconnectNow);

    updateRoomsEmpty();
    activate(null);
    loadRooms();
    connect();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
