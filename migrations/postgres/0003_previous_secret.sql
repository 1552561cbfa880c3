-- Secret rotation: the rotated-out secret still signs until its grace period ends.
ALTER TABLE webhooks
    ADD COLUMN previous_secret       TEXT,
    ADD COLUMN previous_secret_until BIGINT;
