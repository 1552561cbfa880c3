-- The event log. Appends lock the head row, so log positions become visible in order:
-- a reader that has seen position N has seen every position below it.
CREATE TABLE event_log_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq BIGINT  NOT NULL
);
INSERT INTO event_log_head (id, last_seq) VALUES (1, 0);

CREATE TABLE events (
    seq         BIGINT PRIMARY KEY,
    event_id    UUID   NOT NULL,
    event_type  TEXT   NOT NULL,
    entity_type TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,        -- ingest time, for retention
    body        TEXT   NOT NULL,        -- the normalized ChangeEvent JSON
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);
CREATE INDEX events_created_at_idx ON events (created_at);

-- Delivery state, owned by the dispatcher (the API only writes it to resume).
ALTER TABLE webhooks
    ADD COLUMN cursor_seq      BIGINT  NOT NULL DEFAULT 0,  -- all events up to here delivered or not matching
    ADD COLUMN batch           TEXT,                        -- JSON of the batch being delivered
    ADD COLUMN retry_step      INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at BIGINT,
    ADD COLUMN last_success_at BIGINT,
    ADD COLUMN owner           UUID;                        -- the dispatcher instance holding the lease
CREATE INDEX webhooks_owner_idx ON webhooks (owner);

-- Live dispatcher instances; a webhook's lease is valid while its owner's heartbeat is fresh.
CREATE TABLE dispatcher_instances (
    id           UUID   PRIMARY KEY,
    heartbeat_at BIGINT NOT NULL,
    started_at   BIGINT NOT NULL
);

-- Every delivery attempt.
CREATE TABLE delivery_attempts (
    id               BIGSERIAL PRIMARY KEY,
    webhook_id       UUID    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    delivery_id      UUID    NOT NULL,
    attempt          INTEGER NOT NULL,
    event_ids        TEXT    NOT NULL,  -- JSON array
    url              TEXT    NOT NULL,
    request_bytes    BIGINT  NOT NULL,
    status_code      INTEGER,
    response_excerpt TEXT,
    error_kind       TEXT,
    error            TEXT,
    duration_ms      BIGINT  NOT NULL,
    attempted_at     BIGINT  NOT NULL,
    outcome          TEXT    NOT NULL,
    next_attempt_at  BIGINT
);
CREATE INDEX delivery_attempts_webhook_idx ON delivery_attempts (webhook_id, id DESC);
CREATE INDEX delivery_attempts_time_idx ON delivery_attempts (attempted_at);
