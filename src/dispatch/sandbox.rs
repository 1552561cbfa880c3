//! Renders untrusted templates (a Custom webhook's body and templated headers) in a
//! short-lived child process, so that no template can take this process's memory or
//! stall its executor.
//!
//! minijinja bounds work (fuel), recursion and, here, output, but not memory: `~` can
//! double a string in one step, 26 steps of 42 bytes are 2.8 GB, and the engine offers no
//! hook to stop it. So the templates of a delivery render together in a child forked for
//! them, whose address space may grow by [`MEMORY_BUDGET`] over what it inherited: an
//! allocation past that aborts the child, not this process. The parent compiles the
//! templates first (a syntax error needs no child), reads the result from a pipe without
//! blocking the executor, kills the child after [`TIME_LIMIT`] and reaps it.
//!
//! What the child runs is the renderer and nothing else. It inherits only the thread that
//! forked, so it must not take a lock another thread may have held at the fork: it uses
//! no tokio, no logging, no locks, only the C allocator (which the C library makes safe
//! across fork), and leaves with `_exit`.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::Semaphore;

/// How much a render may allocate.
pub const MEMORY_BUDGET: usize = 256 << 20;
/// How long a render may take. Fuel bounds the steps, not what one step costs (a `replace`
/// on a 100 MB string), so time is bounded too.
pub const TIME_LIMIT: Duration = Duration::from_secs(5);

/// Renders in progress at once, across the process: each may hold [`MEMORY_BUDGET`], and
/// rendering is CPU work, so one per core.
static SLOTS: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));

/// Why a render failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// The template (an index into the sources) that failed.
    pub index: usize,
    pub message: String,
}

