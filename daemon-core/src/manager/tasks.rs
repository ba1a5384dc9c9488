//! Every task a manager runs in the background, each under the daemon it works for: a
//! recovery, a start's verification, a reconciliation, an upgrade, the watch over a frozen
//! daemon. A destroy ends the tasks of its daemon and a crash ([`super::Manager::abort`])
//! all of them, and both wait until each task is gone (dropped with whatever it held), not
//! merely told to go: a task that outlived its daemon's destroy once started a nydusd that
//! no record named (upstream fixed the same class twice, snapshotter 1ffa1d9 and PR #774).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::task::{Id, JoinHandle};

/// Whom a task works for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Owner {
    /// One daemon, by id: ended by its destroy.
    Daemon(String),
    /// The manager as a whole (the death loop): ended only by a crash.
    Manager,
}

#[derive(Debug)]
struct Entry {
    owner: Owner,
    handle: JoinHandle<()>,
}

/// The running tasks of one manager.
#[derive(Debug, Default, Clone)]
pub(super) struct Tasks {
    running: Arc<Mutex<BTreeMap<Id, Entry>>>,
}

/// The output of a task, or `None` when it was cancelled before it finished.
#[derive(Debug)]
pub(super) struct Outcome<T>(oneshot::Receiver<T>);

impl<T> Outcome<T> {
    /// Waits for the task: its output, or `None` when a destroy or crash ended it.
    pub(super) async fn finished(self) -> Option<T> {
        self.0.await.ok()
    }
}

impl Tasks {
    /// Runs `work` as a task owned by `owner`; its output comes through the returned
    /// [`Outcome`] (which may be dropped).
    pub(super) fn spawn<T: Send + 'static>(
        &self,
        owner: Owner,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Outcome<T> {
        let (tx, rx) = oneshot::channel();
        let running = self.running.clone();
        // Held across the spawn, so the task cannot deregister before it is registered.
        let mut entries = lock(&self.running);
        let handle = tokio::spawn(async move {
            let output = work.await;
            // Deregistered before the output is sent: whoever waits for it may cancel
            // this daemon's tasks next, and must not find this one still listed.
            if let Some(id) = tokio::task::try_id() {
                lock(&running).remove(&id);
            }
            let _ = tx.send(output);
        });
        entries.insert(handle.id(), Entry { owner, handle });
        Outcome(rx)
    }

    /// Ends every task owned by daemon `id` and waits until each is gone. The calling task
    /// itself is never cancelled.
    pub(super) async fn cancel_daemon(&self, id: &str) {
        self.cancel(|owner| matches!(owner, Owner::Daemon(d) if d == id)).await;
    }

    /// Ends every task and waits until each is gone (a crash of the manager).
    pub(super) async fn cancel_all(&self) {
        self.cancel(|_| true).await;
    }

    /// How many tasks work for daemon `id` now.
    #[cfg(test)]
    fn count_for(&self, id: &str) -> usize {
        lock(&self.running).values().filter(|e| matches!(&e.owner, Owner::Daemon(d) if d == id)).count()
    }

    async fn cancel(&self, chosen: impl Fn(&Owner) -> bool) {
        let me = tokio::task::try_id();
        let handles: Vec<JoinHandle<()>> = {
            let mut entries = lock(&self.running);
            let ids: Vec<Id> =
                entries.iter().filter(|(id, e)| Some(**id) != me && chosen(&e.owner)).map(|(id, _)| *id).collect();
            ids.iter().filter_map(|id| entries.remove(id)).map(|e| e.handle).collect()
        };
        for handle in &handles {
            handle.abort();
        }
        for handle in handles {
            // Returns once the task's future has been dropped (or it finished first).
            let _ = handle.await;
        }
    }
}

fn lock(running: &Mutex<BTreeMap<Id, Entry>>) -> std::sync::MutexGuard<'_, BTreeMap<Id, Entry>> {
    running.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// Sets its flag when dropped: proof that a cancelled task's state is gone.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            // Slow on purpose: cancel must wait for the drop, not only request it.
            std::thread::sleep(Duration::from_millis(50));
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelling_a_daemon_ends_its_tasks_only_and_waits_until_they_are_dropped() {
        let tasks = Tasks::default();
        let (d1_dropped, d2_dropped) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let flag = DropFlag(d1_dropped.clone());
        let d1 = tasks.spawn(Owner::Daemon("d1".into()), async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        });
        let flag = DropFlag(d2_dropped.clone());
        let d2 = tasks.spawn(Owner::Daemon("d2".into()), async move {
            let _flag = flag;
            tokio::time::sleep(Duration::from_millis(100)).await;
            7
        });
        tasks.cancel_daemon("d1").await;
        assert!(d1_dropped.load(Ordering::SeqCst), "d1's task was dropped before cancel returned");
        assert_eq!(d1.finished().await, None, "a cancelled task has no output");
        assert_eq!(tasks.count_for("d1"), 0);
        assert_eq!(d2.finished().await, Some(7), "d2's task ran to its end");
        assert_eq!(tasks.count_for("d2"), 0, "a finished task deregisters itself");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancel_all_spares_the_calling_task() {
        let tasks = Tasks::default();
        let inner = tasks.clone();
        let outcome = tasks.spawn(Owner::Manager, async move {
            let other = inner.spawn(Owner::Daemon("d1".into()), std::future::pending::<()>());
            inner.cancel_all().await;
            other.finished().await.is_none()
        });
        assert_eq!(outcome.finished().await, Some(true));
    }
}
