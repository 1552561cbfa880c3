//! Renders untrusted templates (a Custom webhook's body and templated headers) in child
//! processes, so that no template can take this process's memory or stall its executor.
//!
//! minijinja bounds work (fuel), recursion and, here, output, but not memory: `~` can
//! double a string in one step, 26 steps of 42 bytes are 2.8 GB, and the engine offers no
//! hook to stop it. So templates render in render workers: child processes whose address
//! space may grow by [`MEMORY_BUDGET`] over what they started with (an allocation past it
//! aborts the worker, not this process) and whose every render is stopped by an alarm
//! after [`TIME_LIMIT`]. The templates of a delivery and its events go to a worker over a
//! socket; the answer is read without blocking the executor.
//!
//! A worker serves many renders: forking for each one cost 1.5 ms of CPU per delivery
//! here (copying the page tables of a 20 MB process, then a fault in this process on its
//! first write to each page, which fork had write-protected); through a worker a render
//! takes 0.09 ms (0.01 ms in this process), 0.2 ms of CPU per delivery in all. A worker is retired after
//! [`MAX_RENDERS`] renders or [`MAX_AGE`], and leaves by itself after [`IDLE_EXIT`] without
//! work, so that the pages it keeps of this process (copy-on-write, as both move on) stay
//! few. A worker that dies while rendering is replaced; if it had rendered before, the
//! render goes again once in a fresh worker, so that only a template that fails on its own
//! is reported.
//!
//! A worker is forked from this threaded process and runs only the renderer: it inherits
//! one thread (the one that forked), so it takes no lock another thread may have held at
//! the fork — no tokio, no logging, no locks — uses only the C allocator (which the C
//! library makes safe across fork), and leaves with `_exit`.

use std::sync::LazyLock;
use std::time::Duration;

use tokio::sync::Semaphore;

/// How much a render may allocate.
pub const MEMORY_BUDGET: usize = 256 << 20;
/// How long a render may take. Fuel bounds the steps, not what one step costs (a `replace`
/// on a 100 MB string), so time is bounded too.
pub const TIME_LIMIT: Duration = Duration::from_secs(5);
/// Renders a worker serves before it is retired.
pub const MAX_RENDERS: u32 = 1000;
/// How long a worker serves before it is retired.
pub const MAX_AGE: Duration = Duration::from_secs(600);
/// A worker with nothing to do for this long exits.
pub const IDLE_EXIT: Duration = Duration::from_secs(60);

/// Renders in progress at once, across the process: each may hold [`MEMORY_BUDGET`], and
/// rendering is CPU work, so one per core. Workers are as many.
static SLOTS: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));

/// What the templates of one delivery see: the webhook and the batch's events as stored
/// (see [`crate::domain::template::context`]).
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    pub webhook_name: &'a str,
    pub webhook_type: &'a str,
    pub events: &'a [&'a str],
}

/// Why a render failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// The template (an index into the sources) that failed.
    pub index: usize,
    pub message: String,
}

/// Renders each of `sources` with the context of `input`, in order, in one worker. The
/// first failure ends the render.
pub async fn render_all(
    sources: &[&str],
    input: RenderInput<'_>,
) -> Result<Vec<String>, RenderError> {
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    let _slot = SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    imp::render_all(sources, input).await
}

