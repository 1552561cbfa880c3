//! Dispatcher instances and the webhooks' leases: which instance delivers for which webhook.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreError;
use crate::clock::Millis;

/// Instances beat, claim the leases of webhooks nobody live holds, and give them up.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Records that `instance` is alive and forgets instances silent since `forget_before`;

    /// returns how many instances have beaten since `live_since`.
    async fn heartbeat(
        &self,
        instance: Uuid,
        now: Millis,
        live_since: Millis,
        forget_before: Millis,
    ) -> Result<i64, StoreError>;

    /// Takes the lease of up to `limit` more enabled, undeleted webhooks that have no live
    /// owner (an owner whose heartbeat is older than `expired_before` is dead), and returns
    /// every enabled, undeleted webhook `instance` now holds.
    async fn claim_webhooks(
        &self,
        instance: Uuid,
        expired_before: Millis,
        limit: u32,
    ) -> Result<Vec<Uuid>, StoreError>;

    /// Gives up the leases of these webhooks (only where `instance` holds them).
    async fn release_webhooks(&self, instance: Uuid, ids: &[Uuid]) -> Result<(), StoreError>;

    /// Gives up every lease of `instance` and forgets it: a clean shutdown.
    async fn remove_instance(&self, instance: Uuid) -> Result<(), StoreError>;

    /// Records who an instance is and where it runs, with a heartbeat at
    /// `instance.heartbeat_at` (replacing what was recorded under its id).
    async fn register_instance(&self, instance: &InstanceRecord) -> Result<(), StoreError>;

    /// Every registered instance.
    async fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError>;

    /// Gives `instance` every lease the instances `dead` hold and forgets them; returns how
    /// many leases moved. Only for instances known to be dead: nothing else checks.
    async fn take_over(&self, instance: Uuid, dead: &[Uuid]) -> Result<u64, StoreError>;

    /// The name of the instance holding the webhook's lease, if one that has beaten since
    /// `live_since` does (an instance registered without a name is shown by its id).
    async fn lease_holder(
        &self,
        webhook: Uuid,
        live_since: Millis,
    ) -> Result<Option<String>, StoreError>;
}

/// A dispatcher instance as registered. The fields after `id` are empty for an instance
/// registered by a version that did not record them.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    pub id: Uuid,
    pub name: Option<String>,
    pub host: Option<String>,
    pub pid: Option<i64>,
    /// `<boot id>/<pid namespace>`: where `pid` names a process.
    pub pid_namespace: Option<String>,
    /// The process's start time, in clock ticks after boot.
    pub process_started: Option<i64>,
    pub heartbeat_at: Millis,
}
