// Token mode (docs/token-mode.md): the token's claims as the page shows them. The page
// never checks the signature (the server does); it only reads the name and the rooms. Pure.

import { validUser } from './ids.js';

export function decodeJwtClaims(token) {
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

export function decodeJwtName(token) {
  const claims = decodeJwtClaims(token);
  return claims && typeof claims.name === 'string' && validUser(claims.name) ? claims.name.trim() : null;
}

// `rooms`: names or patterns where `*` is any run of characters (nothing else is special).
// null: every room.
export function decodeJwtRooms(token) {
  const claims = decodeJwtClaims(token);
  if (!claims || !Array.isArray(claims.rooms)) return null;
  return claims.rooms.filter((p) => typeof p === 'string').map((p) =>
    new RegExp('^' + p.split('*').map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$'));
}

export function roomAllowed(patterns, name) {
  return !patterns || patterns.some((re) => re.test(name));
}

// The token in a URL fragment ("#token=..."), or null.
export function tokenFromHash(hash) {
  const m = /(?:^#|&)token=([^&]+)/.exec(hash || '');
  if (!m) return null;
  try { return decodeURIComponent(m[1]); } catch (e) { return m[1]; }
}
