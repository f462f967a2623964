// Toasts: a strip between the messages and the message box (#errors) that pushes the view
// up rather than covering a message. Each toast has a group ('join', 'send', 'conn',
// 'history', 'length') and goes as soon as its cause is gone.

import { focusComposer, keyboardFocusIn } from './a11y.js';
import { button, el, ui } from './dom.js';
import { atBottom, scrollToBottom } from './view.js';

const TOAST_MS = 5000;
const MAX_TOASTS = 3;

// The toasts' timers, and whether the pointer or the focus holds one open.
const timers = new WeakMap();
const held = new WeakSet();

function arm(t) {
  clearTimeout(timers.get(t));
  timers.set(t, setTimeout(() => dismissToast(t), TOAST_MS));
}

export function toast(title, detail, opts) {
  const code = (opts && opts.code) || 'info';
  const group = (opts && opts.group) || '';
  for (const t of ui.errors.children) {
    if (t.classList.contains('leaving') || t.dataset.title !== title) continue;
    // The same error again (a burst of rate_limited): a counter instead of a stack.
    const n = Number(t.dataset.count || '1') + 1;
    t.dataset.count = String(n);
    t.querySelector('.toast-count').textContent = '×' + n;
    const d = t.querySelector('.toast-detail');
    if (d && detail) d.textContent = detail;
    if (held.has(t)) clearTimeout(timers.get(t));
    else arm(t);
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
  // A toast being read or reached with the keyboard stays until it is left.
  const hold = () => { held.add(t); clearTimeout(timers.get(t)); };
  const release = () => {
    if (t.matches(':hover') || t.contains(document.activeElement)) return;
    held.delete(t);
    arm(t);
  };
  t.addEventListener('mouseenter', hold);
  t.addEventListener('focusin', hold);
  t.addEventListener('mouseleave', release);
  t.addEventListener('focusout', () => setTimeout(release, 0));
  ui.errors.append(t);
  const live = [...ui.errors.children].filter((x) => !x.classList.contains('leaving') && x.id !== 'session-expired');
  while (live.length > MAX_TOASTS) {
    const old = live.shift();
    clearTimeout(timers.get(old));
    old.remove();
  }
  arm(t);
  if (stick) scrollToBottom();
}

function dismissToast(t) {
  if (!t.isConnected || t.classList.contains('leaving')) return;
  clearTimeout(timers.get(t));
  const hadFocus = keyboardFocusIn(t);
  t.classList.add('leaving');
  if (hadFocus) focusComposer();
  setTimeout(() => t.remove(), 200);   // after the CSS fade
}

export function clearToasts(group, exceptCodes) {
  for (const t of [...ui.errors.children]) {
    if (t.dataset.group !== group) continue;
    if (exceptCodes && exceptCodes.includes(t.dataset.code)) continue;
    dismissToast(t);
  }
}

// Session expired (token mode): said once, no timer, no close button, never pruned.
export function stickyNote(id, code, title, detail) {
  const note = el('div', 'toast', null);
  note.id = id;
  note.dataset.code = code;
  const body = el('div', 'toast-body');
  body.append(el('span', 'toast-title', title), el('span', 'toast-detail', detail));
  note.append(body);
  ui.errors.append(note);
}
