// quart_chat browser client. Plain ES2020, no build step, no inline code (strict CSP).
// Every user-supplied string is rendered with textContent / text nodes only.
'use strict';

(() => {
  // ---------------------------------------------------------------- constants
  const MAX_FRAME_BYTES = 16384;        // CHAT_MAX_FRAME default; bigger frames close the socket (1009)
  const PING_EVERY_MS = 25000;
  const STALE_AFTER_MS = 65000;         // nothing received for this long -> drop and reconnect
  const BACKOFF_START_MS = 500;
  const BACKOFF_CAP_MS = 10000;
  const STABLE_AFTER_MS = 5000;         // a connection open this long resets the backoff
  const HISTORY_PAGE = 50;
  const ROOMS_PAGE = 1000;              // GET /rooms?limit= (the server's maximum)
  const ROOMS_MAX_PAGES = 1000;         // a bound on one pass over the paged room list
  const TOAST_MS = 5000;
  const UNCONFIRMED_MS = 15000;         // a message sent this long ago with no ack: offer Retry
  const MAX_TOASTS = 3;
  const COUNTER_FROM = 0.8;             // the message box shows its length from 80% of the limit on
  const SR_LOG_KEEP = 20;               // lines kept in the screen reader's message announcer
  const BURST_SAID_ALONE = 3;           // more new messages at once are said as a count
  const AVATAR_COLORS = 10;
  const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
  const ID_RE = /^\d{1,20}-\d{1,20}$/;
  const CONTROL_RE = /\p{Cc}/u;
  const LS_USER = 'quart_chat.username';
  const SESSION_KEY = 'quart_chat.session';   // sessionStorage (this tab) and localStorage (a new tab)
  const TOKEN_KEY = 'quart_chat.token';       // sessionStorage: token mode (PROTOCOL.md section 9)

  const ERROR_TEXT = {
    rate_limited: "You're sending too fast — slow down",
    invalid_text: 'Message not sent: it is empty or too long',
    unavailable: 'Server storage unavailable — your message was not sent',
    not_joined: "You're not in that room",
    invalid_room: 'Invalid room name — use 1–64 letters, digits, _ or -',
    invalid_user: 'Invalid name — 1–32 characters, no control characters, and it cannot change after your first join',
    limit_exceeded: 'This server has reached its room limit — join an existing room',
    forbidden: 'You are not allowed in that room',
    bad_json: 'The server could not read a request',
    bad_request: 'The server rejected a malformed request',
    unknown_type: 'The server did not understand a request',
  };

  // Short reasons shown on a refused message in the pending list.
  const REFUSED_TEXT = {
    rate_limited: 'sent too fast',
    invalid_text: 'empty, too long or with invalid characters',
    unavailable: 'server storage unavailable',
    not_joined: 'not in this room',
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
    token: null,              // token mode: the JWT this tab connects with
    tokenName: null,          // ... and the name it carries
    tokenRooms: null,         // ... and the room patterns it allows (null: every room)
    expired: false,           // the server refused the token (expired): no more retries
    rooms: new Map(),         // name -> Room
    roomOrder: [],            // the Room objects in #rooms order (sorted by name)
    active: null,             // active room name
    joinQueue: [],            // room names whose join awaits a reply on the current socket (in order)
    // Own messages not confirmed yet: client_id -> {cid, room, text, state, epoch, reason}.
    // state: queued (waiting for a joined socket), sent (in flight), failed (refused: Retry/Edit/Discard).
    // A message keeps its client_id until it is confirmed or dropped by the user: resending
    // it is safe (PROTOCOL.md G8), so it is never shown twice.
    pending: new Map(),
    retired: new Map(),       // client_id -> text of messages the user edited away or discarded
    cidPrefix: 'c-' + Math.random().toString(36).slice(2, 8) + Date.now().toString(36).slice(-4) + '-',
    cidCounter: 0,
    roomsLoaded: false,
    roomsLoading: false,
    roomsAgain: false,
    roomsGen: 0,
    filter: '',               // what the room field holds, lower case: #rooms shows the rooms containing it
    maxText: 2000,            // CHAT_MAX_TEXT, from the page (data-max-text on #message)
    connSaid: '',             // the connection state last said to a screen reader: '', 'open', 'lost'
    overSaid: false,          // "over the limit" was said for the text in the box
    saveTimer: null,
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

  const DATE_OPTS = { weekday: 'short', day: 'numeric', month: 'short', year: 'numeric' };

  // The day and the time, in the reader's locale ("Mon 30 Nov 2026, 14:02" in en-GB): the
  // title of every time element, whose datetime holds the exact ISO time.
  function fullTime(ts) {
    const d = new Date(Number(ts));
    return Number.isNaN(d.getTime()) ? '' : d.toLocaleDateString(undefined, DATE_OPTS) + ', ' + hhmm(ts);
  }

  // The local calendar day of a time, YYYY-MM-DD ('' when unknown).
  function dayKey(ts) {
    const d = new Date(Number(ts));
    if (!Number(ts) || Number.isNaN(d.getTime())) return '';
    return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate());
  }

  // "Today", "Yesterday", else the date ("Mon 30 Nov 2026" in en-GB).
  function dayLabel(key) {
    const [y, m, d] = key.split('-').map(Number);
    const day = new Date(y, m - 1, d);
    const today = new Date();
    today.setHours(0, 0, 0, 0);
    const back = Math.round((today.getTime() - day.getTime()) / 86400000);
    if (back === 0) return 'Today';
    if (back === 1) return 'Yesterday';
    return day.toLocaleDateString(undefined, DATE_OPTS);
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
    const t = String(name || '').trim();
    const n = codePoints(t);
    return n >= 1 && n <= 32 && !CONTROL_RE.test(t);
  }

  function lsGet(key) { try { return localStorage.getItem(key); } catch (e) { return null; } }
  function lsSet(key, v) { try { localStorage.setItem(key, v); } catch (e) { /* private mode */ } }
  function ssGet(key) { try { return sessionStorage.getItem(key); } catch (e) { return null; } }
  function ssSet(key, v) { try { sessionStorage.setItem(key, v); } catch (e) { /* private mode */ } }

  const encoder = new TextEncoder();

  function plural(n, one, many) { return n + ' ' + (n === 1 ? one : many); }

  // ---------------------------------------------------------------- token mode (section 9)
  // The page reads its token's claims only to show them; the server checks the signature.
  function decodeJwtClaims(token) {
    try {
      const part = token.split('.')[1];
      const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
      const bin = atob(b64 + '==='.slice((b64.length + 3) % 4));
      const json = new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
      const claims = JSON.parse(json);
      return claims && typeof claims === 'object' ? claims : null;
    } catch (e) {
      return null;
    }
  }

  function decodeJwtName(token) {
    const claims = decodeJwtClaims(token);
    return claims && typeof claims.name === 'string' && validUser(claims.name) ? claims.name.trim() : null;
  }

  // `rooms`: names or patterns where `*` is any run of characters (nothing else is special).
  function decodeJwtRooms(token) {
    const claims = decodeJwtClaims(token);
    if (!claims || !Array.isArray(claims.rooms)) return null;
    return claims.rooms.filter((p) => typeof p === 'string').map((p) =>
      new RegExp('^' + p.split('*').map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$'));
  }

  // Rooms the token does not allow are not listed (the server refuses them anyway).
  function tokenAllows(name) {
    return !state.tokenRooms || state.tokenRooms.some((re) => re.test(name));
  }

  // The server refused the token (it expired, or was never valid): retrying cannot help.
  const EXPIRED_TEXT = 'Your session has expired — get a new link';

  function sessionExpired() {
    if (state.expired) return;
    state.expired = true;
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    clearInterval(state.countdownTimer);
    state.countdownTimer = null;
    const ws = state.ws;
    state.ws = null;
    try { if (ws) ws.close(); } catch (e) { /* ignore */ }
    setStatus('closed', EXPIRED_TEXT);
    clearToasts('conn');
    // In #errors (aria-live="assertive"): said once; no timer, no close button, never pruned.
    const note = el('div', 'toast', null);
    note.id = 'session-expired';
    note.dataset.code = 'expired';
    const body = el('div', 'toast-body');
    body.append(el('span', 'toast-title', EXPIRED_TEXT),
      el('span', 'toast-detail', 'Ask the site that sent you here for a new chat link, then open it.'));
    note.append(body);
    ui.errors.append(note);   // stays: no timer, no close button
  }

  // In token mode a WebSocket that never opened may have been refused with 401, which the
  // page cannot see: a REST call with the same token tells (apiFetch notices the 401).
  function probeToken() {
    apiFetch('/rooms?limit=1').catch(() => { /* offline: the retries go on */ });
  }

  function readToken() {
    const m = /(?:^#|&)token=([^&]+)/.exec(location.hash || '');
    if (m) {
      let t = m[1];
      try { t = decodeURIComponent(t); } catch (e) { /* keep it raw */ }
      ssSet(TOKEN_KEY, t);
      // Keep the token out of the address bar, the history and any copied link.
      try { history.replaceState(null, '', location.pathname + location.search); } catch (e) { /* ignore */ }
      return t;
    }
    return ssGet(TOKEN_KEY);
  }

  function wsUrl() {
    const base = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    return state.token ? base + '?token=' + encodeURIComponent(state.token) : base;
  }

  function apiFetch(url) {
    const headers = { Accept: 'application/json' };
    if (state.token) headers.Authorization = 'Bearer ' + state.token;
    return fetch(url, { cache: 'no-store', headers }).then((r) => {
      if (r.status === 401 && state.token) sessionExpired();
      return r;
    });
  }

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
      sortKey: name.toLowerCase(),
      created: Number(created) || 0,
      known: false,           // the server listed or announced it (else: typed here, maybe not created)
      seenGen: 0,             // last pass over GET /rooms (or room_created) that saw it
      wanted: false,          // the user wants to be in this room (joined or joining)
      everJoined: false,      // a `joined` arrived at least once on this page (so rejoin uses `since`)
      restored: false,        // joined again after a reload: the first `joined` continues a session
      joinedEpoch: -1,        // socket epoch of the last `joined`
      entries: [],            // {kind:'message', id, key, msg, el, local?} | {kind:'notice', text, cls, el}
      ids: new Set(),
      lastId: null,           // the newest id received from the server's ordered stream
      unread: 0,
      members: new Set(),     // user names (the server counts tabs: one name, one entry)
      hasMore: null,          // older history available? null = unknown
      loadingOlder: false,
      probing: false,
      stick: true,
      scrollTop: 0,
      li,
      unreadEl: unread,
      shownState: '',
    };
  }

  function cmpRooms(a, b) {
    if (a.sortKey !== b.sortKey) return a.sortKey < b.sortKey ? -1 : 1;
    if (a.name !== b.name) return a.name < b.name ? -1 : 1;
    return 0;
  }

  // Index of the first room in state.roomOrder not before `room` (binary search).
  function orderIndex(room) {
    const order = state.roomOrder;
    let lo = 0;
    let hi = order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cmpRooms(order[mid], room) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
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

  function filteredOut(room) {
    return state.filter !== '' && !room.sortKey.includes(state.filter);
  }

  // Typing in the room field narrows the list (the entries stay in #rooms, hidden).
  function applyRoomFilter() {
    const q = ui.room.value.trim().toLowerCase();
    if (q === state.filter) return;
    state.filter = q;
    for (const room of state.roomOrder) {
      const hide = filteredOut(room);
      if (room.li.hidden !== hide) room.li.hidden = hide;
    }
    updateRoomsEmpty();
  }

  function insertRoomEntry(room) {
    room.li.hidden = filteredOut(room);
    const i = orderIndex(room);
    const next = state.roomOrder[i];
    state.roomOrder.splice(i, 0, room);
    ui.rooms.insertBefore(room.li, next ? next.li : null);
    updateRoomEntry(room);
  }

  // Many rooms at once (a page of GET /rooms): one sort and one pass over the DOM, built in a
  // DocumentFragment, instead of a search and an insertion per room.
  function addRoomsBatch(items, gen) {
    const fresh = [];
    for (const item of items) {
      if (!item || typeof item.name !== 'string' || !ROOM_RE.test(item.name) || !tokenAllows(item.name)) continue;
      let room = state.rooms.get(item.name);
      if (!room) {
        room = newRoom(item.name, item.created);
        state.rooms.set(item.name, room);
        fresh.push(room);
      } else if (item.created && !room.created) {
        room.created = Number(item.created) || 0;
      }
      room.known = true;
      room.seenGen = gen;
    }
    if (!fresh.length) return;
    if (fresh.length < 16) {
      for (const room of fresh) insertRoomEntry(room);
    } else {
      fresh.sort(cmpRooms);
      const old = state.roomOrder;
      const merged = new Array(old.length + fresh.length);
      let i = 0;
      let j = 0;
      let k = 0;
      while (i < old.length && j < fresh.length) merged[k++] = cmpRooms(old[i], fresh[j]) <= 0 ? old[i++] : fresh[j++];
      while (i < old.length) merged[k++] = old[i++];
      while (j < fresh.length) merged[k++] = fresh[j++];
      state.roomOrder = merged;
      for (const room of fresh) {
        room.li.hidden = filteredOut(room);
        updateRoomEntry(room);
      }
      const frag = document.createDocumentFragment();
      for (const room of merged) frag.appendChild(room.li);
      ui.rooms.appendChild(frag);
    }
    updateRoomsEmpty();
  }

  function removeRoom(name) {
    const room = state.rooms.get(name);
    if (!room || room.wanted || state.active === name) return false;
    state.rooms.delete(name);
    const i = orderIndex(room);
    if (state.roomOrder[i] === room) state.roomOrder.splice(i, 1);
    else {
      const j = state.roomOrder.indexOf(room);
      if (j >= 0) state.roomOrder.splice(j, 1);
    }
    room.li.remove();
    updateRoomsEmpty();
    return true;
  }

  function updateRoomEntry(room) {
    const li = room.li;
    const isActive = state.active === room.name;
    const showUnread = room.unread > 0 && !isActive;
    const key = (room.wanted ? 'w' : '') + (isActive ? 'a' : '') + (showUnread ? room.unread : '');
    if (key === room.shownState) return;
    room.shownState = key;
    li.classList.toggle('joined', room.wanted);
    li.classList.toggle('active', isActive);
    const btn = li.firstElementChild;
    if (isActive) btn.setAttribute('aria-current', 'true');
    else btn.removeAttribute('aria-current');
    if (showUnread) {
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
    const n = state.rooms.size;
    ui.roomCount.textContent = n ? n.toLocaleString('en') : '';
    if (n > 0 && state.filter !== '') {
      let shown = 0;
      for (const room of state.roomOrder) if (!room.li.hidden) { shown = 1; break; }
      ui.roomsEmpty.hidden = shown > 0;
      ui.roomsEmpty.textContent = ROOM_RE.test(ui.room.value.trim())
        ? 'No room matches — press Join to create #' + ui.room.value.trim()
        : 'No room matches';
    } else if (n > 0) ui.roomsEmpty.hidden = true;
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

  // Every page of GET /rooms, following `next` until it is null. A pass that completes also
  // drops the rooms it no longer lists (removed while this page was not connected).
  async function loadRooms() {
    if (state.roomsLoading) { state.roomsAgain = true; return; }
    state.roomsLoading = true;
    try {
      let restarts = 0;
      for (;;) {
        const gen = ++state.roomsGen;
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
        for (const room of [...state.rooms.values()]) {
          if (room.known && room.seenGen < gen && !room.wanted) removeRoom(room.name);
        }
        state.roomsLoaded = true;
        updateRoomsEmpty();
        break;
      }
    } catch (e) {
      if (!state.roomsLoaded) {
        ui.roomsEmpty.hidden = state.rooms.size > 0;
        ui.roomsEmpty.textContent = 'Could not load the room list — it will retry when connected.';
      }
    } finally {
      state.roomsLoading = false;
      if (state.roomsAgain) {
        state.roomsAgain = false;
        loadRooms();
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
    root.dataset.day = dayKey(msg.ts);
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
    n.dataset.day = dayKey(entry.ts);
    n.append(el('span', 'notice-text', entry.text));
    if (entry.ts) {
      const t = el('time', 'time', hhmm(entry.ts));
      const d = new Date(Number(entry.ts));
      if (!Number.isNaN(d.getTime())) t.dateTime = d.toISOString();
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

  // A separator before the first entry of each day in #messages ("Today", "Yesterday",
  // "Mon 30 Nov 2026"). Separators are the view's alone (not in room.entries): this walks the
  // active room's elements, keeps the separators still in place and adds or drops the rest.
  function syncDays() {
    const keep = new Set();
    let prev = '';
    for (const node of [...ui.messages.children]) {
      if (node.classList.contains('day-sep')) continue;
      const day = node.dataset.day;
      if (!day || day === prev) continue;
      prev = day;
      const before = node.previousElementSibling;
      let sep = before && before.classList.contains('day-sep') && before.dataset.day === day && !keep.has(before) ? before : null;
      if (!sep) {
        sep = el('div', 'day-sep');
        sep.dataset.day = day;
        const t = el('time', 'day-sep-label');
        t.dateTime = day;
        sep.append(t);
        ui.messages.insertBefore(sep, node);
      }
      keep.add(sep);
      const label = dayLabel(day);
      if (sep.firstElementChild.textContent !== label) sep.firstElementChild.textContent = label;
    }
    for (const sep of ui.messages.querySelectorAll(':scope > .day-sep')) if (!keep.has(sep)) sep.remove();
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
  // opts.local: built here from an `ack` (the server's `message` may follow, or, for a
  // resend G8 recognised, never come); opts.rest: from GET history. Neither moves lastId,
  // which only follows the server's ordered stream (it is the `since` of the next join).
  function addMessage(room, msg, opts) {
    if (!msg || typeof msg.id !== 'string' || !ID_RE.test(msg.id)) return false;
    const key = parseId(msg.id);
    const fromStream = !opts.local && !opts.rest;
    if (fromStream && (room.lastId === null || cmpKey(parseId(room.lastId), key) < 0)) {
      room.lastId = msg.id;
      scheduleSave();
    }
    if (room.ids.has(msg.id)) {
      if (!opts.local) replaceLocal(room, msg);
      return false;
    }
    room.ids.add(msg.id);
    const entry = { kind: 'message', id: msg.id, key, msg, el: null, local: !!opts.local };
    const idx = positionFor(room, key);
    room.entries.splice(idx, 0, entry);
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

  // The server's copy of a message first shown from its ack: take its fields (ts, text as stored).
  function replaceLocal(room, msg) {
    for (let i = room.entries.length - 1; i >= 0; i--) {
      const e = room.entries[i];
      if (e.kind !== 'message' || e.id !== msg.id) continue;
      if (!e.local) return;
      e.local = false;
      e.msg = msg;
      if (e.el) {
        const old = e.el;
        e.el = null;
        const node = entryEl(e);
        if (old.parentNode) {
          old.replaceWith(node);
          syncDays();
        }
      }
      updateGrouping(room, i);
      updateGrouping(room, i + 1);
      return;
    }
  }

  // Consecutive messages of one sender within a few minutes form a group: the repeated avatar
  // and name are hidden visually (the .user element stays, with the name, for every message).
  const GROUP_MS = 5 * 60 * 1000;

  function updateGrouping(room, i) {
    const e = room.entries[i];
    if (!e || e.kind !== 'message') return;
    const prev = room.entries[i - 1];
    e.cont = !!prev && prev.kind === 'message' && prev.msg.user === e.msg.user &&
      Math.abs(Number(e.msg.ts) - Number(prev.msg.ts)) < GROUP_MS && dayKey(e.msg.ts) === dayKey(prev.msg.ts);
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
      syncDays();
      if (stick) scrollToBottom();
    }
  }

  // Batch insert with the active room's scroll behaviour handled once.
  function addMessages(room, list, opts) {
    const isActive = state.active === room.name;
    const stick = isActive && (atBottom() || opts.forceBottom);
    let added = 0;
    let mineAdded = false;
    const heard = [];
    for (const m of list) {
      if (addMessage(room, m, opts)) {
        added++;
        if (isMine(m)) mineAdded = true;
        else if (opts.announce) heard.push(m);
      }
    }
    if (isActive && heard.length) announceMessages(room, heard);
    if (isActive && added) {
      syncDays();
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

  function messageCount(room) {
    let n = 0;
    for (const e of room.entries) if (e.kind === 'message') n++;
    return n;
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
      ? (room.everJoined ? plural(names.length, 'member', 'members') : 'Joining…')
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
    if (room) room.unread = 0;
    if (prev) updateRoomEntry(prev);
    if (room) {
      updateRoomEntry(room);
      // Keep the active entry in sight in a long list.
      if (typeof room.li.scrollIntoView === 'function') room.li.scrollIntoView({ block: 'nearest' });
    }
    ui.roomTitle.textContent = room ? '#' + room.name : 'quart_chat';
    ui.leave.hidden = !room;
    const nodes = room ? room.entries.map(entryEl) : [];
    for (const n of nodes) n.classList.remove('enter');
    ui.messages.replaceChildren(...nodes);
    syncDays();
    ui.messages.setAttribute('aria-label', room ? 'Messages in #' + room.name : 'Messages');
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
    scheduleSave();
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
    ui.message.disabled = !room;
    // Until the first `joined` of a room nothing can be sent to it: the text stays in the box.
    ui.send.disabled = !room || !room.everJoined;
    ui.message.placeholder = !room ? 'Join a room to start chatting'
      : room.everJoined ? 'Message #' + room.name : 'Joining #' + room.name + '…';
    ui.message.title = room ? 'Enter sends, Shift+Enter starts a new line' : '';
  }

  function updateLoadOlder() {
    const room = activeRoom();
    const show = !!room && room.hasMore !== false && firstMessageId(room) !== null;
    ui.loadOlder.hidden = !show;
    ui.loadOlder.disabled = !!room && room.loadingOlder;
    ui.loadOlder.textContent = room && room.loadingOlder ? 'Loading…' : 'Load older messages';
  }

  // Forget what the page holds of a room (a leave, or a refused join).
  function resetRoom(room) {
    room.wanted = false;
    room.everJoined = false;
    room.restored = false;
    room.joinedEpoch = -1;
    room.entries = [];
    room.ids = new Set();
    room.lastId = null;
    room.unread = 0;
    room.members = new Set();
    room.hasMore = null;
    room.stick = true;
  }

  function leaveActive() {
    const room = activeRoom();
    if (!room) return;
    const qi = state.joinQueue.indexOf(room.name);
    if (qi >= 0) state.joinQueue.splice(qi, 1);
    resetRoom(room);
    for (const [cid, p] of state.pending) {
      if (p.room === room.name) { state.pending.delete(cid); retire(p); }
    }
    sendFrame({ type: 'leave', room: room.name });
    const next = firstWanted();
    const hadFocus = keyboardFocusIn(ui.leave);
    activate(next ? next.name : null);
    if (hadFocus && ui.leave.hidden) focusComposer();
    updateRoomEntry(room);
    updateTitle();
    maybeUnlockName();
    scheduleSave();
  }

  function firstWanted() {
    for (const r of state.rooms.values()) if (r.wanted) return r;
    return null;
  }

  // ---------------------------------------------------------------- older history
  function historyUrl(room, before, limit) {
    return '/rooms/' + encodeURIComponent(room.name) + '/history?limit=' + limit +
      (before ? '&before=' + encodeURIComponent(before) : '');
  }

  async function maybeProbeOlder(room) {
    // Learn whether anything precedes the first shown message, so the button only shows when useful.
    if (room.hasMore !== null || room.probing) return;
    const first = firstMessageId(room);
    if (first === null) return;
    room.probing = true;
    try {
      const r = await apiFetch(historyUrl(room, first, 1));
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

  // One page of older history. `auto`: filling the view after a reload (no toast, keep the
  // view at the bottom when it was there); else the user clicked "Load older messages".
  async function loadOlder(roomArg, auto) {
    const room = roomArg && roomArg.name ? roomArg : activeRoom();
    if (!room || room.loadingOlder) return;
    const first = firstMessageId(room);
    if (first === null && !auto) { room.hasMore = false; updateLoadOlder(); return; }
    room.loadingOlder = true;
    if (state.active === room.name) updateLoadOlder();
    try {
      const r = await apiFetch(historyUrl(room, first, HISTORY_PAGE));
      let data = null;
      try { data = await r.json(); } catch (e) { data = null; }
      if (!r.ok) {
        const msg = data && data.error && data.error.message ? data.error.message : 'HTTP ' + r.status;
        throw new Error(msg);
      }
      if (!room.wanted) return;
      const list = data && Array.isArray(data.messages) ? data.messages : [];
      const isActive = state.active === room.name;
      const s = ui.scroller;
      const stick = isActive && atBottom();
      const prevHeight = s.scrollHeight;
      const prevTop = s.scrollTop;
      for (const m of list) {
        if (m && typeof m === 'object' && !m.room) m.room = room.name;
        addMessage(room, m, { live: false, countUnread: false, rest: true });
      }
      room.hasMore = !!(data && data.has_more);
      if (isActive && state.active === room.name) {
        syncDays();
        updateEmptyState();
        if (auto && stick) scrollToBottom();
        else s.scrollTop = prevTop + (s.scrollHeight - prevHeight);
      }
    } catch (e) {
      if (!auto) toast('Could not load older messages', e && e.message, { code: 'history', group: 'history' });
    } finally {
      room.loadingOlder = false;
      if (state.active === room.name) updateLoadOlder();
    }
  }

  // ---------------------------------------------------------------- pending (own unconfirmed or refused)
  function pendingFor(roomName) {
    const out = [];
    for (const p of state.pending.values()) if (p.room === roomName) out.push(p);
    return out;
  }

  // Each pending message keeps one element (an Edit in progress survives other updates);
  // the list is reconciled in place, not rebuilt.
  function renderPending() {
    const room = activeRoom();
    const items = room ? pendingFor(room.name) : [];
    const hadFocus = keyboardFocusIn(ui.pending);
    const failed = items.filter((p) => p.state === 'failed');
    const want = [];
    if (failed.length > 1) want.push(retryAllBar(failed.length));
    for (const p of items) want.push(pendingNode(p));
    let cur = ui.pending.firstChild;
    for (const n of want) {
      if (cur === n) { cur = cur.nextSibling; continue; }
      ui.pending.insertBefore(n, cur);
    }
    while (cur) {
      const nx = cur.nextSibling;
      cur.remove();
      cur = nx;
    }
    if (hadFocus && !ui.pending.contains(document.activeElement)) focusComposer();
  }

  function retryAllBar(n) {
    if (!ui.retryAll) {
      const bar = el('div', 'pending-bar');
      const label = el('span', 'pending-bar-text');
      const actions = el('span', 'pending-actions');
      actions.append(
        button('btn-link retry-all', 'Retry all', () => retryAll()),
        button('btn-link discard-all', 'Discard all', () => discardAll()),
      );
      bar.append(label, actions);
      ui.retryAll = bar;
      ui.retryAllText = label;
    }
    ui.retryAllText.textContent = plural(n, 'message', 'messages') + ' not sent';
    return ui.retryAll;
  }

  function pendingNode(p) {
    const key = p.state + '|' + (p.reason || '') + '|' + (p.editing ? 'e' : '') + (p.unconfirmed ? 'u' : '');
    if (p.node && p.nodeKey === key) return p.node;
    if (!p.node) {
      p.node = el('div', 'pending-item');
      p.node.dataset.clientId = p.cid;
    }
    p.nodeKey = key;
    const item = p.node;
    item.className = 'pending-item ' + p.state + (p.editing ? ' editing' : '');
    const bubble = el('div', 'bubble');
    if (p.editing) {
      const editor = p.editor || (p.editor = makeEditor(p));
      bubble.append(editor.box);
    } else {
      bubble.append(el('div', 'pending-text', p.text));
      const status = el('div', 'pending-status');
      if (p.state === 'failed') {
        status.append(el('span', 'pending-reason', p.unconfirmed ? p.reason : 'Not sent: ' + (p.reason || 'error')));
        const actions = el('span', 'pending-actions');
        actions.append(
          button('btn-link retry', 'Retry', () => retryPending(p.cid)),
          button('btn-link edit', 'Edit', () => editPending(p.cid)),
          button('btn-link discard', 'Discard', () => discardPending(p.cid)),
        );
        status.append(actions);
      } else {
        status.textContent = p.state === 'queued' ? 'Waiting for connection…' : 'Sending…';
      }
      bubble.append(status);
    }
    item.replaceChildren(bubble);
    return item;
  }

  function makeEditor(p) {
    const box = el('div', 'pending-editor');
    const area = el('textarea', 'pending-edit');
    area.rows = 2;
    area.value = p.text;
    area.setAttribute('aria-label', 'Edit the message that was not sent');
    const actions = el('div', 'pending-actions');
    const save = button('btn btn-primary btn-small', 'Send', () => finishEdit(p.cid, true));
    const cancel = button('btn btn-ghost btn-small', 'Cancel', () => finishEdit(p.cid, false));
    actions.append(cancel, save);
    area.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
        ev.preventDefault();
        finishEdit(p.cid, true);
      } else if (ev.key === 'Escape') {
        ev.preventDefault();
        finishEdit(p.cid, false);
      }
    });
    box.append(area, actions);
    return { box, area };
  }

  function refreshPending(roomName) {
    if (state.active === roomName) {
      renderPending();
      updateEmptyState();
    }
    scheduleSave();
  }

  function failPending(p, reason, unconfirmed) {
    p.unconfirmed = !!unconfirmed;
    p.state = 'failed';
    p.reason = reason;
    refreshPending(p.room);
  }

  function newCid() {
    return state.cidPrefix + (++state.cidCounter);
  }

  // Send (or queue) one pending message with its own client_id.
  function trySend(p) {
    const room = state.rooms.get(p.room);
    if (room && room.wanted && room.joinedEpoch === state.epoch && state.conn === 'open' &&
        sendFrame({ type: 'message', room: p.room, text: p.text, client_id: p.cid })) {
      p.state = 'sent';
      p.epoch = state.epoch;
      p.sentAt = Date.now();
      return true;
    }
    p.state = 'queued';
    return false;
  }

  // Sent on a socket that is still open, yet neither acked nor refused: say so and offer
  // Retry (the same client_id: the server stores it at most once, G8).
  function checkUnconfirmed() {
    const now = Date.now();
    for (const p of state.pending.values()) {
      if (p.state === 'sent' && p.epoch === state.epoch && now - p.sentAt > UNCONFIRMED_MS) {
        failPending(p, 'No answer from the server yet — Retry cannot post it twice', true);
        announce('No answer from the server yet for a message you sent. Retry is offered; it cannot post it twice.');
      }
    }
  }

  function retryPending(cid) {
    const p = state.pending.get(cid);
    if (!p) return;
    p.reason = '';
    trySend(p);   // the same client_id: if it was stored after all, the server only acks it
    refreshPending(p.room);
  }

  function retryAll() {
    const room = activeRoom();
    if (!room) return;
    for (const p of pendingFor(room.name)) {
      if (p.state !== 'failed' || p.editing) continue;
      p.reason = '';
      trySend(p);
    }
    refreshPending(room.name);
  }

  function discardPending(cid) {
    const p = state.pending.get(cid);
    if (!p) return;
    state.pending.delete(cid);
    retire(p);
    refreshPending(p.room);
    maybeClearSendToasts();
  }

  function discardAll() {
    const room = activeRoom();
    if (!room) return;
    for (const p of pendingFor(room.name)) {
      if (p.state === 'failed' && !p.editing) { state.pending.delete(p.cid); retire(p); }
    }
    refreshPending(room.name);
    maybeClearSendToasts();
  }

  // Edit happens in place, in the pending item: a refused text never goes into the message
  // box, where it could run together with what is being typed.
  function editPending(cid) {
    const p = state.pending.get(cid);
    if (!p || p.state !== 'failed') return;
    p.editing = true;
    p.editor = null;
    refreshPending(p.room);
    if (p.editor) {
      p.editor.area.focus();
      p.editor.area.setSelectionRange(p.editor.area.value.length, p.editor.area.value.length);
      if (typeof p.node.scrollIntoView === 'function') p.node.scrollIntoView({ block: 'nearest' });
    }
  }

  function finishEdit(cid, send) {
    const p = state.pending.get(cid);
    if (!p || !p.editing) return;
    const text = p.editor ? p.editor.area.value : p.text;
    // Over the limit: not sent, the editor stays open with the text (the toast says why).
    if (send && p.editor && text.trim() && text !== p.text && tooLong(text)) { p.editor.area.focus(); return; }
    p.editing = false;
    p.editor = null;
    if (!send) { refreshPending(p.room); return; }
    if (!text.trim()) { discardPending(cid); return; }
    if (text === p.text) { retryPending(cid); return; }
    // A changed text is a new message: a new client_id (the old one may have been stored).
    if (!fitsFrame(p.room, text)) { refreshPending(p.room); return; }
    state.pending.delete(cid);
    retire(p);
    sendText(p.room, text);
    refreshPending(p.room);
  }

  function retire(p) {
    state.retired.set(p.cid, p.text);
    if (state.retired.size > 200) state.retired.delete(state.retired.keys().next().value);
  }

  // The server stored one of our messages (its `message` or its `ack` arrived).
  function resolvePending(cid) {
    if (!cid) return false;
    const p = state.pending.get(cid);
    if (p) {
      state.pending.delete(cid);
      if (p.state === 'failed') {
        toast('A message reported as not sent was delivered after all', '', { code: 'late_delivery', group: 'send' });
      }
      refreshPending(p.room);
      return true;
    }
    if (state.retired.has(cid)) {
      state.retired.delete(cid);
      toast('A message reported as not sent was delivered after all', '', { code: 'late_delivery', group: 'send' });
    }
    return false;
  }

  function anyFailed() {
    for (const p of state.pending.values()) if (p.state === 'failed') return true;
    return false;
  }

  function maybeClearSendToasts() {
    if (!anyFailed()) clearToasts('send', ['late_delivery']);
  }

  // ---------------------------------------------------------------- sending
  function sendFrame(obj) {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(obj));
    return true;
  }

  function fitsFrame(roomName, text) {
    const frame = { type: 'message', room: roomName, text, client_id: state.cidPrefix + 999999 };
    if (encoder.encode(JSON.stringify(frame)).length > MAX_FRAME_BYTES) {
      toast('Message too long — it was not sent', 'Shorten it and try again.', { code: 'too_big', group: 'send' });
      return false;
    }
    return true;
  }

  function sendText(roomName, text) {
    if (!fitsFrame(roomName, text)) return false;
    const p = { cid: newCid(), room: roomName, text, state: 'queued', epoch: -1, reason: '' };
    state.pending.set(p.cid, p);
    trySend(p);
    if (state.active === roomName) {
      renderPending();
      updateEmptyState();
      scrollToBottom();
    }
    scheduleSave();
    return true;
  }

  // After a room's `joined`: send what waits for it, in the order it was typed. A message
  // sent on an earlier socket and not confirmed goes again with the same client_id: the
  // server stores it once (G8) and the history just received already resolved what it had.
  function flushRoom(room) {
    let any = false;
    for (const p of state.pending.values()) {
      if (p.room !== room.name || p.editing) continue;
      if (p.state === 'queued' || (p.state === 'sent' && p.epoch !== state.epoch)) {
        trySend(p);
        any = true;
      }
    }
    if (any) refreshPending(room.name);
  }

  function onSend() {
    const room = activeRoom();
    if (!room) { toast('Join a room first', '', { code: 'no_room', group: 'join' }); return; }
    if (!room.everJoined) { ui.message.focus(); return; } // still joining: the text stays here
    const text = ui.message.value;
    if (!text.trim()) { ui.message.focus(); return; }
    if (tooLong(text)) { ui.message.focus(); return; }
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
    updateCounter();
  }

  // ---------------------------------------------------------------- the length limit (CHAT_MAX_TEXT)
  // The server counts characters (code points) once the text is trimmed.
  function textLength(text) { return codePoints(String(text).trim()); }

  function fmt(n) { return n.toLocaleString(); }

  // From 80% of the limit on, "1,850 / 2,000" beside the box; over it, how many too many,
  // the box marked invalid, and a screen reader told once.
  function updateCounter() {
    const n = textLength(ui.message.value);
    const max = state.maxText;
    const show = n >= Math.ceil(max * COUNTER_FROM);
    const over = n > max;
    ui.counter.hidden = !show;
    ui.counter.classList.toggle('over', over);
    if (show) {
      ui.counter.replaceChildren(
        document.createTextNode(fmt(n) + ' / ' + fmt(max)),
        el('span', 'sr-only', ' characters'),
        document.createTextNode(over ? ' · ' + fmt(n - max) + ' too many' : ''));
    } else {
      ui.counter.replaceChildren();
    }
    if (over) ui.message.setAttribute('aria-invalid', 'true');
    else ui.message.removeAttribute('aria-invalid');
    if (over && !state.overSaid) announce('Over the limit of ' + fmt(max) + ' characters: ' + fmt(n - max) + ' too many.');
    if (!over && state.overSaid) clearToasts('length');   // its cause is gone
    state.overSaid = over;
  }

  // Over the limit: not sent (the server would refuse it), and the toast says by how much.
  function tooLong(text) {
    const n = textLength(text);
    if (n <= state.maxText) return false;
    toast('Message too long: ' + fmt(n) + ' characters, the limit is ' + fmt(state.maxText),
      'Shorten it by ' + fmt(n - state.maxText) + ' to send it.', { code: 'too_long', group: 'length' });
    return true;
  }

  // ---------------------------------------------------------------- focus and what a screen reader hears
  // Where the keyboard's focus goes when what held it is gone (a closed toast, a retried
  // message, a hidden button): the message box, or the join form when there is no room. Only
  // a keyboard's focus is moved (a tap on a phone must not open its keyboard).
  function keyboardFocusIn(node) {
    const a = document.activeElement;
    return !!a && a !== document.body && node.contains(a) && a.matches(':focus-visible');
  }

  function focusComposer() {
    if (!ui.message.disabled) ui.message.focus();
    else if (!ui.username.readOnly && !validUser(ui.username.value)) ui.username.focus();
    else ui.room.focus();
  }

  // A short note for a screen reader (the connection's state, the length limit): #sr-status.
  function announce(text) {
    ui.srStatus.textContent = text;
  }

  // New messages of the active room, from others, said once each (#sr-log); many at once
  // (a catch-up after a reconnect) as a count and the last one. #messages itself is a log
  // that is read on demand: rebuilding it (a room switch, older history) says nothing.
  function announceMessages(room, list) {
    const line = (m) => (typeof m.user === 'string' ? m.user : '') + ': ' + (typeof m.text === 'string' ? m.text : '');
    const lines = list.length > BURST_SAID_ALONE
      ? [plural(list.length, 'new message', 'new messages') + ' in #' + room.name + '. The last, from ' + line(list[list.length - 1])]
      : list.map(line);
    for (const text of lines) ui.srLog.append(el('p', null, text));
    while (ui.srLog.childElementCount > SR_LOG_KEEP) ui.srLog.firstElementChild.remove();
  }

  // ---------------------------------------------------------------- joining
  function currentName() {
    if (state.tokenName) return state.tokenName;
    return state.user !== null ? state.user : ui.username.value.trim();
  }

  function lockName() {
    ui.username.readOnly = true;
    ui.username.classList.add('locked');
    ui.username.title = state.tokenName ? 'Your name comes from your sign-in token'
      : 'Your name is fixed once you have joined a room';
  }

  function maybeUnlockName() {
    if (state.tokenName) return;
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
      joinHint(user ? 'Names are 1–32 characters without control characters' : 'Pick a name first', 'name');
      ui.username.focus();
      return false;
    }
    if (!ROOM_RE.test(roomName)) {
      joinHint(roomName ? ERROR_TEXT.invalid_room : 'Type a room name to join', 'invalid_room');
      ui.room.focus();
      return false;
    }
    joinHint(null);
    clearToasts('join');
    if (state.user === null && !state.tokenName) {
      ui.username.value = user;
      lsSet(LS_USER, user);
    }
    lockName();
    const room = ensureRoom(roomName);
    if (!room.wanted) {
      room.wanted = true;
      room.returnTo = state.active;   // where a refused join goes back to
      if (state.conn === 'open') sendJoin(room);
      updateRoomEntry(room);
    }
    activate(room.name);
    return true;
  }

  // What is wrong with the join form is said in the form, next to the fields; it goes as
  // soon as they are edited or a join succeeds.
  function joinHint(text, code) {
    ui.joinHint.textContent = text || '';
    ui.joinHint.hidden = !text;
    if (text) ui.joinHint.dataset.code = code;
    else delete ui.joinHint.dataset.code;
    const bad = text ? (code === 'name' ? ui.username : ui.room) : null;
    for (const f of [ui.username, ui.room]) {
      if (f === bad) f.setAttribute('aria-invalid', 'true');
      else f.removeAttribute('aria-invalid');
    }
  }

  function sendJoin(room) {
    // In token mode the name is the token's: repeating it is allowed (section 9).
    const frame = { type: 'join', room: room.name };
    const user = currentName();
    if (user) frame.user = user;
    // Back in a room this page (or this tab, before a reload) was in: everything after the
    // last id seen there ('0-0': it had no message yet). A first join takes the recent history.
    let since = null;
    if (room.everJoined) since = room.lastId || '0-0';
    else if (room.restored) since = room.lastId || room.restoreFrom || null;
    if (since) frame.since = since;
    if (sendFrame(frame)) state.joinQueue.push(room.name);
  }

  function onJoinClick() {
    const name = ui.room.value.trim();
    if (joinRoom(name)) {
      ui.room.value = '';
      applyRoomFilter();
      ui.message.focus();
    }
  }

  function onRoomClick(ev) {
    const li = ev.target.closest('[data-room]');
    if (!li || !ui.rooms.contains(li)) return;
    const room = state.rooms.get(li.dataset.room);
    if (!room) return;
    if (room.wanted) activate(room.name);
    else if (!joinRoom(room.name)) return;
    if (state.filter !== '') {
      ui.room.value = '';
      applyRoomFilter();
    }
    if (ev.detail === 0) ui.message.focus();   // from the keyboard (a pointer's click has detail >= 1)
  }

  // ---------------------------------------------------------------- this tab's session (reload)
  // Kept in sessionStorage (this tab, across reloads) and copied to localStorage (so a new
  // tab starts where the last one was): the user, the rooms joined with the last id seen in
  // each, the active room, and the messages not confirmed yet (this tab only).
  function scheduleSave() {
    if (state.saveTimer !== null) return;
    state.saveTimer = setTimeout(saveSession, 200);
  }

  function saveSession() {
    clearTimeout(state.saveTimer);
    state.saveTimer = null;
    const rooms = [];
    for (const r of state.rooms.values()) {
      if (!r.wanted) continue;
      rooms.push([r.name, r.lastId || (r.everJoined ? '0-0' : null)]);
    }
    const pending = [];
    for (const p of state.pending.values()) {
      pending.push({ cid: p.cid, room: p.room, text: p.text, failed: p.state === 'failed', reason: p.reason || '' });
    }
    const user = state.user || (rooms.length ? currentName() : null);
    const data = { v: 1, user, rooms, active: state.active, pending };
    ssSet(SESSION_KEY, JSON.stringify(data));
    lsSet(SESSION_KEY, JSON.stringify({ v: 1, user, rooms: rooms.map(([n]) => [n, null]), active: state.active }));
  }

  function restoreSession() {
    let fromTab = true;
    let raw = ssGet(SESSION_KEY);
    if (!raw) { raw = lsGet(SESSION_KEY); fromTab = false; }
    if (!raw) return;
    let data;
    try { data = JSON.parse(raw); } catch (e) { return; }
    if (!data || data.v !== 1 || !Array.isArray(data.rooms)) return;
    const name = state.tokenName || (typeof data.user === 'string' ? data.user : lsGet(LS_USER));
    if (!validUser(name || '')) return;
    let any = false;
    for (const item of data.rooms.slice(0, 100)) {
      if (!Array.isArray(item) || typeof item[0] !== 'string' || !ROOM_RE.test(item[0])) continue;
      const room = ensureRoom(item[0]);
      room.wanted = true;
      // This tab after a reload: join again from the last id seen there. A new tab saw
      // nothing yet: it joins plainly (the recent history), as a first join.
      const since = fromTab && typeof item[1] === 'string' && ID_RE.test(item[1]) ? item[1] : null;
      room.restored = since !== null;
      room.lastId = since && since !== '0-0' ? since : null;
      room.restoreFrom = since;
      updateRoomEntry(room);
      any = true;
    }
    if (!any) return;
    if (!state.tokenName) ui.username.value = name.trim();
    lockName();
    if (fromTab && Array.isArray(data.pending)) {
      for (const q of data.pending.slice(0, 500)) {
        if (!q || typeof q.cid !== 'string' || typeof q.room !== 'string' || typeof q.text !== 'string') continue;
        const room = state.rooms.get(q.room);
        if (!room || !room.wanted || state.pending.has(q.cid)) continue;
        state.pending.set(q.cid, {
          cid: q.cid, room: q.room, text: q.text, epoch: -1,
          state: q.failed ? 'failed' : 'queued', reason: q.failed ? String(q.reason || 'error') : '',
        });
      }
    }
    const active = typeof data.active === 'string' && state.rooms.get(data.active);
    const first = active && active.wanted ? active : firstWanted();
    activate(first ? first.name : null);
  }

  // ---------------------------------------------------------------- incoming frames
  function handleFrame(raw) {
    let f;
    try { f = JSON.parse(raw); } catch (e) { return; }
    if (!f || typeof f !== 'object') return;
    switch (f.type) {
      case 'joined': onJoined(f); break;
      case 'message': onMessage(f); break;
      case 'ack': onAck(f); break;
      case 'room_created':
        if (typeof f.room === 'string' && ROOM_RE.test(f.room) && tokenAllows(f.room)) {
          const room = ensureRoom(f.room, f.ts);
          room.known = true;
          room.seenGen = state.roomsGen;
        }
        break;
      case 'room_removed':
        if (typeof f.room === 'string') removeRoom(f.room);
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
    room.known = true;
    if (!room.wanted) return; // left meanwhile; the server gets our `leave` next
    clearToasts('join');
    joinHint(null);
    const rejoin = room.everJoined;
    const restored = !rejoin && room.restored;
    if (typeof f.user === 'string' && f.user) {
      state.user = f.user;
      ui.username.value = f.user;
      lsSet(LS_USER, f.user);
      lockName();
    }
    room.everJoined = true;
    room.restored = false;
    room.joinedEpoch = state.epoch;
    setMembers(room, f.members);
    if (f.gap) addNotice(room, 'Some older messages were trimmed — a part of the history is missing here', 'gap', Date.now());
    const history = Array.isArray(f.history) ? f.history : [];
    const isActive = state.active === room.name;
    // Our own messages in the history were stored: nothing to resend for them.
    for (const m of history) if (m && m.client_id) resolvePending(m.client_id);
    if (!rejoin && !restored) {
      addMessages(room, history, { live: true, countUnread: false, forceBottom: true });
      if (!history.length) room.hasMore = false;
      addNotice(room, 'You joined #' + room.name, 'self', Date.now());
      if (isActive) scrollToBottom();
    } else {
      // Back after a drop or a reload: what arrived since the last id seen is new (unread).
      addMessages(room, history, { live: true, countUnread: true, forceBottom: restored, announce: true });
      if (restored && messageCount(room) < HISTORY_PAGE && room.restoreFrom !== '0-0') loadOlder(room, true);
      else if (restored && room.restoreFrom === '0-0') room.hasMore = false;
    }
    flushRoom(room);
    if (isActive) {
      renderMembers();
      renderPending();
      updateEmptyState();
      updateComposer();
      updateLoadOlder();
      maybeProbeOlder(room);
    }
    updateRoomEntry(room);
    scheduleSave();
  }

  function onMessage(f) {
    const room = state.rooms.get(f.room);
    if (!room || !room.wanted) return;
    if (resolvePending(f.client_id)) maybeClearSendToasts();
    addMessages(room, [f], { live: true, countUnread: true, animate: true, announce: true });
    if (state.active === room.name) updateEmptyState();
  }

  // The server stored our message (or had stored it already: a resend G8 recognised). Show
  // it now, from what we sent; its `message` frame, when one follows, is the same id.
  function onAck(f) {
    const cid = typeof f.client_id === 'string' ? f.client_id : null;
    if (!cid) return;
    const p = state.pending.get(cid);
    if (p && typeof f.id === 'string' && ID_RE.test(f.id)) {
      const room = state.rooms.get(p.room);
      if (room && room.wanted && !room.ids.has(f.id)) {
        const msg = { id: f.id, room: p.room, user: state.user || currentName(), text: p.text.trim(),
          ts: parseId(f.id)[0], client_id: cid };
        addMessages(room, [msg], { live: true, countUnread: false, animate: true, local: true });
      }
    }
    if (resolvePending(cid)) maybeClearSendToasts();
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
      // Refused: the text stays in the pending list (Retry / Edit / Discard), never in the box.
      // invalid_text: the server says what is wrong (e.g. "text is longer than 2000 characters").
      const precise = code === 'invalid_text' && serverMsg;
      failPending(p, precise ? serverMsg : REFUSED_TEXT[code] || ERROR_TEXT[code] || serverMsg || code);
      if (code === 'invalid_text') title = precise ? 'Message not sent: ' + serverMsg : 'Message not sent: it is empty, too long or has invalid characters';
      const n = pendingFor(p.room).filter((q) => q.state === 'failed').length;
      const how = code === 'invalid_text' ? 'with Edit' : 'with Retry';
      toast(title, n > 1 ? n + ' messages are kept above, ' + how : 'It is kept above, ' + how, { code, group: 'send' });
      return;
    }
    if (f.ref === 'join') {
      const name = state.joinQueue.shift();
      const room = name ? state.rooms.get(name) : null;
      if (room && room.wanted) {
        if (code === 'unavailable') {
          title = 'Server storage unavailable — could not join #' + room.name + ', retrying';
          const epoch = state.epoch;
          setTimeout(() => {
            if (state.epoch === epoch && state.conn === 'open' && room.wanted && room.joinedEpoch !== epoch) sendJoin(room);
          }, 3000);
        } else {
          refuseJoin(room);
          if (code === 'invalid_user') ui.username.focus();
          title = (ERROR_TEXT[code] || 'Could not join') + ' (#' + room.name + ')';
        }
      }
      toast(title, code === 'unavailable' || ERROR_TEXT[code] ? '' : serverMsg, { code, group: 'join' });
      return;
    }
    toast(title, serverMsg, { code });
  }

  // A join the server refused: the room is not joined, in any part of the page.
  function refuseJoin(room) {
    for (const p of pendingFor(room.name)) {
      if (p.state !== 'failed') { p.state = 'failed'; p.reason = 'not in #' + room.name; }
    }
    resetRoom(room);
    if (state.active === room.name) {
      const back = room.returnTo ? state.rooms.get(room.returnTo) : null;
      const next = back && back.wanted ? back : firstWanted();
      activate(next ? next.name : null);
    }
    updateRoomEntry(room);
    if (!room.known) removeRoom(room.name);   // typed here and never created: no entry
    updateTitle();
    maybeUnlockName();
    scheduleSave();
  }

  // ---------------------------------------------------------------- connection
  function setStatus(conn, note) {
    state.conn = conn;
    ui.status.dataset.state = conn;
    let text;
    if (conn === 'open') text = 'Connected';
    else if (conn === 'connecting') text = state.epoch > 1 ? 'Reconnecting…' : 'Connecting…';
    else if (state.expired) text = EXPIRED_TEXT;
    else {
      const secs = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
      text = 'Disconnected' + (note ? ': ' + note : '') + (state.retryTimer ? ' — retrying in ' + secs + ' s' : '');
    }
    ui.statusText.textContent = text;
    ui.status.title = text;
    ui.reconnect.hidden = conn !== 'closed' || state.expired;
  }

  function connect() {
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    clearInterval(state.countdownTimer);
    state.countdownTimer = null;
    if (state.ws || state.expired) return;
    state.epoch += 1;
    state.joinQueue = [];
    setStatus('connecting');
    let ws;
    try {
      ws = new WebSocket(wsUrl());
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
    clearToasts('conn');
    if (state.connSaid !== 'open') announce(state.connSaid === 'lost' ? 'Connected again' : 'Connected');
    state.connSaid = 'open';
    // Rejoin every room (active one first), with `since` where we already have history.
    const rooms = [...state.rooms.values()].filter((r) => r.wanted);
    rooms.sort((a, b) => (a.name === state.active ? -1 : 0) - (b.name === state.active ? -1 : 0));
    for (const r of rooms) sendJoin(r);
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
    // What was in flight is unconfirmed: it goes again, same client_id, after the rejoin.
    const touched = new Set();
    for (const p of state.pending.values()) {
      if (p.state === 'sent') { p.state = 'queued'; touched.add(p.room); }
    }
    if (state.active && touched.has(state.active)) renderPending();
    if (state.token && code === 1008) { sessionExpired(); return; }   // the token expired while connected
    if (state.token && !state.openedAt) probeToken();   // refused with 401 before opening?
    const wasOpenFor = state.openedAt ? Date.now() - state.openedAt : 0;
    if (wasOpenFor > STABLE_AFTER_MS) state.attempt = 0;
    state.openedAt = 0;
    state.closeNote = CLOSE_TEXT[code] || (code ? 'closed (' + code + ')' : 'connection lost');
    if (code === 1009) toast('The server closed the connection: a message was too big (1009)', 'Reconnecting…', { code: 'closed', group: 'conn' });
    else if (code === 1013) toast('The server dropped this connection as too slow (1013)', 'Reconnecting…', { code: 'closed', group: 'conn' });
    const base = Math.min(BACKOFF_CAP_MS, BACKOFF_START_MS * 2 ** state.attempt);
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    state.attempt = Math.min(state.attempt + 1, 10);
    state.retryAt = Date.now() + delay;
    state.retryTimer = setTimeout(connect, delay);
    setStatus('closed', state.closeNote);
    if (state.connSaid !== 'lost') announce('Disconnected: ' + state.closeNote + '. Reconnecting by itself.');
    state.connSaid = 'lost';
    clearInterval(state.countdownTimer);
    state.countdownTimer = setInterval(() => {
      if (state.conn === 'closed') setStatus('closed', state.closeNote);
    }, 1000);
  }

  function reconnectNow() {
    if (state.conn !== 'closed') return;
    const hadFocus = keyboardFocusIn(ui.reconnect);
    state.attempt = 0;
    connect();
    if (hadFocus && ui.reconnect.hidden) focusComposer();
  }

  // ---------------------------------------------------------------- toasts
  // A strip between the messages and the message box: it pushes the view up rather than
  // covering any message. Each toast has a group ('join', 'send', 'conn', 'history'): it goes
  // as soon as its cause is gone (a join succeeded, a message was accepted, the socket is back).
  function toast(title, detail, opts) {
    const code = (opts && opts.code) || 'info';
    const group = (opts && opts.group) || '';
    for (const t of ui.errors.children) {
      if (t.classList.contains('leaving') || t.dataset.title !== title) continue;
      // Same error again (e.g. a burst of rate_limited): bump a counter instead of stacking.
      const n = Number(t.dataset.count || '1') + 1;
      t.dataset.count = String(n);
      t.querySelector('.toast-count').textContent = '×' + n;
      const d = t.querySelector('.toast-detail');
      if (d && detail) d.textContent = detail;
      clearTimeout(t._timer);
      if (!t._held) t._timer = setTimeout(() => dismissToast(t), TOAST_MS);
      return;
    }
    const stick = atBottom();
    const t = el('div', 'toast');
    t.dataset.code = code;
    t.dataset.title = title;
    if (group) t.dataset.group = group;
    const body = el('div', 'toast-body');
    const head = el('span', 'toast-title');
    const count = el('span', 'toast-count');
    count.setAttribute('aria-hidden', 'true');
    head.append(document.createTextNode(title), count);
    body.append(head);
    if (detail && detail !== title) body.append(el('span', 'toast-detail', detail));
    const close = button('toast-close', '×', () => dismissToast(t));
    close.setAttribute('aria-label', 'Dismiss');
    close.title = 'Dismiss';
    t.append(body, close);
    const hold = () => { t._held = true; clearTimeout(t._timer); };
    const release = () => {
      if (t.matches(':hover') || t.contains(document.activeElement)) return;
      t._held = false;
      clearTimeout(t._timer);
      t._timer = setTimeout(() => dismissToast(t), TOAST_MS);
    };
    t.addEventListener('mouseenter', hold);
    t.addEventListener('focusin', hold);
    t.addEventListener('mouseleave', release);
    t.addEventListener('focusout', () => setTimeout(release, 0));
    ui.errors.append(t);
    let live = [...ui.errors.children].filter((x) => !x.classList.contains('leaving') && x.id !== 'session-expired');
    while (live.length > MAX_TOASTS) {
      const old = live.shift();
      clearTimeout(old._timer);
      old.remove();
    }
    t._timer = setTimeout(() => dismissToast(t), TOAST_MS);
    if (stick) scrollToBottom();
  }

  function dismissToast(t) {
    if (!t.isConnected || t.classList.contains('leaving')) return;
    clearTimeout(t._timer);
    const hadFocus = keyboardFocusIn(t);
    t.classList.add('leaving');
    if (hadFocus) focusComposer();
    setTimeout(() => t.remove(), 200);
  }

  function clearToasts(group, exceptCodes) {
    for (const t of [...ui.errors.children]) {
      if (t.dataset.group !== group) continue;
      if (exceptCodes && exceptCodes.includes(t.dataset.code)) continue;
      dismissToast(t);
    }
  }

  // ---------------------------------------------------------------- wiring
  function init() {
    for (const id of ['username', 'room', 'join', 'message', 'send', 'messages', 'rooms', 'members',
      'status', 'errors', 'scroller', 'pending', 'leave', 'reconnect']) ui[id] = $(id);
    ui.loadOlder = $('load-older');
    ui.jumpLatest = $('jump-latest');
    ui.emptyState = $('empty-state');
    ui.roomsEmpty = $('rooms-empty');
    ui.roomCount = $('room-count');
    ui.joinHint = $('join-hint');
    ui.roomTitle = $('room-title');
    ui.roomSubtitle = $('room-subtitle');
    ui.memberCount = $('member-count');
    ui.statusText = $('status-text');
    ui.srStatus = $('sr-status');
    ui.srLog = $('sr-log');
    ui.counter = $('counter');
    const max = Number(ui.message.dataset.maxText);
    if (Number.isInteger(max) && max > 0) state.maxText = max;

    state.token = readToken();
    state.tokenName = state.token ? decodeJwtName(state.token) : null;
    state.tokenRooms = state.token ? decodeJwtRooms(state.token) : null;
    if (state.tokenName) {
      ui.username.value = state.tokenName;
      lockName();
    } else {
      const savedName = lsGet(LS_USER);
      if (savedName && !ui.username.value) ui.username.value = savedName;
    }

    ui.join.addEventListener('click', onJoinClick);
    ui.room.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.isComposing) { ev.preventDefault(); onJoinClick(); }
    });
    ui.room.addEventListener('input', () => { joinHint(null); clearToasts('join'); applyRoomFilter(); });
    ui.username.addEventListener('keydown', (ev) => {
      if (ev.key !== 'Enter' || ev.isComposing) return;
      ev.preventDefault();
      if (ui.room.value.trim()) onJoinClick();
      else ui.room.focus();
    });
    ui.username.addEventListener('input', () => {
      if (ui.joinHint.dataset.code === 'name') joinHint(null);
      clearToasts('join');
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
    ui.loadOlder.addEventListener('click', () => loadOlder(null, false));
    ui.leave.addEventListener('click', leaveActive);
    ui.reconnect.addEventListener('click', reconnectNow);
    ui.jumpLatest.addEventListener('click', (ev) => {
      scrollToBottom();
      if (ev.detail === 0) ui.message.focus();   // the button is gone: the keyboard goes on in the box
    });
    ui.scroller.addEventListener('scroll', () => {
      const room = activeRoom();
      const bottom = atBottom();
      if (room) room.stick = bottom;
      if (bottom) ui.jumpLatest.hidden = true;
    }, { passive: true });
    // A toast, a taller message box or a resized window shrinks the view: keep the newest in sight.
    if (typeof ResizeObserver === 'function') {
      new ResizeObserver(() => {
        const room = activeRoom();
        if (room && room.stick) ui.scroller.scrollTop = ui.scroller.scrollHeight;
      }).observe(ui.scroller);
    }
    window.addEventListener('online', reconnectNow);
    setInterval(checkUnconfirmed, 3000);
    setInterval(syncDays, 60000);   // "Today" becomes "Yesterday" at midnight
    window.addEventListener('pagehide', saveSession);

    updateRoomsEmpty();
    activate(null);
    restoreSession();
    loadRooms();
    connect();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
