//! The parent's side: a pool of render workers, forked on demand, lent for one render
//! each, retired by age and use, stopped and reaped when they die or are abandoned.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::child::worker_main;
use super::protocol::{LEAVES, RENDERED, encode};
use super::{IDLE_EXIT, MAX_AGE, MAX_RENDERS, MEMORY_BUDGET, RenderError, RenderInput, TIME_LIMIT};
use crate::domain::template;

/// A worker idle this long is not lent again: it is about to leave by itself.
const LEND_IDLE: Duration = IDLE_EXIT.saturating_sub(Duration::from_secs(10));
/// How long past the worker's own alarm the answer is waited for.
const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// Workers waiting for a render.
static IDLE: Mutex<Vec<Worker>> = Mutex::new(Vec::new());

pub(super) async fn render_all(
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
                let alarm = status
                    .is_some_and(|s| libc::WIFSIGNALED(s) && libc::WTERMSIG(s) == libc::SIGALRM);
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
        let mut stream = tokio::net::UnixStream::from_std(channel).map_err(|_| Stopped::Died)?;
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

#[cfg(test)]
pub(super) fn worker_pids() -> Vec<libc::pid_t> {
    IDLE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|w| w.pid)
        .collect()
}
