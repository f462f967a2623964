"""The Redis layout of docs/protocol.md, "Redis layout": key names, the Lua scripts, the command client.

Keys and channels:

- ``chat:messages`` / ``chat:room-notifications``: pub/sub, one subscriber per instance;
- ``chat:history:<room>``: the room's capped stream, appended by `APPEND_LUA` together
  with the publish, so stream order is delivery order on every instance;
- ``chat:rooms``: sorted set of rooms by creation time;
- ``chat:room-activity``: sorted set of rooms by their last message, join or emptying, so
  the janitor finds idle rooms (`CHAT_ROOM_TTL`) without scanning every room;
- ``chat:history-trimmed:<room>``: set once the stream has lost entries to the cap
  (Redis 6.2 cannot tell which IDs a trim removed; see `history.has_gap`);
- ``chat:state:<room>``: hash message id -> the latest state of a message that was edited or
  reacted to (JSON: ``text``, ``edited_ts``, ``reactions``, ``edits``), and
  ``chat:state-index:<room>``: the same ids scored by their time, so that the change script
  drops the state of messages the stream has trimmed away;
- ``chat:read:<room>``: hash user name -> the id that user has read the room up to;
- ``chat:members:<room>``: hash ``<node>|<session>`` -> user name;
- ``chat:sent:<room>:<len(user)>:<user><client_id>``: the id a client_id was stored under,
  expiring after `CHAT_DEDUPE_SECONDS` (G8; the length prefix keeps user and id apart);
- ``chat:instances``: sorted set of live nodes by last heartbeat (ms), and
  ``chat:instance-rooms:<node>``: hash room -> how many of the node's members are in it,
  so that any instance can clear the members of a node that died without saying goodbye,
  and so that it shrinks again as members leave.

Every write that must not interleave with another runs as one script.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ClusterError, RedisClusterUnreachableError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

MESSAGES = "chat:messages"
NOTIFICATIONS = "chat:room-notifications"
ROOMS = "chat:rooms"
ACTIVITY = "chat:room-activity"
INSTANCES = "chat:instances"

# Errors that mean "Redis cannot be reached", as opposed to a bug or a bad command; on a
# cluster also a shard without a primary (a failover under way) or a slot in flight.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError, ClusterError,
               TryAgainError, SlotNotCoveredError, RedisClusterUnreachableError)


class Unavailable(Exception):
    """Redis cannot be reached: nothing was stored or delivered."""


def stop_if_cancelled() -> None:
    """Raise CancelledError when the running task was asked to stop.

    For loops that run until cancelled, before they sleep: a cancellation that lands
    inside a redis-py command may be swallowed there (8.2 does, now and then), and the
    loop would go on for ever, holding up the shutdown.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def history_key(room: str) -> str:
    """The stream that holds a room's messages."""
    return f"chat:history:{room}"


def trimmed_key(room: str) -> str:
    """The flag set once a room's stream has been trimmed."""
    return f"chat:history-trimmed:{room}"


def state_key(room: str) -> str:
    """The hash of the latest state of a room's changed messages."""
    return f"chat:state:{room}"


def state_index_key(room: str) -> str:
    """The sorted set of a room's changed message ids, by their time (for trimming)."""
    return f"chat:state-index:{room}"


def read_key(room: str) -> str:
    """The hash of every user's read marker in a room."""
    return f"chat:read:{room}"


def members_key(room: str) -> str:
    """The hash of who is in a room, on every instance."""
    return f"chat:members:{room}"


def node_rooms_key(node: str) -> str:
    """The hash room -> member count of ``node``'s members."""
    return f"chat:instance-rooms:{node}"


def sent_key(room: str, user: str, client_id: str) -> str:
    """Where the id of ``user``'s message ``client_id`` in ``room`` is remembered (G8)."""
    return f"chat:sent:{room}:{len(user)}:{user}{client_id}"


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


# Every script reads the Redis clock, so deadlines and activity times are one clock.
_NOW = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# What the scripts answer besides an id (a refused change stores and publishes nothing).
STORED, DUPLICATE, NOT_FOUND, FORBIDDEN, TOO_MANY_EMOJI = range(5)

