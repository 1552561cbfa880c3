//! The render worker's side: the process forked from the parent. It confines itself (its
//! descriptors, signals and memory), then renders request after request. It inherits one
//! thread, so it takes no lock, starts no runtime and writes no log (see the module above).

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use super::protocol::{FAILED, LEAVES, RENDERED, SERVES_ON, decode, read_request, write_result};
use super::{IDLE_EXIT, MEMORY_BUDGET, TIME_LIMIT};
use crate::domain::template;

/// The descriptor a worker talks on, once it has closed all others.
const CHANNEL_FD: RawFd = 3;
/// What a worker may keep of what renders allocated (the allocator's caches) before it
/// leaves: what it keeps is not there for the next render.
const MAX_KEPT: usize = MEMORY_BUDGET / 4;

/// The worker: confines itself, then renders request after request until it is idle
/// too long, its channel closes, or it has kept too much memory.
pub(super) fn worker_main(channel: RawFd) -> ! {
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
    let _ = std::fs::File::open("/proc/self/statm").and_then(|mut f| f.read_to_string(&mut text));
    let pages: Vec<usize> = text
        .split_whitespace()
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf only reads a constant of the system.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let field = |i: usize| pages.get(i).copied().unwrap_or(0) * page;
    (field(0), field(5))
}
