// Token mode: the page reads the name and the allowed rooms from the token (it never checks
// the signature; the server does).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeJwtClaims, decodeJwtName, decodeJwtRooms, roomAllowed, tokenFromHash,
} from '../../quart_chat/static/js/token.js';

const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
const jwt = (claims) => b64url({ alg: 'HS256', typ: 'JWT' }) + '.' + b64url(claims) + '.sig';

test('claims decode from base64url, UTF-8 included', () => {
  assert.deepEqual(decodeJwtClaims(jwt({ name: 'Zoë 😀', exp: 1 })), { name: 'Zoë 😀', exp: 1 });
  assert.equal(decodeJwtName(jwt({ name: '  Zoë ' })), 'Zoë');
  for (const bad of ['', 'abc', 'a.!!!.c', jwt('text')]) assert.equal(decodeJwtClaims(bad), null, bad);
  assert.equal(decodeJwtName(jwt({ name: 'x'.repeat(40) })), null, 'an invalid name is not shown');
  assert.equal(decodeJwtName(jwt({ sub: 'u1' })), null);
});

test('room patterns: * is any run of characters, nothing else is special', () => {
  const pats = decodeJwtRooms(jwt({ rooms: ['team-*', 'lobby', 'a.b', 7] }));
  assert.equal(roomAllowed(pats, 'team-'), true);
  assert.equal(roomAllowed(pats, 'team-red'), true);
  assert.equal(roomAllowed(pats, 'lobby'), true);
  assert.equal(roomAllowed(pats, 'lobby2'), false, 'anchored');
  assert.equal(roomAllowed(pats, 'axb'), false, 'a dot is a dot');
  assert.equal(roomAllowed(decodeJwtRooms(jwt({ name: 'Al' })), 'anything'), true, 'no rooms claim: every room');
  assert.equal(roomAllowed([], 'anything'), false, 'an empty list allows none');
});

test('the token is read from the URL fragment', () => {
  assert.equal(tokenFromHash('#token=abc.def.ghi'), 'abc.def.ghi');
  assert.equal(tokenFromHash('#x=1&token=a%2Eb'), 'a.b');
  assert.equal(tokenFromHash('#token=%E0%A4%A'), '%E0%A4%A', 'undecodable: kept raw');
  assert.equal(tokenFromHash('#notoken=1'), null);
  assert.equal(tokenFromHash(''), null);
  assert.equal(tokenFromHash(undefined), null);
});