# A stream entry is a message unless its data starts like a change's (protocol.CHANGE_PREFIX);
# `data` is always an entry's first field.
_IS_MESSAGE = """
local function is_message(entry) return string.sub(entry[2][2], 1, 8) ~= '{"type":' end
"""

# Stream ids compared as (ms, seq) pairs, for the scripts that order ids themselves.
_OLDER = """
local function older(a, b)  -- stream ids compared as (ms, seq)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if am ~= bm then return tonumber(am) < tonumber(bm) end
  return tonumber(as) < tonumber(bs)
end
"""

# Append and publish in one atomic step (G1's order), unless the same user already sent
# this client_id to this room (G8: answer with the first id, store and publish nothing).
# A script that only runs after its deadline (Redis was frozen, the sender already told
# `unavailable`) does nothing, so `unavailable` always means "neither stored nor sent".
# A reply must answer a message the stream still holds. In token mode the entry also keeps
# its author's `sub` (field `author`, never served), which edits and deletes are checked against.
# A text with an `@` is searched for `@name` of each member of the room (a name followed by
# the end or by a character that cannot continue a name: "@Al" is not "@Alice"); the names
# found go into the message as `mentions`. The members are only read when there is an `@`.
# The origin goes last in the payload so that subscribers can cut it off without parsing.
# KEYS: stream, trimmed flag, channel, sent key (the stream again for none), activity, members
# ARGV: maxlen, data JSON, origin JSON, deadline ms, dedupe seconds, room, reply_to id or '',
#       author or '', the text when it has an '@' (else ''), its word map (protocol.word_map)
APPEND_LUA = _NOW + _IS_MESSAGE + """
if now > tonumber(ARGV[4]) then return false end
if KEYS[4] ~= KEYS[1] then
  local first = redis.call('GET', KEYS[4])
  if first then return {first, 1} end
end
if ARGV[7] ~= '' then
  local target = redis.call('XRANGE', KEYS[1], ARGV[7], ARGV[7])
  if #target == 0 or not is_message(target[1]) then return {'', 2} end
end
local data = ARGV[2]
if ARGV[9] ~= '' then
  local text, found, seen = ARGV[9], {}, {}
  for _, name in ipairs(redis.call('HVALS', KEYS[6])) do
    if not seen[name] then
      seen[name] = true
      local from = 1
      while true do
        local i, j = string.find(text, '@' .. name, from, true)
        if not i then break end
        -- ARGV[10] says, for each byte of the text, whether a character that continues a name
        -- (a letter, digit or _, in any script: Python knows Unicode, Lua does not) starts there
        if string.sub(ARGV[10], j + 1, j + 1) ~= 'w' then
          found[#found + 1] = name
          break
        end
        from = i + 1
      end
    end
  end
  if #found > 0 then
    table.sort(found)
    data = string.sub(data, 1, -2) .. ',"mentions":' .. cjson.encode(found) .. '}'
  end
end
local before = redis.call('XLEN', KEYS[1])
local id
if ARGV[8] == '' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'data', data)
else
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'data', data, 'author', ARGV[8])
end
if redis.call('XLEN', KEYS[1]) <= before then redis.call('SET', KEYS[2], '1') end
if KEYS[4] ~= KEYS[1] then redis.call('SET', KEYS[4], id, 'EX', ARGV[5]) end
redis.call('ZADD', KEYS[5], now, ARGV[6])
redis.call('PUBLISH', KEYS[3], '{"id":"' .. id .. '",' .. string.sub(data, 2, -2) .. ',"origin":' .. ARGV[3] .. '}')
return {id, 0}
"""

# A user's read marker in a room moves forward only, and never past the room's newest entry
# (a marker from the future would hide every later message's unread count); when it moves,
# every instance hears of it, so every other connection of that user (tabs, devices) follows.
# Returns the marker kept (false: none, the room has no entry).
# KEYS: read markers, stream, notifications   ARGV: user, id, room, user JSON, origin JSON, session JSON
READ_LUA = _OLDER + """
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if not newest then return false end
local id = ARGV[2]
if older(newest[1], id) then id = newest[1] end
local kept = redis.call('HGET', KEYS[1], ARGV[1])
if kept and not older(kept, id) then return kept end
redis.call('HSET', KEYS[1], ARGV[1], id)
redis.call('PUBLISH', KEYS[3], '{"type":"read","room":"' .. ARGV[3] .. '","user":' .. ARGV[4] .. ',"id":"' .. id .. '","session":' .. ARGV[6] .. ',"origin":' .. ARGV[5] .. '}')
return id
"""

