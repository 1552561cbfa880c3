-- The webhook resource and the API tokens.
CREATE TABLE webhooks (
    id                 TEXT    PRIMARY KEY,       -- UUID, hyphenated
    name               TEXT    NOT NULL UNIQUE,
    webhook_type       TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    enabled            INTEGER NOT NULL,
    deleted            INTEGER NOT NULL DEFAULT 0,
    version            INTEGER NOT NULL,          -- tenths: 1 is version 0.1
    updated_at         INTEGER NOT NULL,          -- ms since the epoch
    updated_by         TEXT    NOT NULL,
    spec               TEXT    NOT NULL,          -- JSON of the user-written fields, no secret
    secret_key         TEXT,
    change_description TEXT,                      -- JSON
    failure_details    TEXT                       -- JSON
) STRICT;

CREATE TABLE api_tokens (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    role       TEXT    NOT NULL,
    token_hash TEXT    NOT NULL UNIQUE,           -- hex SHA-256 of the bearer secret
    created_at INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    revoked_at INTEGER
) STRICT;
