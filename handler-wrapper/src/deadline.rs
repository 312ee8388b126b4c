//! The deadline flush: one watcher thread for the whole process.
//!
//! Each sampled invocation with a deadline is armed here (its flush time =
//! deadline − margin) and disarmed when the handler returns. The watcher
//! thread sleeps until the earliest armed flush time; arming wakes it only
//! when the new flush time is earlier than the one it sleeps towards, and
//! disarming never wakes it. Sequential invocations have growing deadlines,
//! so none of them wakes the thread: it wakes at a flush time that may have
//! been disarmed meanwhile (at most once per "timeout − margin" of the
//! function), finds nothing due, and sleeps towards the next one. No task,
//! timer or cross-thread wake-up per invocation; and since it is a thread of
//! its own, the flush also happens when the handler blocks the runtime.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use crate::invocation::Invocation;

/// An armed deadline: its flush time, and a sequence number to tell apart
/// invocations with the same flush time.
pub(crate) type Key = (SystemTime, u64);

#[derive(Default)]
struct State {
    armed: BTreeMap<Key, Weak<Invocation>>,
    next_seq: u64,
    /// What the watcher sleeps towards: `None` while it waits for work (or
    /// before it started), so the next arm wakes it.
    sleeping_until: Option<SystemTime>,
}

/// The process-wide watcher.
pub(crate) struct Watcher {
    state: Mutex<State>,
    wake: Condvar,
}

impl Watcher {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Flushes `inv` at `at` unless disarmed before. Returns the key to
    /// disarm it with.
    pub(crate) fn arm(&self, at: SystemTime, inv: Weak<Invocation>) -> Key {
        let mut state = self.state();
        let key = (at, state.next_seq);
        state.next_seq = state.next_seq.wrapping_add(1);
        state.armed.insert(key, inv);
        if state.sleeping_until.is_none_or(|t| at < t) {
            // Sleeping past it (or waiting for work): wake up to re-aim.
            state.sleeping_until = Some(at);
            self.wake.notify_one();
        }
        key
    }

    /// Forgets an armed deadline. Never wakes the watcher.
    pub(crate) fn disarm(&self, key: Key) {
        self.state().armed.remove(&key);
    }

    fn run(&self) {
        let mut state = self.state();
        loop {
            let now = SystemTime::now();
            let mut due: Vec<Weak<Invocation>> = Vec::new();
            while let Some(entry) = state.armed.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            if !due.is_empty() {
                drop(state);
                for inv in due.iter().filter_map(Weak::upgrade) {
                    tracing::debug!(target: "lambda_xray", "invocation deadline is near: flushing trace documents");
                    inv.flush_in_progress();
                }
                // Dropping the last reference to an invocation takes this lock
                // (to disarm): drop them before taking it again.
                drop(due);
                state = self.state();
                continue;
            }
            match state.armed.first_key_value().map(|(k, _)| k.0) {
                None => {
                    state.sleeping_until = None;
                    state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                Some(at) => {
                    state.sleeping_until = Some(at);
                    // Re-read the wall clock at least once a minute (it is what
                    // the deadline is given in).
                    let wait = at.duration_since(now).unwrap_or_default().min(Duration::from_secs(60));
                    state = self.wake.wait_timeout(state, wait).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
    }
}

/// The watcher, started on first use; `None` if its thread could not start
/// (then there is no deadline flush, and that is logged once).
pub(crate) fn watcher() -> Option<&'static Watcher> {
    static WATCHER: OnceLock<Option<Arc<Watcher>>> = OnceLock::new();
    WATCHER
        .get_or_init(|| {
            let watcher = Arc::new(Watcher { state: Mutex::default(), wake: Condvar::new() });
            let running = watcher.clone();
            match std::thread::Builder::new().name("lambda-xray-deadline".into()).stack_size(256 * 1024).spawn(move || running.run()) {
                Ok(_) => Some(watcher),
                Err(e) => {
                    tracing::error!(target: "lambda_xray", "cannot start the deadline thread ({e}): no flush before deadlines");
                    None
                }
            }
        })
        .as_deref()
}