#[cfg(target_os = "linux")]
mod child;
#[cfg(target_os = "linux")]
mod parent;
#[cfg(target_os = "linux")]
mod protocol;
#[cfg(target_os = "linux")]
use parent as imp;

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::sync::Arc;

    use super::{RenderError, RenderInput};
    use crate::domain::template;

    pub async fn render_all(
        sources: &[&str],
        input: RenderInput<'_>,
    ) -> Result<Vec<String>, RenderError> {
        let fail = |index, message| RenderError { index, message };
        let context = template::context(
            input.webhook_name,
            input.webhook_type,
            input.events.iter().copied(),
        )
        .map_err(|error| fail(0, error.to_string()))?;
        let sources: Vec<String> = sources.iter().map(|s| (*s).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let env = template::environment();
            let root = template::json_context(Arc::new(context));
            let mut out = Vec::with_capacity(sources.len());
            for (index, source) in sources.iter().enumerate() {
                let compiled = env
                    .template_from_str(source)
                    .map_err(|e| fail(index, template::describe(e).to_string()))?;
                out.push(
                    template::render_bounded(&compiled, root.clone())
                        .map_err(|error| fail(index, error.to_string()))?,
                );
            }
            Ok(out)
        })
        .await
        .map_err(|e| fail(0, format!("the renderer failed: {e}")))?
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A template that stays within its memory but works for minutes: each step replaces
    /// through a 4 MB string (fuel counts steps, not what they cost).
    const SLOW: &str = r#"{% set ns = namespace(s="x") %}{% for i in range(22) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{% for i in range(100000) %}{% set t = ns.s | replace("x", "yy") %}{% endfor %}"#;
    /// 42 bytes doubled 26 times: 2.8 GB.
    const DOUBLING: &str = r#"{% set ns = namespace(s="0123456789abcdef0123456789abcdef0123456789") %}{% for i in range(26) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"#;

    const NO_EVENTS: RenderInput<'static> = RenderInput {
        webhook_name: "w",
        webhook_type: "Custom",
        events: &[],
    };

    /// This process's children that are not idle workers of the pool, with their state.
    fn busy_children() -> Vec<(String, String)> {
        let idle: Vec<String> = parent::worker_pids()
            .iter()
            .map(|p| p.to_string())
            .collect();
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let Ok(list) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for pid in list
                .split_whitespace()
                .filter(|p| !idle.contains(&(*p).to_owned()))
            {
                let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest[..1].to_owned()))
                    .unwrap_or_default();
                out.push((pid.to_owned(), state));
            }
        }
        out
    }

    async fn no_busy_children_within(limit: Duration) {
        let deadline = Instant::now() + limit;
        while !busy_children().is_empty() {
            assert!(Instant::now() < deadline, "children: {:?}", busy_children());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One test, so that no other render of this test binary runs meanwhile.
    #[tokio::test]
    async fn workers_are_reused_stopped_and_reaped() {
        let input = RenderInput {
            webhook_name: "hook",
            webhook_type: "Custom",
            events: &[r#"{"a": 1, "b": "x"}"#, r#"{"a": 2}"#],
        };
        let out = render_all(
            &["{{ event.a }}", "{{ events | map(attribute='a') | join(',') }} {{ event.b | upper }} {{ event.webhookName }}"],
            input,
        )
        .await
        .unwrap();
        assert_eq!(out, ["1", "1,2 X hook"]);
        let worker = parent::worker_pids();
        assert_eq!(worker.len(), 1);
        // The next render is served by the same worker.
        render_all(&["{{ 1 }}"], NO_EVENTS).await.unwrap();
        assert_eq!(parent::worker_pids(), worker);

        // A render error names its template; the worker serves on.
        let err = render_all(&["{{ 1 }}", "{{ x"], NO_EVENTS)
            .await
            .unwrap_err();
        assert_eq!(err.index, 1);
        let err = render_all(&["{{ 1 }}", "{{ 1 / 0 }}"], NO_EVENTS)
            .await
            .unwrap_err();
        assert_eq!(err.index, 1, "{err:?}");
        assert_eq!(parent::worker_pids(), worker);

        // Memory: the worker dies, the render is tried once more in a fresh worker, which
        // dies too; the next render gets a new worker.
        let err = render_all(&["{{ 1 }}", DOUBLING], NO_EVENTS)
            .await
            .unwrap_err();
        assert_eq!(err.index, 1);
        assert!(err.message.contains("256 MiB of memory"), "{err:?}");
        no_busy_children_within(Duration::from_secs(3)).await;
        render_all(&["{{ 1 }}"], NO_EVENTS).await.unwrap();
        assert_ne!(parent::worker_pids(), worker);

        // Abandoned by its caller (the delivery was cancelled): stopped and reaped.
        let given_up =
            tokio::time::timeout(Duration::from_millis(200), render_all(&[SLOW], NO_EVENTS)).await;
        assert!(given_up.is_err(), "the render was still running");
        no_busy_children_within(Duration::from_secs(3)).await;

        // Left to run: stopped at the time limit, with that reason, and not tried again.
        let started = Instant::now();
        let err = render_all(&["{{ 1 }}", SLOW], NO_EVENTS).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.index, 1);
        assert!(err.message.contains("longer than 5 s"), "{err:?}");
        assert!(
            took >= TIME_LIMIT - Duration::from_millis(100)
                && took < TIME_LIMIT + Duration::from_secs(2),
            "{took:?}"
        );
        no_busy_children_within(Duration::from_secs(3)).await;
        render_all(&["{{ 1 }}"], NO_EVENTS).await.unwrap();
    }

    #[test]
    fn requests_read_back_as_written() {
        let input = RenderInput {
            webhook_name: "näme",
            webhook_type: "Custom",
            events: &["{}", r#"{"x": "é"}"#],
        };
        let bytes = protocol::encode(&["a", "", "{{ x }}"], input);
        assert_eq!(
            u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize,
            bytes.len() - 8
        );
        let request = protocol::decode(&bytes[8..]).unwrap();
        assert_eq!(request.sources, ["a", "", "{{ x }}"]);
        assert_eq!(
            (request.webhook_name, request.webhook_type),
            ("näme", "Custom")
        );
        assert_eq!(request.events, input.events);
        assert!(protocol::decode(&bytes[8..bytes.len() - 1]).is_none());
    }
}
