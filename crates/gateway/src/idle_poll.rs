//! Idle polling (`[server] idle_poll_us`): a data-plane worker that runs out of ready work keeps
//! polling its sockets without blocking, for a short window after the last request it began, and
//! hands its core to any other runnable thread every few polls, before it sleeps in `epoll_wait`.
//!
//! Why: a worker that sleeps the moment nothing is ready is woken again microseconds later by the
//! next request or upstream response. Each such sleep and wake-up costs a context switch and often
//! a cross-core wake-up (an inter-processor interrupt; in a virtual machine, exits to the
//! hypervisor to halt the idle vCPU and to wake it), and a core can sit idle while work waits on
//! the other. On the proxy bench (2-core VM, wrk, the upstream and the proxy sharing the cores) the
//! cores were idle ~10 % of the time with any proxy that sleeps at once, nginx included; with this
//! poller ~2 %, and Switchyard served ~1.15× the requests at no more CPU per request. A worker that
//! keeps polling stays runnable: the kernel has nothing to wake, and the other threads on its core
//! still run, because it yields (`sched_yield`) every few polls. It is the poll-then-park of
//! Seastar's reactor (`--idle-poll-time-us`, 200 µs by default) and of Go's spinning scheduler
//! threads. Once a window passes with no new request the worker sleeps as before, so an idle
//! gateway uses no CPU; the cost is up to one window of polling per lull.
//!
//! How: each worker runtime (tokio, current-thread) runs one [`run`] task. It yields with
//! `tokio::task::yield_now`, which tokio's current-thread scheduler answers by polling its I/O
//! driver with a zero timeout instead of parking, so the task comes round once per turn of the
//! runtime, after the ready tasks. Requests are noted through [`note_work`], a thread-local counter
//! (the fast path and hyper's service call it as each request begins).

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Turns of the runtime per `sched_yield`. Yielding on every turn measured ~6 % less throughput
/// and a ~30 % higher p99 than this on the proxy bench (a task that yields waits behind the other
/// threads on its core, and the worker's own requests wait with it); every 2nd to 16th turn were
/// alike; every 64th left the cores idle ~6 % of the time, against ~2 %.
const YIELD_EVERY: u32 = 4;

/// The window when `[server] idle_poll_us` is not set and there are no more workers than cores.
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_micros(20);

/// The polling window of each worker: `configured` (`[server] idle_poll_us`) when set; else
/// [`DEFAULT_WINDOW`] when the `workers` are no more than the `cores`, and none (0) when there are
/// more. With more pollers than cores they take turns on the cores, and a worker's requests wait
/// while another polls: on the 2-core bench at 4 workers polling gained 1.06× throughput but its
/// p99 was 1.38× that with polling off.
pub(crate) fn window(configured: Option<u64>, workers: usize, cores: usize) -> Duration {
    match configured {
        Some(us) => Duration::from_micros(us),
        None if workers <= cores => DEFAULT_WINDOW,
        None => Duration::ZERO,
    }
}

thread_local! {
    /// Requests begun on this thread.
    static WORK: Cell<u64> = const { Cell::new(0) };
    /// The poller's waker while it sleeps (its window passed with no new request).
    static ASLEEP: Cell<Option<Waker>> = const { Cell::new(None) };
    /// Polls made by this thread's poller (for tests).
    #[cfg(test)]
    static POLLS: Cell<u64> = const { Cell::new(0) };
}

/// Notes that a request began on this thread: keeps this worker's poller polling, or wakes it.
/// A thread without a poller (the control runtime) only bumps a counter.
#[inline]
pub(crate) fn note_work() {
    WORK.set(WORK.get().wrapping_add(1));
    if let Some(waker) = ASLEEP.take() {
        waker.wake();
    }
}

