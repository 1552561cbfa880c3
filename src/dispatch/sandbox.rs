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
mod imp {
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, RawFd};
    use std::os::unix::net::UnixStream;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{
        IDLE_EXIT, MAX_AGE, MAX_RENDERS, MEMORY_BUDGET, RenderError, RenderInput, TIME_LIMIT,
    };
    use crate::domain::template;

    /// The request a worker reads: each part length-prefixed (u32, little-endian), after the
    /// whole request's length (u64).
    pub(super) fn encode(sources: &[&str], input: RenderInput<'_>) -> Vec<u8> {
        let parts = 2 + sources.len() + 2 + input.events.len();
        let size: usize = sources
            .iter()
            .chain(input.events)
            .map(|s| s.len())
            .sum::<usize>()
            + input.webhook_name.len()
            + input.webhook_type.len()
            + 4 * (parts + 2);
        let mut out = Vec::with_capacity(size + 8);
        out.extend_from_slice(&0u64.to_le_bytes());
        let count = |out: &mut Vec<u8>, n: usize| out.extend_from_slice(&(n as u32).to_le_bytes());
        count(&mut out, sources.len());
        for part in sources
            .iter()
            .chain([&input.webhook_name, &input.webhook_type])
        {
            count(&mut out, part.len());
            out.extend_from_slice(part.as_bytes());
        }
        count(&mut out, input.events.len());
        for event in input.events {
            count(&mut out, event.len());
            out.extend_from_slice(event.as_bytes());
        }
        let length = (out.len() - 8) as u64;
        out[..8].copy_from_slice(&length.to_le_bytes());
        out
    }

    /// A request as the worker reads it back.
    pub(super) struct Request<'a> {
        pub(super) sources: Vec<&'a str>,
        pub(super) webhook_name: &'a str,
        pub(super) webhook_type: &'a str,
        pub(super) events: Vec<&'a str>,
    }

    pub(super) fn decode(mut bytes: &[u8]) -> Option<Request<'_>> {
        fn count(bytes: &mut &[u8]) -> Option<usize> {
            let (head, rest) = bytes.split_at_checked(4)?;
            *bytes = rest;
            Some(u32::from_le_bytes(head.try_into().ok()?) as usize)
        }
        fn part<'a>(bytes: &mut &'a [u8]) -> Option<&'a str> {
            let len = count(bytes)?;
            let (head, rest) = bytes.split_at_checked(len)?;
            *bytes = rest;
            std::str::from_utf8(head).ok()
        }
        let sources = (0..count(&mut bytes)?)
            .map(|_| part(&mut bytes))
            .collect::<Option<Vec<_>>>()?;
        let webhook_name = part(&mut bytes)?;
        let webhook_type = part(&mut bytes)?;
        let events = (0..count(&mut bytes)?)
            .map(|_| part(&mut bytes))
            .collect::<Option<Vec<_>>>()?;
        Some(Request {
            sources,
            webhook_name,
            webhook_type,
            events,
        })
    }

    /// A result in the answer: a tag byte, a little-endian u32 length, the text.
    const RENDERED: u8 = 0;
    const FAILED: u8 = 1;
    /// After the results, one byte: whether the worker serves on or leaves.
    const SERVES_ON: u8 = 0;
    const LEAVES: u8 = 1;

    /// The descriptor a worker talks on, once it has closed all others.
    const CHANNEL_FD: RawFd = 3;
    /// What a worker may keep of what renders allocated (the allocator's caches) before it
    /// leaves: what it keeps is not there for the next render.
    const MAX_KEPT: usize = MEMORY_BUDGET / 4;
    /// A worker idle this long is not lent again: it is about to leave by itself.
    const LEND_IDLE: Duration = IDLE_EXIT.saturating_sub(Duration::from_secs(10));
    /// How long past the worker's own alarm the answer is waited for.
    const ANSWER_GRACE: Duration = Duration::from_secs(2);

    /// Workers waiting for a render.
    static IDLE: Mutex<Vec<Worker>> = Mutex::new(Vec::new());

    pub async fn render_all(
        sources: &[&str],
        input: RenderInput<'_>,
    ) -> Result<Vec<String>, RenderError> {
        let request = encode(sources, input);
        let mut retried = false;
        loop {
            let (mut worker, fresh) = match lend() {
                Some(worker) => (worker, false),
                None => (spawn().await?, true),
            };
            let mut done = 0;
            match worker.exchange(&request, sources.len(), &mut done).await {
                Ok((result, leaves)) => {
                    worker.renders += 1;
                    worker.last_used = Instant::now();
                    if !leaves {
                        give_back(worker);
                    }
                    return result;
                }
                Err(stopped) => {
                    let status = worker.reap().await;
                    let alarm = status.is_some_and(|s| {
                        libc::WIFSIGNALED(s) && libc::WTERMSIG(s) == libc::SIGALRM
                    });
                    let too_long = alarm || stopped == Stopped::NoAnswer;
                    // A worker that had served before may have died of what earlier renders
                    // left, or have been leaving: once more, in a fresh one.
                    if !fresh && !too_long && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(RenderError {
                        index: done,
                        message: death(status, too_long),
                    });
                }
            }
        }
    }

    /// How an exchange with a worker ended without an answer.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Stopped {
        /// The worker died (its channel closed).
        Died,
        /// No answer past the worker's own alarm: it was stopped.
        NoAnswer,
    }

    /// Why a worker died while rendering, from its wait status.
    fn death(status: Option<libc::c_int>, too_long: bool) -> String {
        match status {
            _ if too_long => format!(
                "rendering took longer than {} s and was stopped",
                TIME_LIMIT.as_secs()
            ),
            // Killed by the allocator's abort, or by the kernel when memory ran out.
            Some(s) if libc::WIFSIGNALED(s) => format!(
                "rendering needed more than the {} MiB of memory a render may use and was stopped",
                MEMORY_BUDGET >> 20
            ),
            Some(s) if libc::WIFEXITED(s) => format!(
                "the render process failed (exit status {})",
                libc::WEXITSTATUS(s)
            ),
            _ => "the render process ended without an answer".to_owned(),
        }
    }

    /// An idle worker, if one is alive and fit to serve.
    fn lend() -> Option<Worker> {
        let mut retired = Vec::new();
        let lent = {
            let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
            let mut lent = None;
            while let Some(mut worker) = idle.pop() {
                if worker.last_used.elapsed() < LEND_IDLE && worker.alive() {
                    lent = Some(worker);
                    break;
                }
                retired.push(worker);
            }
            lent
        };
        drop(retired); // stopped and reaped outside the lock
        lent
    }

    fn give_back(worker: Worker) {
        if worker.renders >= MAX_RENDERS || worker.born.elapsed() >= MAX_AGE {
            return; // dropped: stopped and reaped
        }
        IDLE.lock().unwrap_or_else(|e| e.into_inner()).push(worker);
    }

    /// Forks a worker. Forking fails only when the system is out of processes or memory:
    /// it is tried again shortly before the render is given up.
    async fn spawn() -> Result<Worker, RenderError> {
        let mut retries = [10, 50, 250].into_iter();
        loop {
            match fork_worker() {
                Ok(worker) => return Ok(worker),
                Err(err) => match retries.next() {
                    Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                    None => {
                        return Err(RenderError {
                            index: 0,
                            message: format!("could not start a render process: {err}"),
                        });
                    }
                },
            }
        }
    }

    fn fork_worker() -> std::io::Result<Worker> {
        // The engine's shared tables are built once, on first use: built here, before the
        // fork, so that the worker never finds them half-built by another thread.
        drop(template::environment());
        let (ours, theirs) = UnixStream::pair()?;
        // SAFETY: the child runs only `worker_main`, which keeps to what is safe after a
        // fork in a threaded process (see the module's documentation) and never returns.
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()),
            0 => worker_main(theirs.as_raw_fd()),
            pid => {
                drop(theirs);
                ours.set_nonblocking(true)?;
                let now = Instant::now();
                Ok(Worker {
                    pid,
                    channel: Some(ours),
                    renders: 0,
                    born: now,
                    last_used: now,
                    reaped: false,
                })
            }
        }
    }

    /// A render worker, seen from this process; stopped and reaped when dropped.
    struct Worker {
        pid: libc::pid_t,
        /// Not blocking; lent to the runtime of each exchange.
        channel: Option<UnixStream>,
        renders: u32,
        born: Instant,
        last_used: Instant,
        reaped: bool,
    }

    impl Worker {
        /// Sends a request and reads the answer: the results (or the failure the worker
        /// reported) and whether it leaves; `done` counts the results that came before an
        /// answer that ended early.
        async fn exchange(
            &mut self,
            request: &[u8],
            expected: usize,
            done: &mut usize,
        ) -> Result<(Result<Vec<String>, RenderError>, bool), Stopped> {
            let channel = self.channel.take().ok_or(Stopped::Died)?;
            let mut stream =
                tokio::net::UnixStream::from_std(channel).map_err(|_| Stopped::Died)?;
            let answer = tokio::time::timeout(TIME_LIMIT + ANSWER_GRACE, async {
                stream.write_all(request).await?;
                let mut results = Vec::with_capacity(expected);
                let result = loop {
                    let mut head = [0u8; 5];
                    stream.read_exact(&mut head).await?;
                    let len = u32::from_le_bytes(head[1..].try_into().expect("4 bytes")) as usize;
                    if len > template::MAX_OUTPUT_BYTES + 64 * 1024 {
                        return Err(std::io::Error::other("an answer over its bound"));
                    }
                    let mut text = vec![0u8; len];
                    stream.read_exact(&mut text).await?;
                    let text = String::from_utf8_lossy(&text).into_owned();
                    if head[0] == RENDERED {
                        results.push(text);
                        *done = results.len();
                        if results.len() == expected {
                            break Ok(results);
                        }
                    } else {
                        break Err(RenderError {
                            index: results.len(),
                            message: text,
                        });
                    }
                };
                let leaves = stream.read_u8().await? == LEAVES;
                Ok::<_, std::io::Error>((result, leaves))
            })
            .await;
            match answer {
                Ok(Ok(answer)) => {
                    self.channel = Some(stream.into_std().map_err(|_| Stopped::Died)?);
                    Ok(answer)
                }
                Ok(Err(_)) => Err(Stopped::Died),
                Err(_) => {
                    self.kill();
                    Err(Stopped::NoAnswer)
                }
            }
        }

        /// Whether the worker is still there (it leaves by itself when idle).
        fn alive(&mut self) -> bool {
            match waitpid(self.pid, libc::WNOHANG) {
                Some((0, _)) => true,
                _ => {
                    self.reaped = true;
                    false
                }
            }
        }

        fn kill(&self) {
            if !self.reaped {
                // SAFETY: an unreaped child's pid names no other process.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
            }
        }

        /// Waits for a worker that died (or is dying); its wait status.
        async fn reap(&mut self) -> Option<libc::c_int> {
            if self.reaped {
                return None;
            }
            self.reaped = true;
            let pid = self.pid;
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

    impl Drop for Worker {
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

    // ---- the worker process ----

    /// The worker: confines itself, then renders request after request until it is idle
    /// too long, its channel closes, or it has kept too much memory.
    fn worker_main(channel: RawFd) -> ! {
        // SAFETY: plain system calls on the worker's own descriptors, signals and limits.
        let started = unsafe { confine(channel) };
        // SAFETY: the descriptor is the worker's end of its channel, owned from here on.
        let mut channel = unsafe { UnixStream::from_raw_fd(CHANNEL_FD) };
        loop {
            if !readable_within(IDLE_EXIT) {
                leave(0);
            }
            let Some(request) = read_request(&mut channel) else {
                leave(0);
            };
            // SAFETY: arms the process's own alarm; its default action ends the worker.
            unsafe { libc::alarm(TIME_LIMIT.as_secs() as libc::c_uint) };
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serve(&request, &mut channel)
            }));
            drop(request);
            let leaves = match served {
                Ok(Ok(())) => trim_and_measure().saturating_sub(started) > MAX_KEPT,
                // The channel is gone: nobody waits for an answer.
                Ok(Err(_)) => leave(0),
                Err(_) => {
                    let _ = write_result(&mut channel, FAILED, "the template engine failed");
                    true
                }
            };
            let said = channel.write_all(&[if leaves { LEAVES } else { SERVES_ON }]);
            // SAFETY: disarms the alarm.
            unsafe { libc::alarm(0) };
            if leaves || said.is_err() {
                leave(0);
            }
        }
    }

    /// Renders one request and writes the results (up to the first failure).
    fn serve(request: &[u8], channel: &mut UnixStream) -> std::io::Result<()> {
        let Some(request) = decode(request) else {
            return write_result(channel, FAILED, "a request the render process cannot read");
        };
        let context = match template::context(
            request.webhook_name,
            request.webhook_type,
            request.events.iter().copied(),
        ) {
            Ok(context) => context,
            Err(error) => return write_result(channel, FAILED, &error.to_string()),
        };
        let root = template::json_context(Arc::new(context));
        let env = template::environment();
        for source in &request.sources {
            let rendered = env
                .template_from_str(source)
                .map_err(template::describe)
                .and_then(|compiled| template::render_bounded(&compiled, root.clone()));
            match rendered {
                Ok(text) => write_result(channel, RENDERED, &text)?,
                Err(error) => return write_result(channel, FAILED, &error.to_string()),
            }
        }
        Ok(())
    }

    fn leave(code: libc::c_int) -> ! {
        // SAFETY: ends the worker without running anything of the parent's (no atexit
        // handlers, no destructors of state it shares with the parent).
        unsafe { libc::_exit(code) }
    }

    fn read_request(channel: &mut UnixStream) -> Option<Vec<u8>> {
        let mut length = [0u8; 8];
        channel.read_exact(&mut length).ok()?;
        let length = usize::try_from(u64::from_le_bytes(length)).ok()?;
        let mut request = Vec::new();
        request.try_reserve_exact(length).ok()?;
        request.resize(length, 0);
        channel.read_exact(&mut request).ok()?;
        Some(request)
    }

    fn write_result(channel: &mut UnixStream, tag: u8, text: &str) -> std::io::Result<()> {
        let len = u32::try_from(text.len()).map_err(std::io::Error::other)?;
        let mut head = [tag, 0, 0, 0, 0];
        head[1..].copy_from_slice(&len.to_le_bytes());
        channel.write_all(&head)?;
        channel.write_all(text.as_bytes())
    }

    /// Whether a request arrives within `limit`.
    fn readable_within(limit: Duration) -> bool {
        let mut poll = libc::pollfd {
            fd: CHANNEL_FD,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(limit.as_millis()).unwrap_or(libc::c_int::MAX);
        loop {
            // SAFETY: polls one descriptor of the worker's own.
            let ready = unsafe { libc::poll(&mut poll, 1, ms) };
            if ready >= 0 {
                return ready > 0;
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return false;
            }
        }
    }

    /// Hands what renders freed back to the system; the data segment's size after it.
    fn trim_and_measure() -> usize {
        #[cfg(target_env = "gnu")]
        // SAFETY: releases free memory of the allocator's own.
        unsafe {
            libc::malloc_trim(0);
        }
        current_size().1
    }

    /// Keeps the worker to its channel and its budget: every other descriptor closed (a
    /// worker holding a copy of a socket or of another worker's channel would keep it
    /// open), standard streams to /dev/null (an allocation failure prints a line), default
    /// signal actions (the alarm ends it; a shutdown's SIGTERM too), no core dump, and
    /// the address space and data limited to what it has plus [`MEMORY_BUDGET`]. Returns
    /// the data segment's size, from which growth is measured.
    unsafe fn confine(channel: RawFd) -> usize {
        unsafe {
            if channel != CHANNEL_FD {
                libc::dup2(channel, CHANNEL_FD);
            }
            let first = (CHANNEL_FD + 1) as libc::c_uint;
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
            for signal in [
                libc::SIGALRM,
                libc::SIGTERM,
                libc::SIGINT,
                libc::SIGHUP,
                libc::SIGQUIT,
            ] {
                libc::signal(signal, libc::SIG_DFL);
            }
            let mut unblocked: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut unblocked);
            libc::sigaddset(&mut unblocked, libc::SIGALRM);
            libc::sigaddset(&mut unblocked, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &unblocked, std::ptr::null_mut());
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
            data
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

    #[cfg(test)]
    pub fn worker_pids() -> Vec<libc::pid_t> {
        IDLE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|w| w.pid)
            .collect()
    }
}

