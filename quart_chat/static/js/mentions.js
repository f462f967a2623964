// A message's text cut into plain parts and `@name` mentions (docs/protocol.md, the message
// object's `mentions`), so that the page can highlight them while the text stays text.
// Pure: no DOM.

// What may continue a name (docs/protocol.md: a letter, a digit or _): "@Al" in "@Alice"
// is not Al's mention.
const NAME_GOES_ON = /[\p{L}\p{N}_]/u;

// [{text, mention}]: `mention` is the name for an `@name` part, else null. Only the names
// the server found (`mentions`) are highlighted; the longest name wins where two start alike
// ("@Mary Ann" over "@Mary"). Joined, the parts' texts are the text.
export function mentionParts(text, names) {
  const str = typeof text === 'string' ? text : '';
  const list = (Array.isArray(names) ? names : []).filter((n) => typeof n === 'string' && n)
    .sort((a, b) => b.length - a.length);
  if (!list.length || !str.includes('@')) return str ? [{ text: str, mention: null }] : [];
  const parts = [];
  let plain = 0;
  let i = str.indexOf('@');
  while (i >= 0) {
    const name = list.find((n) => str.startsWith(n, i + 1) && !goesOn(str, i + 1 + n.length));
    if (name) {
      if (i > plain) parts.push({ text: str.slice(plain, i), mention: null });
      parts.push({ text: '@' + name, mention: name });
      plain = i + 1 + name.length;
      i = str.indexOf('@', plain);
    } else {
      i = str.indexOf('@', i + 1);
    }
  }
  if (plain < str.length) parts.push({ text: str.slice(plain), mention: null });
  return parts;
}

function goesOn(str, at) {
  if (at >= str.length) return false;
  return NAME_GOES_ON.test(String.fromCodePoint(str.codePointAt(at)));
}
