-- The event log. SQLite has one writer at a time, so positions become visible in order.
CREATE TABLE event_log_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq INTEGER NOT NULL
) STRICT;
INSERT INTO event_log_head (id, last_seq) VALUES (1, 0);

CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,
    event_id    TEXT    NOT NULL UNIQUE,
    event_type  TEXT    NOT NULL,
    entity_type TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,       -- ingest time, for retention
    body        TEXT    NOT NULL        -- the normalized ChangeEvent JSON
) STRICT;
CREATE INDEX events_created_at_idx ON events (created_at);

-- Delivery state, owned by the dispatcher (the API only writes it to resume).
ALTER TABLE webhooks ADD COLUMN cursor_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhooks ADD COLUMN batch TEXT;
ALTER TABLE webhooks ADD COLUMN retry_step INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhooks ADD COLUMN next_attempt_at INTEGER;
ALTER TABLE webhooks ADD COLUMN last_success_at INTEGER;
ALTER TABLE webhooks ADD COLUMN owner TEXT;
CREATE INDEX webhooks_owner_idx ON webhooks (owner);

CREATE TABLE dispatcher_instances (
    id           TEXT    PRIMARY KEY,
    heartbeat_at INTEGER NOT NULL,
    started_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE delivery_attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id       TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    delivery_id      TEXT    NOT NULL,
    attempt          INTEGER NOT NULL,
    event_ids        TEXT    NOT NULL,  -- JSON array
    url              TEXT    NOT NULL,
    request_bytes    INTEGER NOT NULL,
    status_code      INTEGER,
    response_excerpt TEXT,
    error_kind       TEXT,
    error            TEXT,
    duration_ms      INTEGER NOT NULL,
    attempted_at     INTEGER NOT NULL,
    outcome          TEXT    NOT NULL,
    next_attempt_at  INTEGER
) STRICT;
CREATE INDEX delivery_attempts_webhook_idx ON delivery_attempts (webhook_id, id DESC);
CREATE INDEX delivery_attempts_time_idx ON delivery_attempts (attempted_at);
