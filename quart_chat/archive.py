"""The archive in PostgreSQL (docs/archive.md): every stored message and change, in its
latest state, for ever (or ``CHAT_ARCHIVE_DAYS``), and full-text search over it.

This module is PostgreSQL's side alone: the schema and its migrations, writing a batch of
stream entries, and the reads (history pages past the stream, a join from far back,
search). `archiver` feeds it from Redis. Writes are keyed by room and stream id and made
order-independent, so an entry written twice, or two archivers writing a room's entries in
either order, leave the same rows:

- a message row is inserted once; an edit or delete that came first left a placeholder,
  whose edited text or deletion the message's own insert does not undo;
- an edit applies only over an older edit (``edit_ms``, ``edit_seq``);
- a reaction is one row per message, emoji and user, the newest change winning;
- a delete clears the text, name and reactions for good.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from .protocol import StreamId, dumps, format_stream_id, is_change, parse_stream_id

log = logging.getLogger("quart_chat.archive")

MIGRATIONS = "migrations"
# Different instances starting at once migrate one after the other (pg_advisory_lock).
MIGRATION_LOCK = 0x71C4A7


# ---------------------------------------------------------------- entries, as rows
@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry, classified: ``kind`` is ``message`` or a change frame's type."""

    room: str
    id: StreamId
    kind: str
    fields: dict[str, Any]


def parse_entry(room: str, sid: str, data: str | None) -> Entry | None:
    """A stream entry as the archive writes it; None for one there is nothing to write of
    (removed by a delete since it was read, or not one of ours)."""
    parsed = parse_stream_id(sid)
    if data is None or parsed is None:
        return None
    try:
        fields = orjson.loads(data)
    except ValueError:
        return None
    if not isinstance(fields, dict):
        return None
    if is_change(data):
        target = parse_stream_id(str(fields.get("id", "")))
        if target is None or fields.get("type") not in ("message_edited", "message_deleted", "reaction"):
            return None
        fields["target"] = target
        return Entry(room, parsed, fields["type"], fields)
    return Entry(room, parsed, "message", fields)


def message_object(row: Any, reactions: dict[str, list[str]] | None) -> dict[str, Any]:
    """A message row as the message object clients get (docs/protocol.md, "The message object")."""
    out: dict[str, Any] = {"id": f"{row['ms']}-{row['seq']}", "room": row["room"], "user": row["username"],
                           "text": row["body"], "ts": row["ts"]}
    for name in ("client_id", "reply_to"):
        if row[name] is not None:
            out[name] = row[name]
    if row["mentions"]:
        out["mentions"] = list(row["mentions"])
    if row["edited_ts"] is not None:
        out["edited_ts"] = row["edited_ts"]
    if reactions:
        out["reactions"] = reactions
    return out


# ---------------------------------------------------------------- statements
_INSERT_MESSAGE = """
INSERT INTO chat_messages AS m (room, ms, seq, username, body, ts, client_id, reply_to, mentions)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (room, ms, seq) DO UPDATE SET
    username = EXCLUDED.username, ts = EXCLUDED.ts, client_id = EXCLUDED.client_id,
    reply_to = EXCLUDED.reply_to, mentions = EXCLUDED.mentions,
    body = CASE WHEN m.edit_ms IS NULL THEN EXCLUDED.body ELSE m.body END
WHERE NOT m.deleted
"""
_EDIT = """
INSERT INTO chat_messages AS m (room, ms, seq, body, edited_ts, edit_ms, edit_seq)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (room, ms, seq) DO UPDATE SET
    body = EXCLUDED.body, edited_ts = EXCLUDED.edited_ts, edit_ms = EXCLUDED.edit_ms, edit_seq = EXCLUDED.edit_seq
WHERE NOT m.deleted AND (m.edit_ms IS NULL OR (m.edit_ms, m.edit_seq) < (EXCLUDED.edit_ms, EXCLUDED.edit_seq))
"""
_DELETE = """
INSERT INTO chat_messages AS m (room, ms, seq, deleted) VALUES ($1, $2, $3, true)
ON CONFLICT (room, ms, seq) DO UPDATE SET
    deleted = true, username = NULL, body = NULL, client_id = NULL, reply_to = NULL, mentions = NULL,
    edited_ts = NULL
"""
_DELETE_REACTIONS = "DELETE FROM chat_reactions WHERE room = $1 AND ms = $2 AND seq = $3"
_REACT = """
INSERT INTO chat_reactions AS r (room, ms, seq, emoji, username, active, change_ms, change_seq)
SELECT $1, $2, $3, $4, $5, $6, $7, $8
WHERE NOT EXISTS (SELECT 1 FROM chat_messages WHERE room = $1 AND ms = $2 AND seq = $3 AND deleted)
ON CONFLICT (room, ms, seq, emoji, username) DO UPDATE SET
    active = EXCLUDED.active, change_ms = EXCLUDED.change_ms, change_seq = EXCLUDED.change_seq
WHERE (r.change_ms, r.change_seq) < (EXCLUDED.change_ms, EXCLUDED.change_seq)
"""
_CHANGE = """
INSERT INTO chat_changes (room, ms, seq, kind, target_ms, target_seq, emoji, username, active)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING
"""
# A room's hole moves up only: entries up to gap_upto may be missing from the archive.
_GAP = """
INSERT INTO chat_archive_rooms AS r VALUES ($1, $2, $3) ON CONFLICT (room) DO UPDATE SET
    gap_upto_ms = EXCLUDED.gap_upto_ms, gap_upto_seq = EXCLUDED.gap_upto_seq
WHERE (r.gap_upto_ms, r.gap_upto_seq) < (EXCLUDED.gap_upto_ms, EXCLUDED.gap_upto_seq)
"""
# Rows a reader may see: written whole (a placeholder has no ts yet) and not deleted.
_VISIBLE = "NOT deleted AND ts IS NOT NULL"
_COLUMNS = "room, ms, seq, username, body, ts, client_id, reply_to, mentions, edited_ts"