# The archive's trim (docs/archive.md): with an archive, the append scripts cap a stream at
# CHAT_HISTORY_MAXLEN + CHAT_ARCHIVE_BACKLOG only, and the archiver trims it back to
# CHAT_HISTORY_MAXLEN after each batch it wrote, never past an entry it has not taken: the
# group's oldest pending entry, or the first it has not read. Only when a stream is a
# hundred entries over, so that the read of where MAXLEN falls is paid once per hundred.
# KEYS: stream, trimmed flag   ARGV: maxlen, group   Returns the entries removed.
ARCHIVE_TRIM_LUA = _OLDER + """
local maxlen = tonumber(ARGV[1])
if redis.call('XLEN', KEYS[1]) <= maxlen + 100 then return 0 end
local keep = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', maxlen)
local cut = keep[#keep][1]
local limit
local pending = redis.call('XPENDING', KEYS[1], ARGV[2])
if pending[1] > 0 then
  limit = pending[2]
else
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, delivered
    for i = 1, #group, 2 do
      if group[i] == 'name' then name = group[i + 1] end
      if group[i] == 'last-delivered-id' then delivered = group[i + 1] end
    end
    if name == ARGV[2] then
      local ms, seq = string.match(delivered, '^(%d+)-(%d+)$')
      limit = ms .. '-' .. (tonumber(seq) + 1)
    end
  end
end
if not limit then return 0 end
if older(limit, cut) then cut = limit end
local removed = redis.call('XTRIM', KEYS[1], 'MINID', cut)
if removed > 0 then redis.call('SET', KEYS[2], '1') end
return removed
"""

# One change of a stored message (edit, delete, react), as one entry of the room's stream
# stored and published in one step like a message, so changes keep G1's order among the
# messages, and `since` and catch-up replay them. The message's latest state goes to the
# state hash in the same step. A delete removes every copy of the text: the message's entry,
# its edits' entries (their ids are in its state) and its state; the delete's own entry holds
# only the id. State of messages the stream trimmed away is dropped here (the stream cannot
# say which ids a trim removed; the index can: ids are times). A resent client_id answers
# with the first change's id, as for messages (G8).
# KEYS: stream, trimmed flag, channel, sent key (the stream again for none), activity, state, state index
# ARGV: maxlen, data JSON, origin JSON, deadline ms, dedupe seconds, room, kind
#       ('edit' | 'delete' | 'react'), message id, author ('' in open mode: the user name
#       decides), user, text | emoji, edited_ts | on ('1' | '0'), most emoji per message
CHANGE_LUA = _NOW + _IS_MESSAGE + _OLDER + """
local function ms_of(id) return tonumber(string.match(id, '^%d+')) end
if now > tonumber(ARGV[4]) then return false end
if KEYS[4] ~= KEYS[1] then
  local first = redis.call('GET', KEYS[4])
  if first then return {first, 1} end
end
local target = ARGV[8]
local found = redis.call('XRANGE', KEYS[1], target, target)
if #found == 0 or not is_message(found[1]) then return {'', 2} end
local kind = ARGV[7]
if kind ~= 'react' then
  local fields = found[1][2]
  if ARGV[9] ~= '' then
    local author
    for i = 3, #fields, 2 do if fields[i] == 'author' then author = fields[i + 1] end end
    if author ~= ARGV[9] then return {'', 3} end
  elseif cjson.decode(fields[2]).user ~= ARGV[10] then
    return {'', 3}
  end
end
local raw = redis.call('HGET', KEYS[6], target)
local state = raw and cjson.decode(raw) or {}
if kind == 'react' then
  local reactions = state.reactions or {}
  local users = reactions[ARGV[11]]
  if ARGV[12] == '1' then
    if not users then
      local n = 0
      for _ in pairs(reactions) do n = n + 1 end
      if n >= tonumber(ARGV[13]) then return {'', 4} end
      users = {}
      reactions[ARGV[11]] = users
    end
    local has = false
    for _, u in ipairs(users) do if u == ARGV[10] then has = true end end
    if not has then users[#users + 1] = ARGV[10] end
  elseif users then
    for i, u in ipairs(users) do
      if u == ARGV[10] then table.remove(users, i) break end
    end
    if #users == 0 then reactions[ARGV[11]] = nil end
  end
  state.reactions = next(reactions) and reactions or nil
end
local before = redis.call('XLEN', KEYS[1])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[2])
if redis.call('XLEN', KEYS[1]) <= before then redis.call('SET', KEYS[2], '1') end
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1][1]
if kind == 'delete' then
  redis.call('XDEL', KEYS[1], target, unpack(state.edits or {}))
  redis.call('HDEL', KEYS[6], target)
  redis.call('ZREM', KEYS[7], target)
else
  if kind == 'edit' then
    state.text = ARGV[11]
    state.edited_ts = tonumber(ARGV[12])
    local edits = {}
    for _, e in ipairs(state.edits or {}) do
      if not older(e, oldest) then edits[#edits + 1] = e end  -- the trimmed ones are gone already
    end
    edits[#edits + 1] = id
    state.edits = edits
  end
  if next(state) then
    redis.call('HSET', KEYS[6], target, cjson.encode(state))
    redis.call('ZADD', KEYS[7], ms_of(target), target)
  else
    redis.call('HDEL', KEYS[6], target)
    redis.call('ZREM', KEYS[7], target)
  end
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', '(' .. ms_of(oldest), 'LIMIT', 0, 1000)
if #stale > 0 then
  redis.call('HDEL', KEYS[6], unpack(stale))
  redis.call('ZREM', KEYS[7], unpack(stale))
end
if KEYS[4] ~= KEYS[1] then redis.call('SET', KEYS[4], id, 'EX', ARGV[5]) end
redis.call('ZADD', KEYS[5], now, ARGV[6])
redis.call('PUBLISH', KEYS[3], '{"change_id":"' .. id .. '",' .. string.sub(ARGV[2], 2, -2) .. ',"origin":' .. ARGV[3] .. '}')
return {id, 0}
"""

