// Who is typing in each room (docs/protocol.md, `typing` frames), and the line that says so.
// Pure: no DOM, no timers; the caller passes the clock.

export const TYPING_SHOWN_MS = 5000;   // an entry lasts this long after that user's last `typing`
export const TYPING_SEND_GAP_MS = 1000; // this page sends at most one `typing` a second per room

export class TypingRoster {
  constructor(shownMs = TYPING_SHOWN_MS) {
    this.shownMs = shownMs;
    this.rooms = new Map();   // room -> Map(user -> expires at, ms); in the order they started
  }

  // A `typing` frame: shown (again) for shownMs from now. Returns whether the names changed.
  typing(room, user, now) {
    let users = this.rooms.get(room);
    if (!users) { users = new Map(); this.rooms.set(room, users); }
    const had = users.has(user) && users.get(user) > now;
    users.set(user, now + this.shownMs);
    return !had;
  }

  // Their message arrived, or they left: at once, not after the delay.
  stopped(room, user) {
    const users = this.rooms.get(room);
    return !!users && users.delete(user);
  }

  clearRoom(room) { this.rooms.delete(room); }

  names(room, now) {
    const users = this.rooms.get(room);
    if (!users) return [];
    return [...users].filter(([, until]) => until > now).map(([user]) => user);
  }

  // Drops the expired entries; returns whether any went.
  prune(now) {
    let changed = false;
    for (const [room, users] of this.rooms) {
      for (const [user, until] of users) if (until <= now) { users.delete(user); changed = true; }
      if (!users.size) this.rooms.delete(room);
    }
    return changed;
  }

  // When the next entry expires (ms since the epoch), or null when none is shown.
  nextExpiry() {
    let next = null;
    for (const users of this.rooms.values()) {
      for (const until of users.values()) if (next === null || until < next) next = until;
    }
    return next;
  }
}

// "Alice is typing…", "Alice and Bob are typing…", "Several people are typing…"; '' for nobody.
export function typingLine(names) {
  if (!names.length) return '';
  if (names.length === 1) return names[0] + ' is typing…';
  if (names.length === 2) return names[0] + ' and ' + names[1] + ' are typing…';
  return 'Several people are typing…';
}

// Whether a keystroke now may send `typing` (the last one went at lastAt, or never: null).
export function typingDue(lastAt, now, gapMs = TYPING_SEND_GAP_MS) {
  return lastAt === null || lastAt === undefined || now - lastAt >= gapMs;
}