def _rows(entries: list[Entry]) -> dict[str, list[tuple[Any, ...]]]:
    """The statements' argument rows for a batch of entries (pure, for `Archive.write`)."""
    out: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for e in entries:
        f, (ms, seq) = e.fields, e.id
        if e.kind == "message":
            mentions = f.get("mentions") if isinstance(f.get("mentions"), list) else None
            out[_INSERT_MESSAGE].append((e.room, ms, seq, f.get("user"), f.get("text"), f.get("ts"),
                                         f.get("client_id"), f.get("reply_to"), mentions))
            continue
        tms, tseq = f["target"]
        out[_CHANGE].append((e.room, ms, seq, e.kind, tms, tseq, f.get("emoji"), f.get("user"), f.get("on")))
        if e.kind == "message_edited":
            out[_EDIT].append((e.room, tms, tseq, f.get("text"), f.get("edited_ts"), ms, seq))
        elif e.kind == "message_deleted":
            out[_DELETE].append((e.room, tms, tseq))
            out[_DELETE_REACTIONS].append((e.room, tms, tseq))
        else:
            out[_REACT].append((e.room, tms, tseq, f.get("emoji"), f.get("user"), bool(f.get("on")), ms, seq))
    return out


# Deletes go last within a batch: a reaction written after its message's delete is refused
# by _REACT's check, and one written before is removed by _DELETE_REACTIONS.
_ORDER = (_INSERT_MESSAGE, _EDIT, _REACT, _CHANGE, _DELETE, _DELETE_REACTIONS)


def migration_sql(language: str) -> list[tuple[int, str]]:
    """The migrations shipped with the package, ``(version, sql)`` in order."""
    folder = importlib.resources.files(__package__).joinpath(MIGRATIONS)
    out = []
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if item.name.endswith(".sql") and item.name[:4].isdigit():
            out.append((int(item.name[:4]), item.read_text().replace("{language}", language)))
    return out


class ArchiveDown(Exception):
    """PostgreSQL cannot be reached: nothing was read or written."""