# The newest `n` messages at or below `top` ('+' or '(' .. id), newest first, passing over
# change entries, and the id of the newest entry of any kind (false: none). Rooms without
# changes read one batch, as before changes existed.
_NEWEST_MESSAGES = """
local function newest_messages(stream, top, n)
  local out = {}
  local newest = false
  local want = math.max(n, 1)
  while #out < n or newest == false do
    local batch = redis.call('XREVRANGE', stream, top, '-', 'COUNT', want)
    if #batch == 0 then break end
    if newest == false then newest = batch[1][1] end
    for _, e in ipairs(batch) do
      if #out < n and is_message(e) then out[#out + 1] = e end
    end
    if #batch < want then break end
    top = '(' .. batch[#batch][1]
  end
  return out, newest
end
-- The state hash's entries for `entries` (false for a message never changed).
local function states_of(key, entries)
  if #entries == 0 or redis.call('EXISTS', key) == 0 then return {} end
  local ids = {}
  for i, e in ipairs(entries) do ids[i] = e[1] end
  return redis.call('HMGET', key, unpack(ids))
end
"""

# A page of REST history: the newest ARGV[3] messages below ARGV[2], with their states, in
# one step so that no change falls between the two reads, and the stream's oldest entry (where
# an archive takes over). False when the room does not exist.
# KEYS: rooms, stream, state   ARGV: room, top ('+' or '(' .. id), count
HISTORY_LUA = _IS_MESSAGE + _NEWEST_MESSAGES + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return false end
local entries = newest_messages(KEYS[2], ARGV[2], tonumber(ARGV[3]))
local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
return {entries, states_of(KEYS[3], entries), oldest and oldest[1] or false}
"""

# A join in one step: create the room if the deployment has room for it (CHAT_MAX_ROOMS,
# checked here so two instances cannot both create the last one), add the member, read the
# history and the members, and announce what is new. Returns false when the room would be
# one too many; else {created, member names (each once, only those on live nodes: a dead
# node's members are not shown while they wait for the janitor), entries, oldest, trimmed,
# newest id (of any entry), states of the entries, the user's read marker}. Reading the members and adding this one
# in one script means a leave of the same name cannot interleave, so `user_joined` is never
# lost.
# KEYS: rooms, members, node rooms (members again: none), stream, trimmed flag, instances,
#       activity, notifications, state, read markers
# ARGV: room, field, user, max rooms, 'last'|'since', count|since id, alive cutoff ms,
#       user JSON, session JSON, origin JSON, dead nodes ('|' between; a cluster's, below)
_JOIN = _NOW + _IS_MESSAGE + _NEWEST_MESSAGES + """
local created = 0
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return false end
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  created = 1
  ANNOUNCE
