//! Delivery state (SPEC §6) as pure functions: what an attempt's outcome does to a
//! webhook's status, failureDetails, retry position and cursor.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::str_enum;
use super::webhook::{FailureDetails, WebhookStatus};
use crate::clock::Millis;

/// The batch a webhook is delivering, persisted before its first attempt so that a retry,
/// or a restart after a crash, sends the same events under the same delivery id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingBatch {
    pub delivery_id: Uuid,
    /// Log positions of the events, ascending.
    pub seqs: Vec<i64>,
    pub event_ids: Vec<Uuid>,
    /// Attempts made so far.
    pub attempts: u32,
}

impl PendingBatch {
    pub fn last_seq(&self) -> i64 {
        self.seqs.last().copied().unwrap_or(0)
    }
}

/// A webhook's delivery state as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchState {
    /// Every event up to here was delivered or did not match.
    pub cursor: i64,
    pub batch: Option<PendingBatch>,
    /// Position in the retry schedule: failures since the last success or resume.
    pub retry_step: u32,
    pub next_attempt_at: Option<Millis>,
    /// Never `disabled`: that is `enabled: false`, shown on top of this.
    pub status: WebhookStatus,
    pub failure_details: Option<FailureDetails>,
    pub last_success_at: Option<Millis>,
}

impl DispatchState {
    /// The log position delivery reads on from: after the cursor, and after the pending
    /// batch (whose events are already taken).
    pub fn read_from(&self) -> i64 {
        self.cursor
            .max(self.batch.as_ref().map_or(0, PendingBatch::last_seq))
    }

    /// Events of the pending batch, not delivered yet.
    pub fn in_batch(&self) -> u64 {
        self.batch.as_ref().map_or(0, |b| b.seqs.len() as u64)
    }
}

str_enum! {
    /// Why an attempt did not succeed.
    pub enum ErrorKind {
        Status => "status", Timeout => "timeout", Connect => "connect",
        Refused => "refused", Render => "render", Other => "other",
    }
}

str_enum! {
    /// How an attempt ended: `success` (2xx), `failure` (will be retried, or retries are
    /// exhausted), `fatal` (retrying cannot help: webhook status `failed`).
    pub enum Outcome { Success => "success", Failure => "failure", Fatal => "fatal" }
}

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub status_code: Option<u16>,
    pub error_kind: Option<ErrorKind>,
    /// A short reason for `failureDetails.lastFailedReason`.
    pub reason: Option<String>,
}

impl AttemptResult {
    /// Any 2xx is a success; 410 Gone is fatal; any other status is retried.
    pub fn from_status(code: u16) -> Self {
        if (200..300).contains(&code) {
            Self {
                status_code: Some(code),
                error_kind: None,
                reason: None,
            }
        } else {
            Self {
                status_code: Some(code),
                error_kind: Some(ErrorKind::Status),
                reason: Some(format!("HTTP {code}")),
            }
        }
    }

    pub fn error(kind: ErrorKind, reason: impl Into<String>) -> Self {
        Self {
            status_code: None,
            error_kind: Some(kind),
            reason: Some(reason.into()),
        }
    }

    pub fn outcome(&self) -> Outcome {
        match (self.error_kind, self.status_code) {
            (None, _) => Outcome::Success,
            (Some(ErrorKind::Refused | ErrorKind::Render), _) => Outcome::Fatal,
            (_, Some(410)) => Outcome::Fatal,
            _ => Outcome::Failure,
        }
    }
}

/// The delays before each retry of a failed delivery: at most [`RetrySchedule::MAX`].
/// After the last one a webhook stops with status `retryLimitReached`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

/// A retry schedule longer than [`RetrySchedule::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("at most {} retries", RetrySchedule::MAX)]
pub struct TooManyRetries;

impl RetrySchedule {
    pub const MAX: usize = 20;

    pub fn new(delays: Vec<Duration>) -> Result<Self, TooManyRetries> {
        if delays.len() > Self::MAX {
            return Err(TooManyRetries);
        }
        Ok(Self(delays))
    }
}

/// The state after an attempt of `batch` ended with `result` at `now`.
pub fn after_attempt(
    state: &DispatchState,
    batch: &PendingBatch,
    result: &AttemptResult,
    schedule: &[Duration],
    now: Millis,
) -> DispatchState {
    let mut batch = batch.clone();
    batch.attempts += 1;
    match result.outcome() {
        Outcome::Success => DispatchState {
            cursor: state.cursor.max(batch.last_seq()),
            batch: None,
            retry_step: 0,
            next_attempt_at: None,
            status: WebhookStatus::Active,
            failure_details: state.failure_details.clone().map(|f| FailureDetails {
                next_attempt: None,
                ..f
            }),
            last_success_at: Some(now),
        },
        outcome => {
            let delay = (outcome == Outcome::Failure)
                .then(|| schedule.get(state.retry_step as usize))
                .flatten();
            let next_attempt_at = delay.map(|d| now + d.as_millis() as Millis);
            let status = match (outcome, next_attempt_at) {
                (Outcome::Fatal, _) => WebhookStatus::Failed,
                (_, Some(_)) => WebhookStatus::AwaitingRetry,
                (_, None) => WebhookStatus::RetryLimitReached,
            };
            DispatchState {
                cursor: state.cursor,
                batch: Some(batch),
                retry_step: state.retry_step + 1,
                next_attempt_at,
                status,
                failure_details: Some(FailureDetails {
                    last_failed_at: Some(now),
                    last_failed_status_code: result.status_code,
                    last_failed_reason: result.reason.clone(),
                    next_attempt: next_attempt_at,
                }),
                last_success_at: state.last_success_at,
            }
        }
    }
}

