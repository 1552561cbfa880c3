//! The SQL both dialects accept, written once. (`CAST(… AS TEXT)` rather than PostgreSQL's
//! `::text`, which SQLite does not know; `$n` parameters, which both number.) What differs
//! between them stays in the backend's module.

/// The columns of [`WebhookRow`](super::rows::WebhookRow), in the order `bind_webhook!` binds them.
macro_rules! webhook_columns {
    () => {
        "id, name, webhook_type, status, enabled, deleted, version, updated_at, updated_by, spec, \
         secret_key, change_description, failure_details, previous_secret, previous_secret_until"
    };
}

/// A new webhook's cursor starts at the log head: it is sent what comes after it.
pub const INSERT_WEBHOOK: &str = concat!(
    "INSERT INTO webhooks (",
    webhook_columns!(),
    ", cursor_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
     (SELECT last_seq FROM event_log_head WHERE id = 1))"
);

/// The user-written fields, where the version is still `$16`; with `$17` (resume) also the
/// status and failure details, and the scheduled retry cleared.
pub const UPDATE_WEBHOOK: &str = "UPDATE webhooks SET name = $2, webhook_type = $3, enabled = $5, \
     deleted = $6, version = $7, updated_at = $8, updated_by = $9, spec = $10, secret_key = $11, \
     change_description = $12, previous_secret = $14, previous_secret_until = $15, \
     status = CASE WHEN $17 THEN $4 ELSE status END, \
     failure_details = CASE WHEN $17 THEN $13 ELSE failure_details END, \
     next_attempt_at = CASE WHEN $17 THEN NULL ELSE next_attempt_at END, \
     retry_step = CASE WHEN $17 THEN 0 ELSE retry_step END \
     WHERE id = $1 AND version = $16";

pub const WEBHOOK_BY_ID: &str = concat!(
    "SELECT ",
    webhook_columns!(),
    " FROM webhooks WHERE id = $1"
);

pub const WEBHOOK_BY_NAME: &str = concat!(
    "SELECT ",
    webhook_columns!(),
    " FROM webhooks WHERE name = $1"
);

/// A list's filters, bound as parameters: status (`'disabled'` means not enabled), type, the
/// range of `deleted` let through, only failing ones (enabled, neither `active` nor
/// `disabled`), and a text the name contains, ignoring case. `position` is the dialect's
/// function for where a text is found in another, 0 when it is not (PostgreSQL's `strpos`,
/// SQLite's `instr`): the one word the dialects write differently here.
fn webhook_filter(position: &str) -> String {
    format!(
        "(CAST($1 AS TEXT) IS NULL OR ($1 = 'disabled' AND NOT enabled) \
         OR (enabled AND status = $1)) AND (CAST($2 AS TEXT) IS NULL OR webhook_type = $2) \
         AND deleted IN ($3, $4) AND (NOT $5 OR (enabled AND status NOT IN ('active', 'disabled'))) \
         AND (CAST($6 AS TEXT) IS NULL OR {position}(lower(name), lower($6)) > 0)"
    )
}

/// The statements of a webhook list in one dialect, built once per backend.
pub struct WebhookList {
    /// One page: after the filters, the cursor `$7` and its ordering, `$8` rows. One text
    /// per direction: before, after, from the start.
    pages: [String; 3],
    /// How many webhooks the filters let through.
    count: String,
}

impl WebhookList {
    pub fn new(position: &str) -> Self {
        let filter = webhook_filter(position);
        let pages = [
            "AND name < $7 ORDER BY name DESC",
            "AND name > $7 ORDER BY name ASC",
            "AND CAST($7 AS TEXT) IS NULL ORDER BY name ASC",
        ]
        .map(|order| {
            format!(
                "SELECT {} FROM webhooks WHERE {filter} {order} LIMIT $8",
                webhook_columns!()
            )
        });
        let count = format!("SELECT COUNT(*) FROM webhooks WHERE {filter}");
        Self { pages, count }
    }

    pub fn page(&self, cursor: Option<&super::Cursor>) -> &str {
        match cursor {
            Some(super::Cursor::Before(_)) => &self.pages[0],
            Some(super::Cursor::After(_)) => &self.pages[1],
            None => &self.pages[2],
        }
    }

    pub fn count(&self) -> &str {
        &self.count
    }
}

pub const DELETE_WEBHOOK: &str = "DELETE FROM webhooks WHERE id = $1";

/// Binds as `bind_token!`, then the signing secret as `$8`.
pub const INSERT_TOKEN: &str = "INSERT INTO api_tokens \
     (id, name, role, token_hash, created_at, created_by, revoked_at, signing_secret) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

pub const UPSERT_TOKEN: &str = "INSERT INTO api_tokens \
     (id, name, role, token_hash, created_at, created_by, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role, token_hash = EXCLUDED.token_hash, \
     revoked_at = NULL";

pub const TOKEN_BY_HASH: &str = "SELECT * FROM api_tokens WHERE token_hash = $1";

pub const TOKENS: &str = "SELECT * FROM api_tokens ORDER BY name";