end
local before = redis.call('HGETALL', KEYS[2])
if redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) == 1 and KEYS[3] ~= KEYS[2] then
  redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
end
redis.call('ZADD', KEYS[7], now, ARGV[1])
LIVE
local known = false
local seen = {[ARGV[3]] = true}
local names = {ARGV[3]}
for i = 1, #before, 2 do
  local name = before[i + 1]
  if name == ARGV[3] then known = true end
  if not seen[name] and alive(string.match(before[i], '^[^|]*')) then
    seen[name] = true
    names[#names + 1] = name
  end
end
if not known then
  redis.call('PUBLISH', KEYS[8], '{"type":"user_joined","room":"' .. ARGV[1] .. '","user":' .. ARGV[8] .. ',"ts":' .. now .. ',"session":' .. ARGV[9] .. ',"origin":' .. ARGV[10] .. '}')
end
local entries
local oldest = {}
local newest = false
local trimmed = 0
if ARGV[5] == 'last' then
  entries, newest = newest_messages(KEYS[4], '+', tonumber(ARGV[6]))
else
  entries = redis.call('XRANGE', KEYS[4], '(' .. ARGV[6], '+')
  oldest = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', 1)
  trimmed = redis.call('EXISTS', KEYS[5])
  if #entries == 0 then
    local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
    if #last > 0 then newest = last[1][1] end
  else
    newest = entries[#entries][1]
  end
end
return {created, names, entries, oldest, trimmed, newest, states_of(KEYS[9], entries),
        redis.call('HGET', KEYS[10], ARGV[3])}
"""
JOIN_LUA = _JOIN.replace("ANNOUNCE", """redis.call('PUBLISH', KEYS[8], '{"type":"room_created","room":"' .. ARGV[1] .. '","ts":' .. now .. ',"origin":' .. ARGV[10] .. '}')""").replace(
    "LIVE", """local live = {[string.match(ARGV[2], '^[^|]*')] = true}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], ARGV[7], '+inf')) do live[node] = true end
local function alive(node) return live[node] end""")

# Remove one member; announce `user_left` only when that name has no other connection in
# the room, and only once (HDEL's count tells which caller removed it). A room left empty
# starts its idle time now.
# KEYS: members, notifications, node rooms (members again: none), activity
# ARGV: field, user, payload, room
LEAVE_LUA = _NOW + """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if KEYS[3] ~= KEYS[1] and redis.call('HINCRBY', KEYS[3], ARGV[4], -1) <= 0 then redis.call('HDEL', KEYS[3], ARGV[4]) end
local names = redis.call('HVALS', KEYS[1])
if #names == 0 then redis.call('ZADD', KEYS[4], now, ARGV[4]) end
for _, name in ipairs(names) do
  if name == ARGV[2] then return 1 end
end
redis.call('PUBLISH', KEYS[2], ARGV[3])
return 2
"""

# Remove a room that has had no member and no message since ARGV[1] (ms), with every key
# it had, and tell every instance. Checked again here: a join or a message may have come
# between the janitor's read and this script. A room that still has members is not idle.
# KEYS: rooms, activity, members, stream, trimmed flag, notifications, state, state index, read markers
# ARGV: cutoff, room, origin JSON
EXPIRE_LUA = _NOW + """
local last = redis.call('ZSCORE', KEYS[2], ARGV[2])
if last and tonumber(last) > tonumber(ARGV[1]) then return 0 end
if redis.call('HLEN', KEYS[3]) > 0 then
  redis.call('ZADD', KEYS[2], now, ARGV[2])  -- in use: not idle, look again a TTL later
  return 0
