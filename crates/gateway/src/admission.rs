//! Admission control for expensive model slots: at most `max_concurrency` jobs run, at most
//! `queue_depth` wait; beyond that a request is refused at once with 503 and `Retry-After`, so an
//! overload turns into fast, bounded refusals instead of an ever-growing queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The gate of one slot.
pub struct Admission {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue_depth: usize,
    max_concurrency: usize,
    rejected: metrics::Counter,
}

/// Leaves the waiting count on drop (also when the request is cancelled while waiting).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// A gate for `max_concurrency` running and `queue_depth` waiting jobs.
    pub fn new(slot: &str, max_concurrency: usize, queue_depth: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            queue_depth,
            max_concurrency,
            rejected: metrics::counter!("switchyard_admission_rejected_total", "slot" => slot.to_string()),
        }
    }

    /// The gate of a model slot from its `max_concurrency` (default: CPU cores) and `queue_depth`
    /// (default: 4 × `max_concurrency`).
    pub fn for_model_slot(spec: &switchyard_config::SlotSpec) -> Self {
        let max_concurrency = spec.max_concurrency.unwrap_or_else(switchyard_infer::cores);
        let queue_depth = spec.queue_depth.unwrap_or(4 * max_concurrency);
        Self::new(&spec.name, max_concurrency, queue_depth)
    }

    /// Jobs that may run at once.
    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// Jobs that may wait.
    pub fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    /// Jobs waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// A running slot: at once if one is free, after waiting if the queue has room, else 503.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if queued >= self.queue_depth {
            self.rejected.increment(1);
            return Err(overloaded(self.max_concurrency, self.queue_depth));
        }
        self.permits.clone().acquire_owned().await.map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the slot is closing",
            )
        })
    }

    /// Up to `n` more running slots for a job that already holds one and can use them (the
    /// channels of a call recognised at once), taken only when free now: never from a request
    /// that is waiting, and never by waiting.
    pub fn try_enter_more(&self, n: usize) -> Vec<OwnedSemaphorePermit> {
        if self.waiting() > 0 {
            return Vec::new();
        }
        (0..n)
            .map_while(|_| self.permits.clone().try_acquire_owned().ok())
            .collect()
    }

    /// A running slot for a job that must not be refused (a chunk of a live stream already admitted).
    pub async fn enter_unbounded(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().acquire_owned().await.ok()
    }
}

/// The 503 of a full queue; [`crate::dataplane`] adds `Retry-After` to every `overloaded` answer.
pub fn overloaded(running: usize, queued: usize) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        format!("the slot is busy ({running} running, {queued} waiting); retry shortly"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn beyond_running_and_queue_requests_are_refused_and_recovery_is_immediate() {
        let a = Arc::new(Admission::new("t", 1, 1));
        let first = a.enter().await.expect("runs");
        // One waits...
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.enter().await.map(|_| ()) })
        };
        while a.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        // ...the next is refused.
        let refused = a.enter().await.expect_err("queue full");
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.code, "overloaded");
        drop(first);
        waiter.await.expect("task").expect("the waiter ran");
        assert_eq!(a.waiting(), 0);
        assert!(a.enter().await.is_ok());
    }

    #[tokio::test]
    async fn more_slots_are_taken_only_when_free_and_nobody_waits() {
        let a = Arc::new(Admission::new("t", 3, 4));
        let first = a.enter().await.expect("runs");
        let more = a.try_enter_more(5);
        assert_eq!(more.len(), 2, "what is free, no more");
        assert!(a.try_enter_more(1).is_empty());
        drop(more);
        // A request waiting for a slot keeps its turn: nothing extra while it waits.
        let held = a.try_enter_more(2);
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.enter().await.map(|_| ()) })
        };
        while a.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        // (Single-threaded test runtime: the waiter has not run yet, so it still waits.)
        assert!(a.try_enter_more(2).is_empty());
        waiter.await.expect("task").expect("the waiter ran");
        drop(first);
        assert_eq!(a.try_enter_more(3).len(), 3);
    }
}
