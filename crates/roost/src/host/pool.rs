//! A fixed pool of blocking threads for SQLite and store calls, fed by a bounded queue.
//!
//! Async callers hand a closure over and await its result; the runtime's workers never block
//! on SQLite or the store. A full queue is an immediate error, not an unbounded backlog.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender, TrySendError};

type Job = Box<dyn FnOnce() + Send>;

/// Why a job did not produce a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolError {
    /// `queue_max` jobs are waiting already.
    Full,
    /// The job panicked.
    Panicked,
    /// The pool is shut down.
    Closed,
}

pub(crate) struct BlockingPool {
    queue: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    queued: Arc<AtomicUsize>,
}

impl BlockingPool {
    pub fn new(threads: usize, queue_max: usize) -> std::io::Result<Self> {
        assert!(threads > 0 && queue_max > 0);
        let (tx, rx) = bounded::<Job>(queue_max);
        let queued = Arc::new(AtomicUsize::new(0));
        let handles = (0..threads)
            .map(|i| {
                let rx = rx.clone();
                let queued = queued.clone();
                std::thread::Builder::new().name(format!("roost-blocking-{i}")).spawn(move || {
                    for job in rx {
                        queued.fetch_sub(1, Ordering::Relaxed);
                        job();
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { queue: Some(tx), threads: handles, queued })
    }

    /// Jobs waiting for a thread.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Runs `job` on a pool thread and returns its result.
    pub async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, PoolError> {
        let queue = self.queue.as_ref().ok_or(PoolError::Closed)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let wrapped: Job = Box::new(move || {
            let _ = tx.send(catch_unwind(AssertUnwindSafe(job)));
        });
        self.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = queue.try_send(wrapped) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(match e {
                TrySendError::Full(_) => PoolError::Full,
                TrySendError::Disconnected(_) => PoolError::Closed,
            });
        }
        // Dropping `rx` (the caller stopped waiting) does not stop the job: it runs to its end
        // and its value is dropped on the pool thread.
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(PoolError::Panicked),
            Err(_) => Err(PoolError::Closed),
        }
    }

    /// Runs `job` without waiting for it, on a pool thread or, when the queue is full or
    /// closed, on a thread of its own: for work that must not be refused and must not run on
    /// the runtime (closing the databases of a host that goes away).
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let mut job: Job = Box::new(move || {
            let _ = catch_unwind(AssertUnwindSafe(job));
        });
        if let Some(queue) = &self.queue {
            self.queued.fetch_add(1, Ordering::Relaxed);
            match queue.try_send(job) {
                Ok(()) => return,
                Err(refused) => {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    job = refused.into_inner();
                }
            }
        }
        if let Err(e) = std::thread::Builder::new().name("roost-blocking-extra".into()).spawn(job) {
            tracing::error!(error = %e, "cannot start a thread for a blocking job; it was dropped");
        }
    }
}

impl Drop for BlockingPool {
    fn drop(&mut self) {
        drop(self.queue.take());
        // The last handle of the host may go inside one of our own jobs: that thread finishes
        // the queue on its own and cannot join itself.
        let me = std::thread::current().id();
        for thread in self.threads.drain(..).filter(|t| t.thread().id() != me) {
            let _ = thread.join();
        }
    }
}
