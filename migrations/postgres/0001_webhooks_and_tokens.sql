-- The webhook resource and the API tokens.
CREATE TABLE webhooks (
    id                 UUID PRIMARY KEY,
    name               TEXT    NOT NULL,
    webhook_type       TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    enabled            BOOLEAN NOT NULL,
    deleted            BOOLEAN NOT NULL DEFAULT FALSE,
    version            INTEGER NOT NULL,          -- tenths: 1 is version 0.1
    updated_at         BIGINT  NOT NULL,          -- ms since the epoch
    updated_by         TEXT    NOT NULL,
    spec               TEXT    NOT NULL,          -- JSON of the user-written fields, no secret
    secret_key         TEXT,
    change_description TEXT,                      -- JSON
    failure_details    TEXT,                      -- JSON
    CONSTRAINT webhooks_name_key UNIQUE (name)
);

CREATE TABLE api_tokens (
    id         UUID PRIMARY KEY,
    name       TEXT   NOT NULL,
    role       TEXT   NOT NULL,
    token_hash TEXT   NOT NULL,                   -- hex SHA-256 of the bearer secret
    created_at BIGINT NOT NULL,
    created_by TEXT   NOT NULL,
    revoked_at BIGINT,
    CONSTRAINT api_tokens_name_key UNIQUE (name),
    CONSTRAINT api_tokens_hash_key UNIQUE (token_hash)
);