/// Elsewhere than Linux: rendered in this process, on a blocking thread, bounded in work
/// and output but not in memory.
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
        let idle: Vec<String> = imp::worker_pids().iter().map(|p| p.to_string()).collect();
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
        let worker = imp::worker_pids();
        assert_eq!(worker.len(), 1);
        // The next render is served by the same worker.
        render_all(&["{{ 1 }}"], NO_EVENTS).await.unwrap();
        assert_eq!(imp::worker_pids(), worker);

        // A render error names its template; the worker serves on.
        let err = render_all(&["{{ 1 }}", "{{ x"], NO_EVENTS)
            .await
            .unwrap_err();
        assert_eq!(err.index, 1);
        let err = render_all(&["{{ 1 }}", "{{ 1 / 0 }}"], NO_EVENTS)
            .await
            .unwrap_err();
        assert_eq!(err.index, 1, "{err:?}");
        assert_eq!(imp::worker_pids(), worker);

        // Memory: the worker dies, the render is tried once more in a fresh worker, which
        // dies too; the next render gets a new worker.
        let err = render_all(&["{{ 1 }}", DOUBLING], NO_EVENTS)
            .await
            .unwrap_err();
        assert_eq!(err.index, 1);
        assert!(err.message.contains("256 MiB of memory"), "{err:?}");
        no_busy_children_within(Duration::from_secs(3)).await;
        render_all(&["{{ 1 }}"], NO_EVENTS).await.unwrap();
        assert_ne!(imp::worker_pids(), worker);

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
        let bytes = imp::encode(&["a", "", "{{ x }}"], input);
        assert_eq!(
            u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize,
            bytes.len() - 8
        );
        let request = imp::decode(&bytes[8..]).unwrap();
        assert_eq!(request.sources, ["a", "", "{{ x }}"]);
        assert_eq!(
            (request.webhook_name, request.webhook_type),
            ("näme", "Custom")
        );
        assert_eq!(request.events, input.events);
        assert!(imp::decode(&bytes[8..bytes.len() - 1]).is_none());
    }
}