/// Renders each of `sources` with `context` as the template context, in order, all in one
/// child process. The first failure ends the render.
pub async fn render_all(
    sources: &[&str],
    context: Arc<serde_json::Value>,
) -> Result<Vec<String>, RenderError> {
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    let _slot = SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    imp::render_all(sources, context).await
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io::Read;
    use std::os::fd::{AsRawFd, OwnedFd, RawFd};
    use std::sync::Arc;

    use tokio::io::AsyncReadExt;

    use super::{MEMORY_BUDGET, RenderError, TIME_LIMIT};
    use crate::domain::template;

    /// A result in the pipe: a tag byte, a little-endian u32 length, the text.
    const RENDERED: u8 = 0;
    const FAILED: u8 = 1;
    /// The fd the child writes to, once it has closed all others.
    const OUT_FD: RawFd = 3;

    pub async fn render_all(
        sources: &[&str],
        context: Arc<serde_json::Value>,
    ) -> Result<Vec<String>, RenderError> {
        let fail = |index, message: String| RenderError { index, message };
        // Forking fails only when the system is out of processes or memory: try again
        // shortly before giving up.
        let mut retries = [10, 50, 250].into_iter();
        let (child, reader) = loop {
            match spawn(sources, &context)? {
                Ok(started) => break started,
                Err(err) => match retries.next() {
                    Some(ms) => tokio::time::sleep(std::time::Duration::from_millis(ms)).await,
                    None => {
                        return Err(fail(0, format!("could not start a render process: {err}")));
                    }
                },
            }
        };
        let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(reader)
            .map_err(|e| fail(0, format!("render pipe: {e}")))?;
        // Each output is bounded; a message, or the bytes of a misbehaving child, are too.
        let limit = (sources.len() * (template::MAX_OUTPUT_BYTES + 64 * 1024)) as u64;
        let mut bytes = Vec::new();
        let read = tokio::time::timeout(
            TIME_LIMIT,
            (&mut reader).take(limit).read_to_end(&mut bytes),
        )
        .await;
        let timed_out = read.is_err();
        // A child that has not closed its pipe within the limits is stopped, so that
        // waiting for it cannot hang.
        let ended = matches!(read, Ok(Ok(_))) && (bytes.len() as u64) < limit;
        if !ended {
            child.kill();
        }
        let status = child.wait().await;
        let (results, failure) = parse(&bytes);
        let index = results.len();
        if let Some(message) = failure {
            return Err(fail(index, message));
        }
        if results.len() == sources.len() {
            return Ok(results);
        }
        let message = if timed_out {
            format!(
                "rendering took longer than {} s and was stopped",
                TIME_LIMIT.as_secs()
            )
        } else if !ended {
            "the render process did not answer as expected and was stopped".to_owned()
        } else {
            match status {
                Some(status) if libc::WIFSIGNALED(status) => format!(
                    "rendering needed more than the {} MiB of memory a render may use and was stopped",
                    MEMORY_BUDGET >> 20
                ),
                Some(status) if libc::WIFEXITED(status) => format!(
                    "the render process failed (exit status {})",
                    libc::WEXITSTATUS(status)
                ),
                _ => "the render process ended without a result".to_owned(),
            }
        };
        Err(fail(index, message))
    }

    /// The results a child wrote, and its failure message if it reported one.
    fn parse(mut bytes: &[u8]) -> (Vec<String>, Option<String>) {
        let mut results = Vec::new();
        while bytes.len() >= 5 {
            let tag = bytes[0];
            let len = u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes")) as usize;
            let Some(text) = bytes.get(5..5 + len) else {
                break;
            };
            let text = String::from_utf8_lossy(text).into_owned();
            bytes = &bytes[5 + len..];
            match tag {
                RENDERED => results.push(text),
                _ => return (results, Some(text)),
            }
        }
        (results, None)
    }

    /// Compiles the templates and forks the child that renders them. The outer error is a
    /// template that does not compile; the inner one, a fork that failed.
    fn spawn(
        sources: &[&str],
        context: &Arc<serde_json::Value>,
    ) -> Result<std::io::Result<(Child, OwnedFd)>, RenderError> {
        let env = template::environment();
        let mut templates = Vec::with_capacity(sources.len());
        for (index, source) in sources.iter().enumerate() {
            let compiled = env.template_from_str(source).map_err(|e| RenderError {
                index,
                message: template::describe(e),
            })?;
            templates.push(compiled);
        }
        let root = template::json_context(context.clone());
        let (reader, writer) = match std::io::pipe() {
            Ok(pipe) => pipe,
            Err(err) => return Ok(Err(err)),
        };
        // SAFETY: the child runs only `child_main`, which keeps to what is safe after a
        // fork in a threaded process (see the module's documentation) and never returns.
        match unsafe { libc::fork() } {
            -1 => Ok(Err(std::io::Error::last_os_error())),
            0 => child_main(writer.as_raw_fd(), &templates, &root),
            pid => {
                drop(writer);
                Ok(Ok((Child { pid, reaped: false }, OwnedFd::from(reader))))
            }
        }
    }

    /// The child: limits itself, renders, writes the results, and exits.
    fn child_main(
        out: RawFd,
        templates: &[minijinja::Template<'_, '_>],
        root: &minijinja::Value,
    ) -> ! {
        // SAFETY: plain system calls on the child's own descriptors and limits.
        unsafe { confine(out) };
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for compiled in templates {
                let written = match template::render_bounded(compiled, root.clone()) {
                    Ok(text) => write_result(RENDERED, &text),
                    Err(message) => {
                        let _ = write_result(FAILED, &message);
                        return;
                    }
                };
                if written.is_err() {
                    return;
                }
            }
        })) {
            Ok(()) => 0,
            Err(_) => {
                let _ = write_result(FAILED, "the template engine failed");
                70
            }
        };
        // SAFETY: ends the child without running anything of the parent's (no atexit
        // handlers, no destructors of state it shares with the parent).
        unsafe { libc::_exit(code) }
    }

    /// Keeps the child to its pipe and its budget: every other descriptor closed (a
    /// child holding a copy of a socket or of another render's pipe would keep it open),
    /// standard streams to /dev/null (an allocation failure prints a line), no core dump,
    /// and the address space and data limited to what it has plus [`MEMORY_BUDGET`].
    unsafe fn confine(out: RawFd) {
        unsafe {
            if out != OUT_FD {
                libc::dup2(out, OUT_FD);
            }
            let first = (OUT_FD + 1) as libc::c_uint;
            if libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) != 0 {
                // Kernels before 5.9: close what the descriptor limit allows.
                let mut nofile = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile);
                for fd in first as RawFd..(nofile.rlim_cur.min(65_536) as RawFd) {
                    libc::close(fd);
                }
            }
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                for fd in 0..=2 {
                    libc::dup2(null, fd);
                }
                if null > 2 {
                    libc::close(null);
                }
            }
            libc::prctl(libc::PR_SET_DUMPABLE, 0);
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            let (size, data) = current_size();
            for (resource, used) in [(libc::RLIMIT_AS, size), (libc::RLIMIT_DATA, data)] {
                let limit = (used + MEMORY_BUDGET) as libc::rlim_t;
                let limit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                libc::setrlimit(resource, &limit);
            }
        }
    }

    /// The process's address space and data segment in bytes (`/proc/self/statm`).
    fn current_size() -> (usize, usize) {
        let mut text = String::new();
        let _ =
            std::fs::File::open("/proc/self/statm").and_then(|mut f| f.read_to_string(&mut text));
        let pages: Vec<usize> = text
            .split_whitespace()
            .map(|n| n.parse().unwrap_or(0))
            .collect();
        // SAFETY: sysconf only reads a constant of the system.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let field = |i: usize| pages.get(i).copied().unwrap_or(0) * page;
        (field(0), field(5))
    }

    fn write_result(tag: u8, text: &str) -> std::io::Result<()> {
        let len = u32::try_from(text.len()).map_err(std::io::Error::other)?;
        let mut header = [tag, 0, 0, 0, 0];
        header[1..].copy_from_slice(&len.to_le_bytes());
        write_all(&header)?;
        write_all(text.as_bytes())
    }

    fn write_all(mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            // SAFETY: writes from a live buffer to the child's own pipe descriptor.
            let n = unsafe { libc::write(OUT_FD, bytes.as_ptr().cast(), bytes.len()) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            bytes = &bytes[n as usize..];
        }
        Ok(())
    }

    /// A render process; killed and reaped if dropped before it was waited for (the
    /// delivery that started it was cancelled).
    struct Child {
        pid: libc::pid_t,
        reaped: bool,
    }

    impl Child {
        fn kill(&self) {
            // SAFETY: the pid is this process's unreaped child, so it names no other process.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }

        /// Waits for the child to end; its wait status, if it could be read.
        async fn wait(mut self) -> Option<libc::c_int> {
            self.reaped = true;
            let pid = self.pid;
            // Usually over already (it closed the pipe as it exited): no thread needed.
            match waitpid(pid, libc::WNOHANG) {
                Some((0, _)) => {}
                Some((_, status)) => return Some(status),
                None => return None,
            }
            tokio::task::spawn_blocking(move || waitpid(pid, 0).map(|(_, status)| status))
                .await
                .ok()
                .flatten()
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            if self.reaped {
                return;
            }
            self.kill();
            let pid = self.pid;
            let reap = move || {
                waitpid(pid, 0);
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(reap)),
                Err(_) => drop(std::thread::spawn(reap)),
            }
        }
    }

    /// `waitpid`, going again when interrupted: (pid or 0, wait status).
    fn waitpid(pid: libc::pid_t, flags: libc::c_int) -> Option<(libc::pid_t, libc::c_int)> {
        loop {
            let mut status = 0;
            // SAFETY: waits for this process's own child.
            let got = unsafe { libc::waitpid(pid, &mut status, flags) };
            if got >= 0 {
                return Some((got, status));
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return None;
            }
        }
    }
}