/// One attempt as the delivery log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    /// Position in the log, newest highest; the paging cursor.
    pub id: i64,
    pub webhook_id: Uuid,
    pub delivery_id: Uuid,
    pub attempt: u32,
    pub event_ids: Vec<Uuid>,
    pub url: String,
    pub request_bytes: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_excerpt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: i64,
    pub attempted_at: Millis,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Millis>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Vec<Duration> {
        [60, 300, 900, 3600, 14_400, 43_200]
            .map(Duration::from_secs)
            .to_vec()
    }

    fn fresh() -> (DispatchState, PendingBatch) {
        let state = DispatchState {
            cursor: 10,
            batch: None,
            retry_step: 0,
            next_attempt_at: None,
            status: WebhookStatus::Active,
            failure_details: None,
            last_success_at: None,
        };
        let batch = PendingBatch {
            delivery_id: Uuid::nil(),
            seqs: vec![11, 14],
            event_ids: vec![],
            attempts: 0,
        };
        (state, batch)
    }

    #[test]
    fn the_default_schedule_then_the_limit() {
        let (mut state, batch) = fresh();
        let mut now = 1_000_000;
        let expected = [60_000, 300_000, 900_000, 3_600_000, 14_400_000, 43_200_000];
        for (i, delay) in expected.iter().enumerate() {
            let current = state.batch.clone().unwrap_or(batch.clone());
            state = after_attempt(
                &state,
                &current,
                &AttemptResult::from_status(503),
                &schedule(),
                now,
            );
            assert_eq!(state.status, WebhookStatus::AwaitingRetry);
            let details = state.failure_details.clone().unwrap();
            assert_eq!(
                details.next_attempt.unwrap() - details.last_failed_at.unwrap(),
                *delay,
                "retry {i}"
            );
            assert_eq!(details.last_failed_status_code, Some(503));
            assert_eq!(state.batch.as_ref().unwrap().attempts, i as u32 + 1);
            assert_eq!(state.cursor, 10);
            now = state.next_attempt_at.unwrap();
        }
        let current = state.batch.clone().unwrap();
        state = after_attempt(
            &state,
            &current,
            &AttemptResult::error(ErrorKind::Timeout, "timed out"),
            &schedule(),
            now,
        );
        assert_eq!(state.status, WebhookStatus::RetryLimitReached);
        assert_eq!(state.next_attempt_at, None);
        assert_eq!(
            state.batch.as_ref().unwrap().attempts,
            7,
            "seven attempts in all"
        );
        assert_eq!(state.cursor, 10, "the position is kept");
    }

    #[test]
    fn success_moves_the_cursor_and_resets() {
        let (state, batch) = fresh();
        let failed = after_attempt(
            &state,
            &batch,
            &AttemptResult::from_status(500),
            &schedule(),
            5,
        );
        let ok = after_attempt(
            &failed,
            failed.batch.as_ref().unwrap(),
            &AttemptResult::from_status(204),
            &schedule(),
            70_005,
        );
        assert_eq!(
            (ok.status, ok.cursor, ok.retry_step),
            (WebhookStatus::Active, 14, 0)
        );
        assert!(ok.batch.is_none() && ok.next_attempt_at.is_none());
        let details = ok.failure_details.unwrap();
        assert_eq!(
            (details.last_failed_status_code, details.next_attempt),
            (Some(500), None)
        );
        assert_eq!(ok.last_success_at, Some(70_005));
    }

    #[test]
    fn what_retrying_cannot_fix_is_fatal() {
        let (state, batch) = fresh();
        for result in [
            AttemptResult::from_status(410),
            AttemptResult::error(ErrorKind::Refused, "private address"),
            AttemptResult::error(ErrorKind::Render, "template"),
        ] {
            let next = after_attempt(&state, &batch, &result, &schedule(), 5);
            assert_eq!(
                (next.status, next.next_attempt_at),
                (WebhookStatus::Failed, None),
                "{result:?}"
            );
            assert!(next.batch.is_some());
        }
        for code in [200, 201, 204, 299] {
            assert_eq!(AttemptResult::from_status(code).outcome(), Outcome::Success);
        }
        for code in [301, 400, 404, 429, 500] {
            assert_eq!(AttemptResult::from_status(code).outcome(), Outcome::Failure);
        }
    }
}
