// The page's elements and the small helpers that build new ones. Every user-supplied
// string goes in through textContent or text nodes only: names and texts are data, never markup.

import { fullTime, hhmm, isoTime } from './days.js';

export const $ = (id) => document.getElementById(id);

// The page's fixed elements, by role; filled once by bindUi() before anything runs.
export const ui = {};

const IDS = {
  username: 'username', room: 'room', join: 'join', message: 'message', send: 'send',
  messages: 'messages', rooms: 'rooms', members: 'members', status: 'status', errors: 'errors',
  scroller: 'scroller', pending: 'pending', leave: 'leave', reconnect: 'reconnect',
  loadOlder: 'load-older', jumpLatest: 'jump-latest', emptyState: 'empty-state',
  roomsEmpty: 'rooms-empty', roomCount: 'room-count', joinHint: 'join-hint',
  roomTitle: 'room-title', roomSubtitle: 'room-subtitle', memberCount: 'member-count',
  statusText: 'status-text', srStatus: 'sr-status', srLog: 'sr-log', counter: 'counter',
  replyBar: 'reply-bar', replyBarText: 'reply-bar-text', replyCancel: 'reply-cancel',
  msgMenu: 'msg-menu', emojiPicker: 'emoji-picker', emojiGrid: 'emoji-grid',
  confirmDelete: 'confirm-delete', confirmPreview: 'confirm-delete-preview',
  confirmCancel: 'confirm-delete-cancel', confirmOk: 'confirm-delete-ok',
  typing: 'typing', notify: 'notify', search: 'search', searchForm: 'search-form',
  searchPanel: 'search-panel', searchStatus: 'search-status', searchResults: 'search-results',
  searchMore: 'search-more',
};

export function bindUi() {
  for (const [key, id] of Object.entries(IDS)) ui[key] = $(id);
}

export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

export function button(cls, text, onClick) {
  const b = el('button', cls, text);
  b.type = 'button';
  if (onClick) b.addEventListener('click', onClick);
  return b;
}

// Enter that sends: not Shift+Enter (a new line), not while an input method composes
// (keyCode 229 is its key where isComposing is not set).
export function plainEnter(ev) {
  return ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229;
}

export function plural(n, one, many) { return n + ' ' + (n === 1 ? one : many); }

const AVATAR_COLORS = 10;

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
export function avatar(name, extraCls) {
  const a = el('span', 'avatar av-' + (hashString(String(name)) % AVATAR_COLORS) + (extraCls ? ' ' + extraCls : ''));
  a.dataset.initial = initials(name);
  a.setAttribute('aria-hidden', 'true');
  return a;
}

// A time element: the short time shown, the exact time in datetime, the full date as title.
export function timeEl(cls, ts) {
  const t = el('time', cls, hhmm(ts));
  const iso = isoTime(ts);
  if (iso) t.dateTime = iso;
  t.title = fullTime(ts);
  return t;
}

// A popover (position: fixed) next to `anchor`: below it, right-aligned, or above it when
// there is no room below; always inside the window.
export function placeNear(pop, anchor) {
  const MARGIN = 8;
  const r = anchor.getBoundingClientRect();
  pop.hidden = false;
  const w = pop.offsetWidth;
  const h = pop.offsetHeight;
  let top = r.bottom + 4;
  if (top + h > window.innerHeight - MARGIN) top = Math.max(MARGIN, r.top - h - 4);
  const left = Math.min(Math.max(MARGIN, r.right - w), window.innerWidth - w - MARGIN);
  pop.style.top = Math.round(top) + 'px';
  pop.style.left = Math.round(Math.max(MARGIN, left)) + 'px';
}

// Arrow keys (and Home, End) over a list of buttons where one holds the tab stop; `cols`
// > 1 for a grid. Returns the index to focus, or -1 when the key is not a move.
export function rovingIndex(key, i, n, cols = 1) {
  const moves = {
    ArrowDown: i + cols, ArrowUp: i - cols, Home: 0, End: n - 1,
    ArrowRight: cols > 1 ? i + 1 : -2, ArrowLeft: cols > 1 ? i - 1 : -2,
  };
  if (!(key in moves) || moves[key] === -2) return -1;
  return (moves[key] + n) % n;
}