pub const REVOKE_TOKEN: &str =
    "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";

pub const COUNT_LIVE_TOKENS: &str =
    "SELECT COUNT(*) FROM api_tokens WHERE role = $1 AND revoked_at IS NULL";

pub const DISPATCH_STATE: &str = "SELECT cursor_seq, batch, retry_step, next_attempt_at, status, \
     failure_details, last_success_at FROM webhooks WHERE id = $1";

pub const ATTEMPTS: &str = "SELECT * FROM delivery_attempts WHERE webhook_id = $1 \
     AND (CAST($2 AS TEXT) IS NULL OR outcome = $2) AND (CAST($3 AS BIGINT) IS NULL OR id < $3) \
     ORDER BY id DESC LIMIT $4";

/// A page of the log within a count (`$3`) and a byte budget (`$4`). The running total of
/// body sizes is computed from the stored lengths (a body the budget leaves out is not even
/// fetched from its out-of-line storage). An empty body is an event past its body
/// retention: only its id is kept.
pub const READ_EVENT_PAGE: &str = "SELECT seq, event_id, body, total FROM ( \
     SELECT seq, event_id, body, octet_length(body) AS size, \
       SUM(octet_length(body)) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) AS total \
     FROM events WHERE seq > $1 AND seq <= $2 AND body <> '' ORDER BY seq LIMIT $3) page \
     WHERE total - size < $4 ORDER BY seq";

pub const LOG_HEAD: &str = "SELECT last_seq FROM event_log_head WHERE id = 1";

/// Retention goes oldest first, from the lowest positions (ids): the rows read are bounded
/// by the limit `$2`, whatever the size of the table. (A condition on time alone made
/// PostgreSQL walk the whole table when nothing was old enough.)
pub const PRUNE_EVENTS: &str = "DELETE FROM events WHERE seq IN ( \
     SELECT seq FROM (SELECT seq, created_at FROM events ORDER BY seq LIMIT $2) oldest \
     WHERE created_at < $1)";

/// Delivery health goes with the attempts it counts (`$1` is the minute of their cut).
pub const PRUNE_ROLLUPS: &str = "DELETE FROM attempt_rollups WHERE (webhook_id, minute, bucket) IN ( \
     SELECT webhook_id, minute, bucket FROM attempt_rollups WHERE minute < $1 LIMIT $2)";

pub const PRUNE_ATTEMPTS: &str = "DELETE FROM delivery_attempts WHERE id IN ( \
     SELECT id FROM (SELECT id, attempted_at FROM delivery_attempts ORDER BY id LIMIT $2) oldest \
     WHERE attempted_at < $1)";

/// The next events after those whose bodies are dropped.
pub const EVENTS_AFTER_BODIES: &str =
    "SELECT seq, created_at FROM events WHERE seq > $1 ORDER BY seq LIMIT $2";

pub const DROP_BODIES: &str =
    "UPDATE events SET body = '' WHERE seq > $1 AND seq <= $2 AND body <> ''";

/// Where the dropping of bodies got to.
pub const BODIES_DONE: &str = "SELECT bodies_dropped_through FROM log_retention WHERE id = 1";

/// The same, locking the row: instances pruning at once take turns.
pub const BODIES_DONE_LOCKED: &str =
    "SELECT bodies_dropped_through FROM log_retention WHERE id = 1 FOR UPDATE";

pub const BODIES_DROPPED_THROUGH: &str =
    "UPDATE log_retention SET bodies_dropped_through = $1 WHERE id = 1";

pub const HEARTBEAT: &str = "INSERT INTO dispatcher_instances (id, heartbeat_at, started_at) \
     VALUES ($1, $2, $2) ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at";

pub const FORGET_INSTANCES: &str = "DELETE FROM dispatcher_instances WHERE heartbeat_at < $1";

pub const COUNT_LIVE_INSTANCES: &str =
    "SELECT COUNT(*) FROM dispatcher_instances WHERE heartbeat_at >= $1";

pub const RELEASE_ALL: &str = "UPDATE webhooks SET owner = NULL WHERE owner = $1";

pub const DELETE_INSTANCE: &str = "DELETE FROM dispatcher_instances WHERE id = $1";

/// Binds as `bind_instance!`.
pub const REGISTER_INSTANCE: &str = "INSERT INTO dispatcher_instances \
     (id, heartbeat_at, started_at, name, host, pid, pid_namespace, process_started) \
     VALUES ($1, $2, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at, name = EXCLUDED.name, \
     host = EXCLUDED.host, pid = EXCLUDED.pid, pid_namespace = EXCLUDED.pid_namespace, \
     process_started = EXCLUDED.process_started";

pub const INSTANCES: &str = "SELECT id, name, host, pid, pid_namespace, process_started, \
     heartbeat_at FROM dispatcher_instances";

/// An instance registered without a name is shown by its id.
pub const LEASE_HOLDER: &str = "SELECT COALESCE(i.name, CAST(i.id AS TEXT)) FROM webhooks w \
     JOIN dispatcher_instances i ON i.id = w.owner WHERE w.id = $1 AND i.heartbeat_at >= $2";
