-- Delivery health per webhook and minute, kept as attempts are recorded: the status's
-- 1 h and 24 h figures read at most 1,440 minutes of a webhook whatever the size of the
-- delivery log. Durations are counted in buckets (the upper bounds are in
-- src/store/console.rs); percentiles are read off them.
CREATE TABLE attempt_rollups (
    webhook_id UUID    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    minute     BIGINT  NOT NULL,          -- ms since the epoch, a multiple of 60,000
    bucket     INTEGER NOT NULL,          -- duration bucket: 0 is the fastest
    attempts   BIGINT  NOT NULL,
    successes  BIGINT  NOT NULL,
    failures   BIGINT  NOT NULL,
    PRIMARY KEY (webhook_id, minute, bucket)
);
CREATE INDEX attempt_rollups_minute_idx ON attempt_rollups (minute);

-- Web console sessions. The cookie carries a random secret; only its hash is stored.
CREATE TABLE console_sessions (
    secret_hash TEXT   PRIMARY KEY,       -- hex SHA-256 of the cookie's secret
    token_id    UUID   NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);