class Archive:
    """The archive's connection pool and every statement run on it."""

    def __init__(self, url: str, language: str = "simple") -> None:
        self.url = url
        self.language = language
        self.pool: Any = None
        self._failures: tuple[type[BaseException], ...] = (OSError, TimeoutError)

    async def open(self) -> None:
        """Connect (a small pool) and bring the schema up to date."""
        import asyncpg  # only deployments with an archive load the driver

        # PostgreSQL away or going (refused, shutting down, a dropped connection); an error in
        # a statement (a bug, a missing right) is not one and keeps its own type.
        self._failures = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                          asyncpg.exceptions.OperatorInterventionError)
        # Bounded everywhere: a PostgreSQL that went away must fail a call, not hang it.
        self.pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4, command_timeout=30, timeout=5)
        await self.migrate()

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        """A pooled connection; PostgreSQL's failures come out as `ArchiveDown`."""
        if self.pool is None:
            raise ArchiveDown("the archive is not open yet")
        try:
            async with self.pool.acquire(timeout=10) as conn:
                yield conn
        except self._failures as err:
            raise ArchiveDown(f"{type(err).__name__}: {err}") from err

    async def close(self) -> None:
        """Close the pool (waiting a bounded time for queries in flight)."""
        if self.pool is not None:
            await self.pool.close()

    async def migrate(self) -> list[int]:
        """Apply the migrations this database lacks, one instance at a time; return their versions.

        A changed ``CHAT_ARCHIVE_LANGUAGE`` re-creates the search column (and its index) in
        the new language, in the same transaction.
        """
        applied = []
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS chat_schema ("
                               "version int PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())")
            await conn.execute("CREATE TABLE IF NOT EXISTS chat_settings (name text PRIMARY KEY, value text NOT NULL)")
            await conn.execute("SELECT $1::text::regconfig", self.language)  # a clear error if unknown
            done = {r["version"] for r in await conn.fetch("SELECT version FROM chat_schema")}
            for version, sql in migration_sql(self.language):
                if version not in done:
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO chat_schema (version) VALUES ($1)", version)
                    applied.append(version)
            was = await conn.fetchval("SELECT value FROM chat_settings WHERE name = 'language'")
            if was is not None and was != self.language and not applied:
                log.warning("CHAT_ARCHIVE_LANGUAGE changed from %s to %s: rebuilding the search index", was,
                            self.language)
                await conn.execute("ALTER TABLE chat_messages DROP COLUMN search")
                await conn.execute("ALTER TABLE chat_messages ADD COLUMN search tsvector GENERATED ALWAYS AS "
                                   f"(to_tsvector({_literal(self.language)}, coalesce(body, ''))) STORED")
                await conn.execute("CREATE INDEX chat_messages_search ON chat_messages USING gin (search)")
            await conn.execute("INSERT INTO chat_settings VALUES ('language', $1) "
                               "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value", self.language)
        return applied

    # ------------------------------------------------------------ writing
    async def write(self, entries: list[Entry]) -> int:
        """Write a batch of entries (any rooms) in one transaction; returns the rows written."""
        if not entries:
            return 0
        rows = _rows(entries)
        async with self._conn() as conn, conn.transaction():
            for statement in _ORDER:
                if rows.get(statement):
                    await conn.executemany(statement, rows[statement])
        return len(entries)

    async def note_gap(self, room: str, upto: StreamId) -> None:
        """Remember that entries of ``room`` up to ``upto`` may be missing."""
        async with self._conn() as conn:
            await conn.execute(
                _GAP, room, *upto)

    async def expire(self, cutoff_ms: int, batch: int = 5000) -> int:
        """Remove messages older than ``cutoff_ms`` (CHAT_ARCHIVE_DAYS), with their reactions
        and changes; the rooms they leave a hole in say so (`covers`). Returns rows removed."""
        removed = 0
        async with self._conn() as conn:
            while True:
                async with conn.transaction():
                    gone = await conn.fetch(
                        "DELETE FROM chat_messages WHERE ctid IN (SELECT ctid FROM chat_messages "
                        "WHERE ts < $1 OR (ts IS NULL AND ms < $1) LIMIT $2) RETURNING room, ms, seq", cutoff_ms, batch)
                    if not gone:
                        return removed
                    keys = ([r["room"] for r in gone], [r["ms"] for r in gone], [r["seq"] for r in gone])
                    await conn.execute("DELETE FROM chat_reactions r USING unnest($1::text[], $2::bigint[], "
                                       "$3::bigint[]) AS g(room, ms, seq) WHERE (r.room, r.ms, r.seq) = "
                                       "(g.room, g.ms, g.seq)", *keys)
                    await conn.execute("DELETE FROM chat_changes WHERE ms < $1", cutoff_ms)
                    newest: dict[str, tuple[int, int]] = {}
                    for r in gone:
                        newest[r["room"]] = max(newest.get(r["room"], (0, 0)), (r["ms"], r["seq"]))
                    for room, upto in newest.items():
                        await conn.execute(
                            _GAP, room, *upto)
                    removed += len(gone)

    # ------------------------------------------------------------ reading
    async def _with_reactions(self, conn: Any, room: str, rows: list[Any]) -> list[str]:
        """Rows as message objects' JSON, each with its reactions (one query for all)."""
        if not rows:
            return []
        reacted: dict[tuple[int, int], dict[str, list[str]]] = defaultdict(dict)
        for r in await conn.fetch(
                "SELECT ms, seq, emoji, username FROM chat_reactions WHERE room = $1 AND active AND "
                "(ms, seq) IN (SELECT * FROM unnest($2::bigint[], $3::bigint[])) ORDER BY change_ms, change_seq",
                room, [row["ms"] for row in rows], [row["seq"] for row in rows]):
            reacted[(r["ms"], r["seq"])].setdefault(r["emoji"], []).append(r["username"])
        return [dumps(message_object(row, reacted.get((row["ms"], row["seq"])))) for row in rows]

    async def before(self, room: str, below: StreamId, limit: int) -> tuple[list[str], bool]:
        """The newest ``limit`` messages older than ``below``, oldest first, and whether more exist."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM chat_messages WHERE room = $1 AND (ms, seq) < ($2, $3) AND {_VISIBLE} "
                "ORDER BY ms DESC, seq DESC LIMIT $4", room, *below, limit + 1)
            return await self._with_reactions(conn, room, rows[:limit][::-1]), len(rows) > limit

    async def between(self, room: str, since: StreamId, below: StreamId | None,
                      most: int) -> tuple[list[str], list[str], bool]:
        """What a join from ``since`` misses before the stream's oldest entry ``below``: the
        messages (latest state, oldest first: the newest ``most`` of them), the frames of the
        changes made since then to messages older than ``since`` (replayed after ``joined``),
        and whether older messages than those returned were left out."""
        top = below or (2**63 - 1, 0)
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM chat_messages WHERE room = $1 AND (ms, seq) > ($2, $3) "
                f"AND (ms, seq) < ($4, $5) AND {_VISIBLE} ORDER BY ms DESC, seq DESC LIMIT $6",
                room, *since, *top, most + 1)
            history = await self._with_reactions(conn, room, rows[:most][::-1])
            changes = await conn.fetch(
                "SELECT c.*, m.body, m.edited_ts, m.deleted FROM chat_changes c LEFT JOIN chat_messages m "
                "ON (m.room, m.ms, m.seq) = (c.room, c.target_ms, c.target_seq) WHERE c.room = $1 "
                "AND (c.ms, c.seq) > ($2, $3) AND (c.ms, c.seq) < ($4, $5) AND (c.target_ms, c.target_seq) <= ($2, $3) "
                "ORDER BY c.ms, c.seq", room, *since, *top)
        replays = [frame for c in changes if (frame := _replay_frame(room, c)) is not None]
        return history, replays, len(rows) > most

    async def covers(self, room: str, since: StreamId) -> bool:
        """Whether the archive holds every entry of ``room`` after ``since`` that the stream lost."""
        async with self._conn() as conn:
            gap = await conn.fetchrow("SELECT gap_upto_ms, gap_upto_seq FROM chat_archive_rooms WHERE room = $1",
                                      room)
        return gap is None or since >= (gap["gap_upto_ms"], gap["gap_upto_seq"])

    async def search(self, room: str, query: str, limit: int, before: StreamId | None) -> tuple[list[str], str | None]:
        """Messages of ``room`` matching ``query`` (web search syntax: words, "phrases",
        -word), newest first, and the ``before`` of the next page (None: the last)."""
        top = before or (2**63 - 1, 0)
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM chat_messages WHERE room = $1 AND (ms, seq) < ($2, $3) AND {_VISIBLE} "
                f"AND search @@ websearch_to_tsquery({_literal(self.language)}, $4) ORDER BY ms DESC, seq DESC "
                "LIMIT $5", room, *top, query, limit + 1)
            results = await self._with_reactions(conn, room, rows[:limit])
        more = len(rows) > limit
        return results, (format_stream_id((rows[limit - 1]["ms"], rows[limit - 1]["seq"])) if more else None)


def _replay_frame(room: str, c: Any) -> str | None:
    """The frame a logged change replays as: its effect as the archive holds it now."""
    target = f"{c['target_ms']}-{c['target_seq']}"
    change_id = f"{c['ms']}-{c['seq']}"
    if c["kind"] == "message_deleted" or c["deleted"]:
        return dumps({"change_id": change_id, "type": "message_deleted", "room": room, "id": target})
    if c["kind"] == "message_edited":
        if c["body"] is None:
            return None
        return dumps({"change_id": change_id, "type": "message_edited", "room": room, "id": target,
                      "text": c["body"], "edited_ts": c["edited_ts"]})
    return dumps({"change_id": change_id, "type": "reaction", "room": room, "id": target, "emoji": c["emoji"],
                  "user": c["username"], "on": bool(c["active"])})


def _literal(name: str) -> str:
    """A text search configuration's name as an SQL literal (config.check_language vetted it)."""
    return "'" + name.replace("'", "''") + "'"