/// The poller of one worker runtime: spawn it on that runtime; it runs until the runtime drops it.
/// Keeps the runtime polling its driver without blocking while requests arrive, and for `window`
/// after the last one; then sleeps until [`note_work`].
pub(crate) async fn run(window: Duration) {
    let mut seen = WORK.get();
    let mut since = Instant::now();
    let mut turns = 0u32;
    loop {
        // Every few turns, let any other runnable thread on this core go first; then let the
        // runtime run its ready tasks and poll its sockets without blocking before this task comes
        // round again.
        turns = turns.wrapping_add(1);
        if turns.is_multiple_of(YIELD_EVERY) {
            std::thread::yield_now();
        }
        tokio::task::yield_now().await;
        #[cfg(test)]
        POLLS.set(POLLS.get() + 1);
        let now = WORK.get();
        if now != seen {
            seen = now;
            since = Instant::now();
            continue;
        }
        if since.elapsed() < window {
            continue;
        }
        // A whole window without a new request: sleep until the next one.
        poll_fn(|cx| {
            if WORK.get() != seen {
                Poll::Ready(())
            } else {
                ASLEEP.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        seen = WORK.get();
        since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polls() -> u64 {
        POLLS.get()
    }

    fn is_asleep() -> bool {
        let waker = ASLEEP.take();
        let asleep = waker.is_some();
        ASLEEP.set(waker);
        asleep
    }

    /// Lets the runtime go round `n` times (each a non-blocking poll of its driver).
    async fn turns(n: usize) {
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
    }

    /// Waits (on the timer, so the runtime may park) until the poller sleeps.
    async fn until_asleep() {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_asleep() {
            assert!(Instant::now() < deadline, "the poller never went to sleep");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Runs `f` on a current-thread runtime with a poller of `window`, as a data-plane worker.
    fn on_worker<F: std::future::Future<Output = ()>>(window: Duration, f: F) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            tokio::spawn(run(window));
            f.await;
        });
    }

    #[test]
    fn the_window_is_the_configured_one_else_the_default_unless_workers_outnumber_cores() {
        assert_eq!(window(Some(50), 8, 2), Duration::from_micros(50));
        assert_eq!(window(Some(0), 2, 2), Duration::ZERO);
        assert_eq!(window(None, 2, 2), DEFAULT_WINDOW);
        assert_eq!(window(None, 1, 2), DEFAULT_WINDOW);
        assert_eq!(window(None, 3, 2), Duration::ZERO);
    }

    #[test]
    fn the_poller_polls_for_its_window_then_sleeps_until_the_next_request() {
        let window = Duration::from_millis(20);
        on_worker(window, async move {
            let start = Instant::now();
            note_work();
            // Within its window it polls on every turn of the runtime.
            let before = polls();
            turns(3).await;
            assert!(polls() > before, "no polls within the window");
            // It sleeps once the window has passed, not before, and then polls no more.
            until_asleep().await;
            assert!(start.elapsed() >= window, "slept within its window");
            let asleep = polls();
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(polls(), asleep, "the poller kept polling with no requests");
            // The next request wakes it, and it polls for another window.
            let woken = Instant::now();
            note_work();
            assert!(!is_asleep());
            turns(3).await;
            assert!(polls() > asleep, "a request did not wake the poller");
            until_asleep().await;
            assert!(woken.elapsed() >= window, "slept within its window");
        });
    }

    #[test]
    fn requests_keep_the_poller_polling_past_its_window() {
        let window = Duration::from_millis(30);
        on_worker(window, async move {
            // A request every 5 ms for 20 windows: the poller never sleeps while the last
            // request is less than a window old (on a loaded machine a sleep may run long: those
            // gaps are not checked).
            let mut checked = 0;
            let mut last = Instant::now();
            note_work();
            for _ in 0..120 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if last.elapsed() < window {
                    assert!(
                        !is_asleep(),
                        "slept with a request {:?} old",
                        last.elapsed()
                    );
                    checked += 1;
                }
                note_work();
                last = Instant::now();
            }
            assert!(checked > 0);
            until_asleep().await;
        });
    }
}