end
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[7], KEYS[8], KEYS[9])
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('PUBLISH', KEYS[6], '{"type":"room_removed","room":"' .. ARGV[2] .. '","ts":' .. now .. ',"origin":' .. ARGV[3] .. '}')
return 1
"""

# ---------------------------------------------------------------- Redis Cluster (section 14)
# On a cluster a script may only touch keys of one hash slot. Every key of a room carries the
# room as hash tag (`Layout`), so the room's scripts above run unchanged on its shard, with
# these differences: they publish with SPUBLISH on the room's own channel (in the same slot),
# activity and the room's record are per-room sorted sets (one member: the room), and what
# spans rooms (the room list and its cap, `room_created`, `room_removed`) is done on the
# deployment's own slot by the scripts below, with classic PUBLISH, which reaches every node.


def sharded(script: str) -> str:
    """A room script as it runs on a cluster: its publishes go to the room's shard channel."""
    return script.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")


# The room's record was made by CREATE_ROOM_LUA (ARGV[4] = '1') or must be (ARGV[4] = '0':
# answer false, and the caller creates the room first). The script cannot read the instances'
# heartbeats (another slot): the nodes found dead at this instance's last heartbeat come in
# ARGV[11], and any other node counts as alive (one started since then, too).
JOIN_SHARDED_LUA = sharded(_JOIN.replace("ANNOUNCE", "").replace("LIVE", """local dead = {}
for node in string.gmatch(ARGV[11], '[^|]+') do dead[node] = true end
local function alive(node) return not dead[node] end"""))

# Create a room for the whole deployment, within CHAT_MAX_ROOMS, and tell every instance.
# A room already listed whose record had gone (an expiry was between its two steps) is
# stamped anew, so that the expiry's second step (REMOVE_ROOM_LUA) leaves it alone.
# KEYS: rooms, activity   ARGV: room, max rooms, origin JSON, notifications channel
# Returns 1 (created), 0 (it was there), false (one too many).
CREATE_ROOM_LUA = _NOW + """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
  return 0
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return false end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PUBLISH', ARGV[4], '{"type":"room_created","room":"' .. ARGV[1] .. '","ts":' .. now .. ',"origin":' .. ARGV[3] .. '}')
return 1
"""

# An expiry's first step, on the room's shard: remove every key of a room with no member and
# no activity since ARGV[1]. Returns 0 when it is gone, else the room's last activity (ms),
# which the janitor files in the deployment's activity index to look again a TTL later.
# KEYS: record, activity, members, stream, trimmed flag, state, state index, read markers
# ARGV: cutoff, room
EXPIRE_SHARD_LUA = _NOW + """
local last = redis.call('ZSCORE', KEYS[2], ARGV[2])
if last and tonumber(last) > tonumber(ARGV[1]) then return tonumber(last) end
if redis.call('HLEN', KEYS[3]) > 0 then
  redis.call('ZADD', KEYS[2], now, ARGV[2])  -- in use: not idle
  return now
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
return 0
"""

# An expiry's second step, on the deployment's slot: unlist the room and tell every
# instance, unless it was created again since the cutoff (CREATE_ROOM_LUA stamped it).
# KEYS: rooms, activity   ARGV: cutoff, room, origin JSON, notifications channel
REMOVE_ROOM_LUA = _NOW + """
local created = redis.call('ZSCORE', KEYS[1], ARGV[2])
if created and tonumber(created) > tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[2], created, ARGV[2])
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[2])
if not created then return 0 end
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[4], '{"type":"room_removed","room":"' .. ARGV[2] .. '","ts":' .. now .. ',"origin":' .. ARGV[3] .. '}')
return 1
"""


