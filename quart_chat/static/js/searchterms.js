// What a search asked for (PostgreSQL's web search syntax, docs/archive.md: words, "a
// phrase", -word, or) and where a result's text has it, for highlighting. Pure: no DOM.

// The words to highlight: quoted phrases' words too; not `-word` (excluded) nor `or`.
export function searchTerms(q) {
  const terms = [];
  for (const raw of String(q || '').split(/\s+/u)) {
    if (!raw || raw.startsWith('-') || raw.toLowerCase() === 'or') continue;
    const word = raw.replace(/^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu, '');
    if (word && !terms.includes(word.toLowerCase())) terms.push(word.toLowerCase());
  }
  return terms.sort((a, b) => b.length - a.length);
}

// [{text, hit}]: the parts of `text`, with `hit` on each word that starts with a term (a
// stemmed search finds "running" for "run"; the start is what both share).
export function highlightParts(text, terms) {
  const str = typeof text === 'string' ? text : '';
  if (!terms.length || !str) return str ? [{ text: str, hit: false }] : [];
  const lower = str.toLowerCase();
  const parts = [];
  let plain = 0;
  let i = 0;
  while (i < str.length) {
    const atWordStart = i === 0 || !/[\p{L}\p{N}_]/u.test(str[i - 1]);
    const term = atWordStart ? terms.find((t) => lower.startsWith(t, i)) : null;
    // The lower-cased text may differ in length from the text (rare letters): no highlight then.
    if (term && lower.length === str.length) {
      if (i > plain) parts.push({ text: str.slice(plain, i), hit: false });
      parts.push({ text: str.slice(i, i + term.length), hit: true });
      i += term.length;
      plain = i;
    } else {
      i += 1;
    }
  }
  if (plain < str.length) parts.push({ text: str.slice(plain), hit: false });
  return parts;
}
