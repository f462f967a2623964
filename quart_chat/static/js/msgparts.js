// The parts of a message's element that change after it is sent (docs/protocol.md, "A
// message's life"): the quote of the message it answers, "(edited)", the reaction chips, the tools
// beside it (react, reply, edit, the actions menu) and the removed state. syncParts builds
// them on a new element and brings an existing one up to date in place, so that a focused
// chip or tool keeps the focus when a change arrives. Texts and names go in as text only.

import { button, el } from './dom.js';
import { fullTime } from './days.js';
import { reactionChips } from './life.js';
import { mentionParts } from './mentions.js';

const REMOVED_TEXT = 'This message was deleted';
const QUOTE_TEXT = { deleted: 'message deleted', unknown: 'an earlier message' };

function child(parent, cls) { return parent.querySelector(':scope > .' + cls); }

// ctx: {me (this page's user name or null), mine (bool), quote (life.quoteView, when the
// message is a reply), mentionsMe (bool)}.
export function syncParts(root, msg, ctx) {
  const removed = !!msg.deleted;
  root.classList.toggle('removed', removed);
  root.classList.toggle('mentions-me', !removed && !!ctx.mentionsMe);
  const bubble = child(root, 'bubble');
  const want = removed || typeof msg.text !== 'string' ? '' : msg.text;
  syncText(child(bubble, 'text'), want, removed ? null : msg.mentions, ctx.me);
  syncQuote(bubble, removed ? null : msg.reply_to, ctx.quote);
  syncEdited(child(bubble, 'meta'), removed ? 0 : Number(msg.edited_ts) || 0);
  syncRemoved(bubble, removed);
  syncReactions(bubble, removed ? null : msg.reactions, ctx.me);
  syncTools(root, !removed, ctx.mine, typeof msg.user === 'string' ? msg.user : '');
}

// The text, with each `@name` the server found as a <mark> inside it: .text's textContent
// is still exactly the text (an edit keeps the mentions the message was sent with).
function syncText(node, want, names, me) {
  const parts = mentionParts(want, names);
  const key = parts.filter((p) => p.mention).map((p) => p.mention).join('\n');
  if (node.textContent === want && (node.dataset.mentions || '') === key) return;
  node.replaceChildren(...parts.map((p) => (p.mention
    ? el('mark', 'mention' + (p.mention === me ? ' me' : ''), p.text) : document.createTextNode(p.text))));
  if (key) node.dataset.mentions = key;
  else delete node.dataset.mentions;
}

function syncQuote(bubble, replyTo, view) {
  const old = child(bubble, 'reply-quote');
  if (!replyTo || !view) { if (old) old.remove(); return; }
  const key = view.state + '|' + (view.user || '') + '|' + (view.line || '');
  if (old && old.dataset.replyTo === replyTo && old.dataset.key === key) return;
  // A quote of a message still there is a button that goes to it; a deleted one is not.
  const q = view.state === 'deleted' ? el('div', 'reply-quote missing') : button('reply-quote');
  q.dataset.replyTo = replyTo;
  q.dataset.key = key;
  q.append(el('span', 'sr-only', 'In reply to '));
  if (view.state === 'shown') {
    q.append(el('span', 'quote-user', view.user), el('span', 'quote-text', view.line));
    q.title = 'Go to the original message';
  } else {
    q.classList.add('missing');
    q.append(el('span', 'quote-text', QUOTE_TEXT[view.state]));
    if (view.state === 'unknown') q.title = 'Go to the original message (loads older messages)';
  }
  if (old) old.replaceWith(q);
  else child(bubble, 'meta').after(q);
}

function syncEdited(meta, editedTs) {
  let mark = child(meta, 'edited');
  if (!editedTs) { if (mark) mark.remove(); return; }
  if (!mark) {
    mark = el('span', 'edited', '(edited)');
    meta.append(mark);
  }
  mark.title = 'Edited ' + fullTime(editedTs);
}

function syncRemoved(bubble, removed) {
  const note = child(bubble, 'removed-note');
  if (removed && !note) bubble.append(el('div', 'removed-note', REMOVED_TEXT));
  else if (!removed && note) note.remove();
}

function syncReactions(bubble, reactions, me) {
  const chips = reactionChips(reactions, me);
  let box = child(bubble, 'reactions');
  if (!chips.length) { if (box) box.remove(); return; }
  if (!box) {
    box = el('div', 'reactions');
    box.setAttribute('role', 'group');
    box.setAttribute('aria-label', 'Reactions');
    const add = button('reaction-add');
    add.append(el('span', 'reaction-add-icon', '+'));
    add.setAttribute('aria-label', 'Add a reaction');
    add.title = 'Add a reaction';
    box.append(add);
    bubble.append(box);
  }
  const byEmoji = new Map();
  for (const b of box.querySelectorAll(':scope > .reaction')) byEmoji.set(b.dataset.emoji, b);
  let at = box.firstChild;
  for (const c of chips) {
    let b = byEmoji.get(c.emoji);
    byEmoji.delete(c.emoji);
    if (!b) {
      b = button('reaction');
      b.dataset.emoji = c.emoji;
      const emoji = el('span', 'reaction-emoji', c.emoji);
      const count = el('span', 'count');
      emoji.setAttribute('aria-hidden', 'true');
      count.setAttribute('aria-hidden', 'true');
      // What a screen reader says is who reacted (the count is in it); sighted, the title.
      b.append(emoji, count, el('span', 'sr-only who'));
    }
    b.querySelector('.count').textContent = String(c.count);
    b.querySelector('.who').textContent = c.label;
    b.setAttribute('aria-pressed', c.mine ? 'true' : 'false');
    b.title = c.label;
    if (b !== at) box.insertBefore(b, at);
    else at = at.nextSibling;
  }
  for (const stale of byEmoji.values()) stale.remove();
}

function tool(cls, glyph, label, focusable) {
  const b = button('tool ' + cls);
  b.append(el('span', 'tool-glyph', glyph));
  b.setAttribute('aria-label', label);
  b.title = label;
  if (!focusable) b.tabIndex = -1;   // the same actions are in the menu, one tab stop a message
  return b;
}

function syncTools(root, show, mine, user) {
  const old = child(root, 'msg-tools');
  if (!show) { if (old) old.remove(); return; }
  if (old) return;
  const tools = el('div', 'msg-tools');
  tools.append(tool('tool-react', '☺', 'Add a reaction', false), tool('tool-reply', '↩', 'Reply', false));
  if (mine) tools.append(tool('tool-edit', '✎', 'Edit', false));
  const more = tool('tool-more', '⋯', 'Actions for the message from ' + (mine ? 'you' : user), true);
  more.setAttribute('aria-haspopup', 'menu');
  more.setAttribute('aria-expanded', 'false');
  tools.append(more);
  root.append(tools);
}
