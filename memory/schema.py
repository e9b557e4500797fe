"""The database schema as a list of forward migrations, versioned by PRAGMA user_version.

Migration N (1-based) brings a database from version N-1 to N. Never edit a released
migration: add a new one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

MIGRATIONS: list[str] = [
    # 1: memories, their history, and a full-text index kept in step by triggers.
    """
    CREATE TABLE memories (
        id          INTEGER PRIMARY KEY,            -- internal; the FTS rowid
        memory_id   TEXT NOT NULL UNIQUE,           -- public, opaque
        user_id     TEXT NOT NULL,
        memory      TEXT NOT NULL,
        topics      TEXT NOT NULL DEFAULT '[]',     -- JSON array of lower-case strings
        input       TEXT,
        agent_id    TEXT,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE INDEX memories_by_user_time ON memories (user_id, created_at, id);

    CREATE TABLE history (
        event_id    INTEGER PRIMARY KEY AUTOINCREMENT,
        memory_id   TEXT NOT NULL,
        user_id     TEXT NOT NULL,
        operation   TEXT NOT NULL CHECK (operation IN ('add', 'update', 'delete', 'clear', 'restore')),
        before      TEXT,                           -- JSON of the memory before, NULL for add
        after       TEXT,                           -- JSON of the memory after, NULL for delete/clear
        actor       TEXT NOT NULL,
        reason      TEXT,
        source      TEXT,
        undoes      INTEGER REFERENCES history (event_id),
        created_at  TEXT NOT NULL
    );
    CREATE INDEX history_by_memory ON history (memory_id, event_id);
    CREATE INDEX history_by_user ON history (user_id, event_id);

    -- Topics are indexed as words beside the text, so "hobbies" finds a memory tagged hobbies.
    CREATE VIRTUAL TABLE memories_fts USING fts5 (
        memory, topics, content = 'memories', content_rowid = 'id', tokenize = 'porter unicode61'
    );
    CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
        INSERT INTO memories_fts (rowid, memory, topics) VALUES (new.id, new.memory, new.topics);
    END;
    CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
        INSERT INTO memories_fts (memories_fts, rowid, memory, topics)
        VALUES ('delete', old.id, old.memory, old.topics);
    END;
    CREATE TRIGGER memories_fts_update AFTER UPDATE OF memory, topics ON memories BEGIN
        INSERT INTO memories_fts (memories_fts, rowid, memory, topics)
        VALUES ('delete', old.id, old.memory, old.topics);
        INSERT INTO memories_fts (rowid, memory, topics) VALUES (new.id, new.memory, new.topics);
    END;
    """,
    # 2: bearer tokens, stored as SHA-256 hashes; user_id NULL marks an admin token.
    """
    CREATE TABLE tokens (
        token_id    TEXT PRIMARY KEY,               -- short public handle, for revoke and listing
        token_hash  TEXT NOT NULL UNIQUE,
        user_id     TEXT,
        is_admin    INTEGER NOT NULL DEFAULT 0,
        label       TEXT,
        created_at  TEXT NOT NULL
    );
    """,
    # 3: one embedding per memory, tagged with the model that made it, so vectors of different
    # models are never compared; a memory without a current vector is embedded again on demand.
    """
    CREATE TABLE embeddings (
        memory_rowid INTEGER PRIMARY KEY REFERENCES memories (id) ON DELETE CASCADE,
        model        TEXT NOT NULL,
        dim          INTEGER NOT NULL,
        vector       BLOB NOT NULL                   -- float32, little-endian, L2-normalised
    );
    """,
    # 4: a full-text index per user. BM25 weighs a word by how rare it is and a memory by its
    # length; with one shared index those statistics mixed every user's memories, so one user's
    # ranking depended on - and could reveal something about - what others had stored. Triggers
    # queue every change; the store applies a user's queue to that user's own index (a table
    # named fts_user_<hash of the user id>) before it searches it (replaced by migration 7).
    """
    DROP TRIGGER memories_fts_insert;
    DROP TRIGGER memories_fts_delete;
    DROP TRIGGER memories_fts_update;
    DROP TABLE memories_fts;

    CREATE TABLE fts_pending (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id     TEXT NOT NULL,
        id          INTEGER NOT NULL,               -- memories.id, the rowid in the user's index
        memory      TEXT,                           -- NULL: remove the row from the index
        topics      TEXT
    );
    CREATE INDEX fts_pending_by_user ON fts_pending (user_id, seq);

    CREATE TRIGGER memories_index_insert AFTER INSERT ON memories BEGIN
        INSERT INTO fts_pending (user_id, id, memory, topics) VALUES (new.user_id, new.id, new.memory, new.topics);
    END;
    CREATE TRIGGER memories_index_delete AFTER DELETE ON memories BEGIN
        INSERT INTO fts_pending (user_id, id, memory, topics) VALUES (old.user_id, old.id, NULL, NULL);
    END;
    CREATE TRIGGER memories_index_update AFTER UPDATE OF memory, topics ON memories BEGIN
        INSERT INTO fts_pending (user_id, id, memory, topics) VALUES (new.user_id, new.id, new.memory, new.topics);
    END;

    INSERT INTO fts_pending (user_id, id, memory, topics) SELECT user_id, id, memory, topics FROM memories ORDER BY id;
    """,
    # 5: OAuth 2.1 (server/oauth.py, memory/oauth_store.py). Every secret is kept as a SHA-256
    # hash; a dynamically registered client's record is kept as the SDK validated it (JSON).
    """
    CREATE TABLE oauth_clients (
        client_id    TEXT PRIMARY KEY,
        client_name  TEXT,
        metadata     TEXT NOT NULL,                -- JSON: the RFC 7591 client information
        created_at   TEXT NOT NULL
    );
    CREATE TABLE oauth_login_codes (                -- `memoir token create USER --code`: one sign-in
        code_id      TEXT PRIMARY KEY,
        code_hash    TEXT NOT NULL UNIQUE,
        user_id      TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        expires_at   REAL NOT NULL                 -- unix seconds
    );
    CREATE TABLE oauth_grants (                     -- one approval: a client acting for a user
        grant_id           TEXT PRIMARY KEY,
        client_id          TEXT NOT NULL,
        client_name        TEXT,
        user_id            TEXT NOT NULL,
        scopes             TEXT NOT NULL,           -- space-separated
        resource           TEXT NOT NULL,           -- the MCP endpoint the tokens are bound to
        created_at         TEXT NOT NULL,
        access_hash        TEXT NOT NULL UNIQUE,
        access_expires_at  REAL NOT NULL,
        refresh_hash       TEXT NOT NULL UNIQUE,
        refresh_expires_at REAL NOT NULL
    );
    CREATE INDEX oauth_grants_by_user ON oauth_grants (user_id);
    CREATE TABLE oauth_spent_refresh (              -- rotated-out refresh tokens: reuse revokes the grant
        refresh_hash TEXT PRIMARY KEY,
        grant_id     TEXT NOT NULL REFERENCES oauth_grants (grant_id) ON DELETE CASCADE
    );
    CREATE TABLE oauth_auth_codes (                 -- authorization codes, single use
        code_hash    TEXT PRIMARY KEY,
        client_id    TEXT NOT NULL,
        user_id      TEXT NOT NULL,
        request      TEXT NOT NULL,                -- JSON: redirect_uri, code_challenge, scopes, resource
        expires_at   REAL NOT NULL,
        grant_id     TEXT                          -- set once exchanged; a second use revokes that grant
    );
    """,
    # 6: validity in time. A memory holds from `valid_from` (by default when it was written) until
    # `valid_to`, NULL while it is current; superseding it ("Ava moved to Denver") sets both
    # `valid_to` and `superseded_by` (the successor's memory_id). History events that make up one
    # change (a memory added and the one it supersedes retired) share `part_of`: the first event's
    # id, set on the others; undo reverts them together.
    #
    # Current memories are the common case and superseded ones few, so the (user_id, created_at)
    # index keeps serving listings (superseded rows are skipped as they are met), and a small
    # partial index holds only the superseded rows: keyword search subtracts them, and deleting a
    # memory finds the one it superseded, without touching the current ones. Adds write no more
    # index entries than before.
    """
    ALTER TABLE memories ADD COLUMN valid_from TEXT;       -- ISO-8601 UTC; NULL only before this migration
    ALTER TABLE memories ADD COLUMN valid_to TEXT;         -- NULL while current
    ALTER TABLE memories ADD COLUMN superseded_by TEXT;    -- memory_id of the successor; set with valid_to
    UPDATE memories SET valid_from = created_at;
    CREATE INDEX memories_superseded ON memories (user_id, superseded_by) WHERE valid_to IS NOT NULL;

    ALTER TABLE history ADD COLUMN part_of INTEGER REFERENCES history (event_id);
    """,
    # 7: one keyword index for every user (memory/keyword_index.py), in ordinary tables: the
    # per-user FTS5 tables of migration 4 made every new user a schema change that every
    # connection re-parsed, and cost ~23 KB of empty index per user. BM25 now reads each user's
    # statistics from keyword_users, so rankings stay per user. The triggers and queue of
    # migration 4 stay: a user's queued changes are indexed at the user's next search, in one
    # batch (indexing each add in its own transaction made it write a page per distinct word:
    # adds took 0.2 ms longer). The Python step of this migration (AFTER_MIGRATION) drops the
    # old tables, whose names are built from user ids (it indexed every memory too, until 9).
    """
    CREATE TABLE keyword_users (
        uid         INTEGER PRIMARY KEY,            -- the user's key in the other two tables
        user_id     TEXT NOT NULL UNIQUE,
        docs        INTEGER NOT NULL,               -- memories indexed: BM25's N
        tokens      INTEGER NOT NULL                -- their tokens: N x average length
    );
    CREATE TABLE keyword_postings (
        uid         INTEGER NOT NULL,
        term        TEXT NOT NULL,                  -- a stemmed word
        doc         INTEGER NOT NULL,               -- memories.id
        tf          REAL NOT NULL,                  -- count in the text + 0.5 x count in the topics
        len         INTEGER NOT NULL,               -- the memory's tokens (as keyword_docs.length)
        PRIMARY KEY (uid, term, doc)
    ) WITHOUT ROWID;
    CREATE TABLE keyword_docs (
        doc         INTEGER PRIMARY KEY,            -- memories.id
        uid         INTEGER NOT NULL,
        length      INTEGER NOT NULL,
        terms       TEXT NOT NULL                   -- its postings' words, space-separated
    );

    DELETE FROM fts_pending;
    INSERT INTO fts_pending (user_id, id, memory, topics) SELECT user_id, id, memory, topics FROM memories ORDER BY id;
    """,
    # 8: the host hooks' side tables (server/hooks.py), created on first use until now (IF NOT
    # EXISTS: a database where a hook made them keeps them): how often each memory was recalled
    # (rows go with their memory), and how far each session's transcript was extracted. Memory
    # ids and counts only, no text.
    """
    CREATE TABLE IF NOT EXISTS hook_recalls (
        memory_id        TEXT PRIMARY KEY REFERENCES memories (memory_id) ON DELETE CASCADE,
        user_id          TEXT NOT NULL,
        recalls          INTEGER NOT NULL,
        last_recalled_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS hook_sessions (
        session_id  TEXT PRIMARY KEY,
        user_id     TEXT NOT NULL,
        transcript  TEXT NOT NULL,
        lines       INTEGER NOT NULL,              -- transcript lines already extracted
        updated_at  TEXT NOT NULL
    );
    """,
    # 9: neighbour document expansion (memory/keyword_index.py): a memory is indexed with its
    # timeline neighbours' words at a tenth of their weight. A posting keeps the memory's own count
    # beside the expanded one (`own`, 0 for a word only a neighbour holds), since what a memory
    # holds itself still decides coverage and the common-word rule; keyword_docs keeps each
    # memory's place in the timeline (`at`: its created_at), so a deleted memory's former
    # neighbours can be found. The index tables are made anew and every memory queued again:
    # each user's index is rebuilt at their next search, as any queued change is.
    """
    DROP TABLE keyword_postings;
    DROP TABLE keyword_docs;
    DELETE FROM keyword_users;
    CREATE TABLE keyword_postings (
        uid         INTEGER NOT NULL,
        term        TEXT NOT NULL,                  -- a stemmed word
        doc         INTEGER NOT NULL,               -- memories.id
        tf          REAL NOT NULL,                  -- own + 0.1 x the neighbours' own (keyword_index.NEIGHBOUR_WEIGHT)
        own         REAL NOT NULL,                  -- count in the text + 0.5 x count in the topics; 0: a neighbour's word
        len         INTEGER NOT NULL,               -- the memory's own tokens (as keyword_docs.length)
        PRIMARY KEY (uid, term, doc)
    ) WITHOUT ROWID;
    CREATE TABLE keyword_docs (
        doc         INTEGER PRIMARY KEY,            -- memories.id
        uid         INTEGER NOT NULL,
        length      INTEGER NOT NULL,               -- its own tokens
        terms       TEXT NOT NULL,                  -- its postings' words, space-separated
        at          TEXT NOT NULL                   -- its created_at: its place in the user's timeline
    );

    DELETE FROM fts_pending;
    INSERT INTO fts_pending (user_id, id, memory, topics) SELECT user_id, id, memory, topics FROM memories ORDER BY id;
    """,
]


def _one_keyword_index(db: sqlite3.Connection) -> None:
    # fts_user_<hex>; its shadow tables (fts_user_<hex>_data, ...) go with it.
    sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'fts_user_*' AND name NOT GLOB 'fts_user_*_*'"
    for (name,) in db.execute(sql).fetchall():
        db.execute(f'DROP TABLE "{name}"')
    # It indexed every memory here too, until migration 9: memory/keyword_index.py writes the
    # tables of the newest schema, not of 7's, and 9 queues every memory again anyway (indexed
    # at each user's next search).


# Steps SQL cannot say, run after the migration of that number, in its transaction.
AFTER_MIGRATION: dict[int, Callable[[sqlite3.Connection], None]] = {7: _one_keyword_index}

SCHEMA_VERSION = len(MIGRATIONS)