/// Elsewhere than Linux: rendered in this process, on a blocking thread, bounded in work
/// and output but not in memory.
#[cfg(not(target_os = "linux"))]
mod imp {
    use std::sync::Arc;

    use super::RenderError;
    use crate::domain::template;

    pub async fn render_all(
        sources: &[&str],
        context: Arc<serde_json::Value>,
    ) -> Result<Vec<String>, RenderError> {
        let sources: Vec<String> = sources.iter().map(|s| (*s).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let env = template::environment();
            let root = template::json_context(context);
            let mut out = Vec::with_capacity(sources.len());
            for (index, source) in sources.iter().enumerate() {
                let fail = |message| RenderError { index, message };
                let compiled = env
                    .template_from_str(source)
                    .map_err(|e| fail(template::describe(e)))?;
                out.push(template::render_bounded(&compiled, root.clone()).map_err(fail)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| RenderError {
            index: 0,
            message: format!("the renderer failed: {e}"),
        })?
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::Instant;

    use serde_json::json;

    use super::*;

    /// A template that stays within its memory but works for minutes: each step replaces
    /// through a 4 MB string (fuel counts steps, not what they cost).
    const SLOW: &str = r#"{% set ns = namespace(s="x") %}{% for i in range(22) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{% for i in range(100000) %}{% set t = ns.s | replace("x", "yy") %}{% endfor %}"#;

    /// This process's children, running or not yet reaped.
    fn children() -> Vec<String> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(list.split_whitespace().map(str::to_owned));
            }
        }
        out
    }

    async fn no_children_within(limit: Duration) {
        let deadline = Instant::now() + limit;
        while !children().is_empty() {
            assert!(Instant::now() < deadline, "children left: {:?}", children());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One test, so that no other render of this test binary runs meanwhile.
    #[tokio::test]
    async fn slow_and_abandoned_renders_are_stopped_and_reaped() {
        // Abandoned by its caller (the delivery was cancelled): killed and reaped.
        let given_up = tokio::time::timeout(
            Duration::from_millis(200),
            render_all(&[SLOW], Arc::new(json!({}))),
        )
        .await;
        assert!(given_up.is_err(), "the render was still running");
        no_children_within(Duration::from_secs(3)).await;

        // Left to run: stopped at the time limit, with that reason.
        let started = Instant::now();
        let err = render_all(&["{{ 1 }}", SLOW], Arc::new(json!({})))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.index, 1);
        assert!(err.message.contains("longer than 5 s"), "{err:?}");
        assert!(
            took >= TIME_LIMIT && took < TIME_LIMIT + Duration::from_secs(2),
            "{took:?}"
        );
        no_children_within(Duration::from_secs(3)).await;

        // A compile error needs no process; a render error names its template.
        let err = render_all(&["{{ 1 }}", "{{ x"], Arc::new(json!({})))
            .await
            .unwrap_err();
        assert_eq!(err.index, 1);
        let err = render_all(&["{{ 1 }}", "{{ 1 / 0 }}"], Arc::new(json!({})))
            .await
            .unwrap_err();
        assert_eq!(err.index, 1, "{err:?}");
        let out = render_all(
            &["{{ a }}", "{{ b | upper }}"],
            Arc::new(json!({"a": 1, "b": "x"})),
        )
        .await
        .unwrap();
        assert_eq!(out, ["1", "X"]);
        no_children_within(Duration::from_secs(3)).await;
    }
}
