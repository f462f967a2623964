// Search in the active room (docs/archive.md, GET /rooms/<name>/search): the box in the
// room's header, its results under it (newest first, "Load more" with `next`), and a result
// shown in context. Only with an archive: the page says so in <body data-archive>, or, where
// it does not, one probe per page load asks the server (501: no archive).

import { announce } from './a11y.js';
import { showMessage } from './context.js';
import { button, el, plural, ui } from './dom.js';
import { dayKey, dayLabel, fullTime, hhmm } from './days.js';
import { ID_RE } from './ids.js';
import { apiFetch } from './identity.js';
import { activeRoom, getRoom } from './roomlist.js';
import { highlightParts, searchTerms } from './searchterms.js';

const PAGE = 20;
const PROBE_ABSENT = [404, 405, 501];   // no search here: an older server, or no archive

const state = {
  on: null,       // true: search offered; false: not; null: not known yet; 'probing'
  room: null,     // the room the results are of
  q: '',
  next: null,     // the `before` of the following page
  gen: 0,         // the current request: an answer to an older one is dropped
};

function searchUrl(room, q, before) {
  return '/rooms/' + encodeURIComponent(room) + '/search?q=' + encodeURIComponent(q) + '&limit=' + PAGE +
    (before ? '&before=' + encodeURIComponent(before) : '');
}

export function initSearch() {
  const flag = document.body.dataset.archive;
  state.on = flag === '1' ? true : flag === '0' ? false : null;
  ui.searchForm.addEventListener('submit', (ev) => { ev.preventDefault(); runSearch(); });
  ui.search.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && !ui.searchPanel.hidden) { ev.preventDefault(); closeSearch(); }
  });
  ui.searchPanel.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Escape') return;
    ev.preventDefault();
    closeSearch();
    ui.search.focus();
  });
  ui.searchResults.addEventListener('click', onResultClick);
  ui.searchMore.addEventListener('click', () => fetchPage());
  document.addEventListener('pointerdown', (ev) => {
    if (!ui.searchPanel.hidden && !ui.searchPanel.contains(ev.target) && !ui.searchForm.contains(ev.target)) closeSearch();
  });
  updateSearch();
}

// Follows the active room: the box shows with a room and an archive; results of another
// room close.
export function updateSearch() {
  const room = activeRoom();
  if (state.on === null && room && room.everJoined) probe(room.name);
  ui.searchForm.hidden = state.on !== true || !room;
  if (state.room && (!room || room.name !== state.room)) closeSearch();
}

async function probe(name) {
  state.on = 'probing';
  try {
    const r = await apiFetch(searchUrl(name, 'x', null));
    state.on = !PROBE_ABSENT.includes(r.status);
  } catch (e) {
    state.on = null;   // offline: asked again at the next room switch or join
    return;
  }
  updateSearch();
}

function runSearch() {
  const room = activeRoom();
  const q = ui.search.value.trim();
  if (!room || !q) { closeSearch(); return; }
  state.room = room.name;
  state.q = q;
  state.next = null;
  ui.searchResults.replaceChildren();
  fetchPage();
}

function setStatus(text) { ui.searchStatus.textContent = text; }

async function fetchPage() {
  const gen = ++state.gen;
  const more = state.next;
  ui.searchPanel.hidden = false;
  ui.searchMore.hidden = true;
  setStatus(more ? 'Loading more…' : 'Searching…');
  try {
    const r = await apiFetch(searchUrl(state.room, state.q, more));
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (gen !== state.gen) return;
    if (!r.ok) {
      const why = data && data.error && data.error.message;
      setStatus(r.status === 503 ? 'Search is not available right now — try again in a moment'
        : 'Search failed: ' + (why || 'HTTP ' + r.status));
      return;
    }
    const terms = searchTerms(state.q);
    for (const m of (data && Array.isArray(data.results) ? data.results : [])) {
      if (m && typeof m.id === 'string' && ID_RE.test(m.id)) ui.searchResults.append(resultItem(m, terms));
    }
    state.next = data && typeof data.next === 'string' && ID_RE.test(data.next) ? data.next : null;
    const n = ui.searchResults.childElementCount;
    setStatus(n ? plural(n, 'result', 'results') + (state.next ? ', more below' : '') : 'No message matches');
    ui.searchMore.hidden = !state.next;
  } catch (e) {
    if (gen === state.gen) setStatus('Search failed — check the connection');
  }
}

function when(ts) {
  const t = el('time', 'result-time', dayLabel(dayKey(ts)) + ' ' + hhmm(ts));
  t.title = fullTime(ts);
  return t;
}

// A result: who, when, and the text with the words searched for marked (as text nodes).
function resultItem(m, terms) {
  const li = el('li', 'search-item');
  const b = button('search-result');
  b.dataset.id = m.id;
  const meta = el('span', 'result-meta');
  meta.append(el('span', 'result-user', typeof m.user === 'string' ? m.user : ''), when(m.ts));
  const text = el('span', 'result-text');
  for (const p of highlightParts(m.text, terms)) text.append(p.hit ? el('mark', 'hit', p.text) : document.createTextNode(p.text));
  b.append(meta, text);
  li.append(b);
  return li;
}

function onResultClick(ev) {
  const b = ev.target.closest('.search-result');
  if (!b || !ui.searchResults.contains(b)) return;
  const room = state.room ? getRoom(state.room) : null;
  if (!room || activeRoom() !== room) return;
  const id = b.dataset.id;
  closeSearch();
  announce('Showing the message in the conversation');
  showMessage(room, id);
}

// Escape, a click elsewhere, another room: the results go (the words stay in the box).
export function closeSearch() {
  if (ui.searchPanel.hidden && state.room === null) return false;
  state.gen += 1;
  state.room = null;
  ui.searchPanel.hidden = true;
  return true;
}
