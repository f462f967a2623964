// Who is in each room, and the #members list of the active one. Presence is per name, not
// per connection (docs/protocol.md, "Frames from the server"): `joined.members` lists each name once, `user_joined`
// comes when a name enters and `user_left` when its last connection goes.

import { avatar, el, plural, ui } from './dom.js';
import { me } from './identity.js';
import { sortMembers } from './order.js';
import { activeRoom } from './roomlist.js';

export function setMembers(room, list) {
  room.members = new Set();
  for (const n of (Array.isArray(list) ? list : [])) if (typeof n === 'string') room.members.add(n);
  if (me.user !== null) room.members.add(me.user);
}

// Each returns whether the set changed (a `joined` snapshot may already hold the name).
export function memberJoined(room, name) {
  if (room.members.has(name)) return false;
  room.members.add(name);
  return true;
}

export function memberLeft(room, name) {
  // This page is still in the room, whatever another connection of the same name did.
  if (name === me.user && room.wanted && room.everJoined) return false;
  return room.members.delete(name);
}

export function renderMembers() {
  const room = activeRoom();
  const names = room ? sortMembers(room.members, me.user) : [];
  const items = names.map((n) => {
    const li = el('li', 'member' + (n === me.user ? ' me' : ''));
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