class Layout:
    """The names of one deployment's keys and channels, for one Redis or for a cluster.

    One Redis: section 2's names exactly (the module's constants and functions). A cluster:
    a room's keys carry ``{room}`` as hash tag, so they share its slot; its messages and
    member events go over the shard channel ``chat:room:{room}``; the deployment's own keys
    share the tag ``{all}``; room events for everyone stay on ``chat:room-notifications``.
    """

    __slots__ = ("cluster", "rooms", "activity_index", "instances", "notifications")

    def __init__(self, cluster: bool) -> None:
        self.cluster = cluster
        self.rooms = "chat:{all}:rooms" if cluster else ROOMS
        self.activity_index = "chat:{all}:room-activity" if cluster else ACTIVITY
        self.instances = "chat:{all}:instances" if cluster else INSTANCES
        self.notifications = NOTIFICATIONS

    def _tag(self, room: str) -> str:
        return f"{{{room}}}" if self.cluster else room

    def history(self, room: str) -> str:
        """The room's stream."""
        return history_key(self._tag(room))

    def trimmed(self, room: str) -> str:
        """The room's trimmed flag."""
        return trimmed_key(self._tag(room))

    def state(self, room: str) -> str:
        """The room's hash of changed messages."""
        return state_key(self._tag(room))

    def state_index(self, room: str) -> str:
        """The room's changed message ids by time."""
        return state_index_key(self._tag(room))

    def read(self, room: str) -> str:
        """The room's read markers."""
        return read_key(self._tag(room))

    def members(self, room: str) -> str:
        """The room's members."""
        return members_key(self._tag(room))

    def sent(self, room: str, user: str, client_id: str) -> str:
        """Where a client_id's message id is remembered (G8)."""
        return sent_key(self._tag(room), user, client_id)

    def record(self, room: str) -> str:
        """The sorted set that says the room exists: the room list, or on a cluster the room's own."""
        return f"chat:created:{{{room}}}" if self.cluster else ROOMS

    def activity(self, room: str) -> str:
        """The sorted set a room's scripts stamp with its last activity."""
        return f"chat:activity:{{{room}}}" if self.cluster else ACTIVITY

    def channel(self, room: str) -> str:
        """Where the room's messages and changes are published."""
        return f"chat:room:{{{room}}}" if self.cluster else MESSAGES

    def events(self, room: str) -> str:
        """Where the room's member events (joined, left, typing, read) are published."""
        return f"chat:room:{{{room}}}" if self.cluster else NOTIFICATIONS

    def node_rooms(self, node: str) -> str:
        """The rooms ``node`` has members in."""
        return f"chat:{{all}}:instance-rooms:{node}" if self.cluster else node_rooms_key(node)


def room_of_channel(channel: str) -> str | None:
    """The room of a cluster's shard channel ``chat:room:{room}`` (None for another channel)."""
    if channel.startswith("chat:room:{") and channel.endswith("}"):
        return channel[11:-1]
    return None


# The command client's connections to Redis, and how long a command may wait for one.
POOL_SIZE = 50
POOL_WAIT = 2.0
# On a cluster, connections to each node beyond POOL_SIZE, for pipelines (joins in a burst,
# the janitor, the archiver): a single command waits for one of the POOL_SIZE.
CLUSTER_PIPELINE_CONNECTIONS = 16


SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed ``redis+sentinel://[[user]:password@]host:port[,host:port...]/db/service_name``."""

    sentinels: tuple[tuple[str, int], ...]
    service: str = "mymaster"
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse python-socketio's Sentinel URL format; raise ValueError on anything else."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a sentinel must be host:port, got {item!r}")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if len(path) > 2 or (path and not path[0].isdigit()):
        raise ValueError("the path must be /db/service_name")
    return SentinelUrl(tuple(sentinels), path[1] if len(path) > 1 else "mymaster", int(path[0]) if path else 0,
                       unquote(user) or None, unquote(password) or None)


@dataclass(frozen=True)
class ClusterUrl:
    """A parsed ``redis+cluster://[[user]:password@]host:port[,host:port...]``: some of its nodes."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None


def is_cluster_url(url: str) -> bool:
    """True for a ``redis+cluster://`` URL (section 14)."""
    return url.lower().startswith(CLUSTER_SCHEME + "://")


def parse_cluster_url(url: str) -> ClusterUrl:
    """Parse a ``redis+cluster://`` URL; raise ValueError on anything else."""
    parts = urlsplit(url)
    if parts.scheme.lower() != CLUSTER_SCHEME:
        raise ValueError(f"not a {CLUSTER_SCHEME}:// URL")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    nodes = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a node must be host:port, got {item!r}")
        nodes.append((host.strip("[]"), int(port)))
    if parts.path.strip("/"):
        raise ValueError("a cluster has no database number: no path after the nodes")
    return ClusterUrl(tuple(nodes), unquote(user) or None, unquote(password) or None)


