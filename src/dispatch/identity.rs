//! Who a dispatcher instance is, and which registered instances are dead for sure.
//!
//! A lease normally outlives a dead holder by the lease TTL: another instance cannot tell a
//! dead one from a slow one. An instance restarted on the same machine can: a process that
//! ran in its own pid namespace and is gone from it (or whose pid now belongs to a process
//! started later) sends nothing any more. Such leases are taken back at once, so a restart
//! does not wait for its own predecessor's leases to expire.

use uuid::Uuid;

use crate::clock::Millis;
use crate::store::InstanceRecord;

/// This process, as the instances table records it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: Uuid,
    /// The configured name, or `<host name>:<pid>`.
    pub name: String,
    pub host: String,
    pub pid: u32,
    /// `<boot id>/<pid namespace>`: the processes whose pids this process can check. None
    /// where the system does not say (then no pid is ever judged).
    pub pid_namespace: Option<String>,
    /// When this process started, in clock ticks after boot: a pid with another start
    /// time is another process.
    pub process_started: Option<i64>,
}

impl Identity {
    /// The identity of this process, named `name` or, by default, `<host name>:<pid>`.
    pub fn of_this_process(name: Option<&str>) -> Self {
        let pid = std::process::id();
        let host = host_name();
        Self {
            id: Uuid::new_v4(),
            name: name.map_or_else(|| format!("{host}:{pid}"), str::to_owned),
            host,
            pid,
            pid_namespace: pid_namespace(),
            process_started: process_started(pid),
        }
    }

    pub fn record(&self, now: Millis) -> InstanceRecord {
        InstanceRecord {
            id: self.id,
            name: Some(self.name.clone()),
            host: Some(self.host.clone()),
            pid: Some(i64::from(self.pid)),
            pid_namespace: self.pid_namespace.clone(),
            process_started: self.process_started,
            heartbeat_at: now,
        }
    }

    /// Whether `other` is dead for sure, so that its leases may be taken now without any
    /// risk of two senders. In this pid namespace that is decided by its process: gone, or
    /// its pid taken by a process started at another time. Elsewhere it cannot be checked,
    /// and only an instance with this one's name counts, and only when this one `starting`:
    /// it is this instance's previous run (a container restarted as pid 1 keeps its host
    /// name and pid; an operator-set name is stable by design).
    pub fn outlived(&self, other: &InstanceRecord, starting: bool) -> bool {
        if other.id == self.id {
            return false;
        }
        match (&self.pid_namespace, &other.pid_namespace, other.pid) {
            (Some(mine), Some(theirs), Some(pid)) if mine == theirs => {
                !process_alive(pid, other.process_started)
            }
            _ => starting && other.name.as_deref() == Some(self.name.as_str()),
        }
    }
}

/// Whether the process `pid` that started at `started` (when known) still runs here.
/// (Only asked where a pid namespace is known, which is on Linux.)
#[cfg(not(target_os = "linux"))]
fn process_alive(_pid: i64, _started: Option<i64>) -> bool {
    true
}

/// Whether the process `pid` that started at `started` (when known) still runs here.
#[cfg(target_os = "linux")]
fn process_alive(pid: i64, started: Option<i64>) -> bool {
    // 0 and negative values would name process groups; a stored value out of range is
    // not a process this one can judge: alive, to be safe.
    let Ok(pid) = i32::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
    if !exists {
        return false;
    }
    // The pid may have been given to another process since.
    match (started, process_started(pid as u32)) {
        (Some(then), Some(now)) => then == now,
        _ => true,
    }
}

#[cfg(not(target_os = "linux"))]
fn host_name() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned())
}

#[cfg(target_os = "linux")]
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is NUL-terminated within it
    // (the last byte stays 0 even if the name was cut).
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) } == 0;
    let len = buf.iter().position(|&b| b == 0).unwrap_or(0);
    match std::str::from_utf8(&buf[..len]) {
        Ok(name) if ok && !name.is_empty() => name.to_owned(),
        _ => "localhost".to_owned(),
    }
}

/// The boot id and the pid namespace: two processes with the same value see the same pids.
fn pid_namespace() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), namespace.display()))
}

/// The start time of process `pid` in clock ticks after boot (field 22 of its stat file).
fn process_started(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

// What these check (pid namespaces, a child's pid) is Linux's.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn other(me: &Identity) -> InstanceRecord {
        let mut record = me.record(0);
        record.id = Uuid::new_v4();
        record
    }

    #[test]
    fn this_process_is_alive_and_a_gone_pid_is_not() {
        let me = Identity::of_this_process(None);
        assert_eq!(me.name, format!("{}:{}", me.host, me.pid));
        assert!(me.pid_namespace.is_some() && me.process_started.is_some());
        // Another dispatcher in this very process: alive, whatever the name.
        let twin = other(&me);
        assert!(!me.outlived(&twin, true));
        assert!(!me.outlived(&me.record(0), true), "never itself");
        // This pid with another start time: the pid was reused, the old process is gone.
        let mut reused = other(&me);
        reused.process_started = me.process_started.map(|t| t - 1);
        assert!(me.outlived(&reused, false));
        // A child that exited and was reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut gone = other(&me);
        gone.pid = Some(i64::from(pid));
        gone.name = Some("someone else".into());
        assert!(me.outlived(&gone, false));
    }

    #[test]
    fn elsewhere_only_a_previous_run_under_the_same_name_is_taken_and_only_at_start() {
        let me = Identity::of_this_process(Some("api-1"));
        let mut elsewhere = other(&me);
        elsewhere.pid_namespace = Some("another machine".into());
        assert!(me.outlived(&elsewhere, true));
        assert!(!me.outlived(&elsewhere, false), "only when starting");
        elsewhere.name = Some("api-2".into());
        assert!(!me.outlived(&elsewhere, true));
        // An instance registered before names were recorded.
        let unknown = InstanceRecord {
            name: None,
            host: None,
            pid: None,
            pid_namespace: None,
            process_started: None,
            ..other(&me)
        };
        assert!(!me.outlived(&unknown, true));
    }
}
