-- The archive (docs/archive.md): every message of every room in its latest state, the
-- reactions and the log of changes, keyed by room and stream id so that writing an entry
-- again changes nothing. {language} is CHAT_ARCHIVE_LANGUAGE, checked by the caller.

CREATE TABLE chat_messages (
    room      text    NOT NULL,
    ms        bigint  NOT NULL,  -- the stream id "ms-seq", as numbers to order by
    seq       bigint  NOT NULL,
    username  text,              -- null once deleted, or while only a change of it was written
    body      text,              -- the text as last edited; null once deleted
    ts        bigint,
    client_id text,
    reply_to  text,
    mentions  text[],
    edited_ts bigint,
    edit_ms   bigint,            -- the edit that set body: an older one written later loses
    edit_seq  bigint,
    deleted   boolean NOT NULL DEFAULT false,
    search    tsvector GENERATED ALWAYS AS (to_tsvector('{language}', coalesce(body, ''))) STORED,
    PRIMARY KEY (room, ms, seq)
);
CREATE INDEX chat_messages_search ON chat_messages USING gin (search);
CREATE INDEX chat_messages_ts ON chat_messages (ts);

-- One row per message, emoji and user: the last reaction change for it wins, whatever the
-- order two archivers wrote them in.
CREATE TABLE chat_reactions (
    room       text    NOT NULL,
    ms         bigint  NOT NULL,
    seq        bigint  NOT NULL,
    emoji      text    NOT NULL,
    username   text    NOT NULL,
    active     boolean NOT NULL,
    change_ms  bigint  NOT NULL,
    change_seq bigint  NOT NULL,
    PRIMARY KEY (room, ms, seq, emoji, username)
);

-- Every change entry once (its own id), so that a join from far back can replay them.
CREATE TABLE chat_changes (
    room       text    NOT NULL,
    ms         bigint  NOT NULL,
    seq        bigint  NOT NULL,
    kind       text    NOT NULL,  -- message_edited | message_deleted | reaction
    target_ms  bigint  NOT NULL,
    target_seq bigint  NOT NULL,
    emoji      text,
    username   text,
    active     boolean,
    PRIMARY KEY (room, ms, seq)
);
CREATE INDEX chat_changes_target ON chat_changes (room, target_ms, target_seq);

-- What the archive cannot vouch for: entries up to gap_upto may be missing (trimmed from
-- Redis before they were archived, or removed by CHAT_ARCHIVE_DAYS).
CREATE TABLE chat_archive_rooms (
    room         text PRIMARY KEY,
    gap_upto_ms  bigint NOT NULL,
    gap_upto_seq bigint NOT NULL
);