class _WaitingCluster(RedisCluster):
    """A `RedisCluster` whose commands wait for a connection when every one is busy.

    redis-py's cluster pool has no blocking mode: past ``max_connections`` to a node a command
    fails at once (`MaxConnectionsError`), which under a burst would tell senders
    `unavailable` while Redis is fine. So at most ``waiting`` commands run at a time (fewer
    than the connections to any one node), and the others wait their turn, as the bounded,
    waiting pool of a single Redis does; pipelines keep the connections left over.
    """

    def __init__(self, *args: Any, waiting: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(waiting)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Run one command once a turn is free."""
        async with self._turns:
            return await super().execute_command(*args, **kwargs)


def node_client(conf: ClusterUrl, host: str, port: int) -> Redis:
    """A client of one cluster node for pub/sub, without retries: a broken link must raise (see `shards`)."""
    return Redis(host=host, port=port, username=conf.username, password=conf.password, decode_responses=True,
                 socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0), **DRIVER_INFO)


def _driver_info() -> dict[str, Any]:
    # Told once: without it redis-py looks its own version up in the installed packages'
    # metadata for every new connection (milliseconds each, when a burst of joins grows the
    # pool, or a reconnect storm).
    try:
        from redis.driver_info import DriverInfo  # newer redis-py; older ones take lib_version
    except ImportError:
        return {"lib_version": redis.__version__}
    return {"driver_info": DriverInfo(lib_version=redis.__version__)}


DRIVER_INFO = _driver_info()


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool (it asks the sentinels where the primary is on each connect) with
    the bounded, waiting behaviour of `BlockingConnectionPool`."""


def make_client(url: str, socket_timeout: float | None, pool_size: int | None = None,
                retries: int = 1) -> Redis:
    """A Redis client for ``url`` that fails fast while Redis is down (a call never hangs on a dead Redis).

    ``retries`` quick retries heal a pooled connection broken by a Redis restart; more
    would only make `unavailable` slow. The subscriber takes none: a retry there would
    reconnect and resubscribe behind its back (see `subscriber`). A ``redis+sentinel://``
    URL gives a client that finds the primary through the sentinels on every connect, so
    it follows a failover (a demoted primary's READONLY counts as a broken connection).
    """
    options: dict[str, Any] = dict(
        decode_responses=True,
        socket_connect_timeout=1.0,
        socket_timeout=socket_timeout,
        retry=Retry(NoBackoff(), retries, (RedisConnectionError,)),
        **DRIVER_INFO,
    )
    if is_cluster_url(url):
        nodes = parse_cluster_url(url)
        # Its own retries stay: they follow MOVED and ASK, and read the slot map again when a
        # node fails (a failover, a migration); a command that still fails is `unavailable`.
        waiting = pool_size or POOL_SIZE
        return _WaitingCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes.nodes],  # type: ignore[return-value]
                               username=nodes.username, password=nodes.password, decode_responses=True,
                               socket_connect_timeout=1.0, socket_timeout=socket_timeout,
                               max_connections=waiting + CLUSTER_PIPELINE_CONNECTIONS, waiting=waiting,
                               **DRIVER_INFO)
    if url.startswith(SENTINEL_SCHEME + "://"):
        conf = parse_sentinel_url(url)
        auth = {"username": conf.username, "password": conf.password}
        sentinel = Sentinel(list(conf.sentinels), min_other_sentinels=0,
                            sentinel_kwargs={**auth, "socket_connect_timeout": 1.0, "socket_timeout": 1.0},
                            db=conf.db, **auth)
        if pool_size is None:
            return sentinel.master_for(conf.service, **options)
        return sentinel.master_for(conf.service, connection_pool_class=_BlockingSentinelPool,
                                   max_connections=pool_size, timeout=POOL_WAIT, **options)
    if pool_size is None:
        return Redis.from_url(url, **options)
    # A bounded pool: bursts (hundreds of clients leaving at once) wait for a connection
    # instead of opening one each, which then stayed open for ever.
    return Redis.from_pool(BlockingConnectionPool.from_url(url, max_connections=pool_size, timeout=POOL_WAIT,
                                                           **options))
