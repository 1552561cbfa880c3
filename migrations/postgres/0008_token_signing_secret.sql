-- A publisher token may carry a signing secret: the key of the HMAC every publish body is
-- signed with (X-OM-Signature, as OpenMetadata sends it). Verifying needs the key itself,
-- so it is kept as given, like a webhook's secretKey; it is never returned.
ALTER TABLE api_tokens ADD COLUMN signing_secret TEXT;
