//! Scheduling: at most N loads in flight per scheme+host+port (Qt's 6), a
//! total limit, and a queue behind them ordered by priority, then arrival.
//!
//! A slot is taken when an exchange is handed to the backend and given back
//! when its sink ends, whichever thread that happens on; the next queued
//! exchange that fits is then started. A queued exchange that is cancelled
//! leaves the queue without touching the network.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use url::Url;

use crate::backend::{Exchange, ResourceHandleManager};
use crate::request::Priority;

/// The scheduling key: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct HostKey {
    scheme: Scheme,
    host: String,
    port: u16,
}

/// A key's scheme; the two every load over the network has need no
/// allocation (a key is made for every load).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scheme {
    Http,
    Https,
    Other(String),
}

impl HostKey {
    pub(crate) fn of(url: &Url) -> HostKey {
        let scheme = match url.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => Scheme::Other(other.to_owned()),
        };
        HostKey {
            scheme,
            host: url.host_str().unwrap_or_default().to_ascii_lowercase(),
            port: url.port_or_known_default().unwrap_or(0),
        }
    }
}

/// Queue order: highest priority first, then arrival.
type Id = (Reverse<Priority>, u64);

#[derive(Default)]
struct State {
    in_flight: HashMap<HostKey, usize>,
    total: usize,
    /// One queue per host, so giving a slot back costs the number of hosts
    /// waiting, not the number of loads waiting.
    queues: HashMap<HostKey, BTreeMap<Id, Exchange>>,
    queued: usize,
    next_seq: u64,
}

/// The per-host and total limits in front of a backend.
pub(crate) struct Scheduler {
    backend: Arc<dyn ResourceHandleManager>,
    per_host: usize,
    total: usize,
    state: Mutex<State>,
    me: Weak<Scheduler>,
}

/// Starts waiting for the start running on this thread to return.
type Deferred = Vec<(Arc<Scheduler>, Exchange)>;

thread_local! {
    // Starting an exchange can end it at once (an option the backend refuses),
    // which gives its slot back and starts the next one. Starts made while
    // another start is running on this thread wait here, so a long queue of
    // such failures is a loop, not a recursion.
    static DEFERRED: RefCell<Option<Deferred>> = const { RefCell::new(None) };
}

impl Scheduler {
    pub(crate) fn new(
        backend: Arc<dyn ResourceHandleManager>,
        per_host: usize,
        total: usize,
    ) -> Arc<Scheduler> {
        Arc::new_cyclic(|me| Scheduler {
            backend,
            per_host: per_host.max(1),
            total: total.max(1),
            state: Mutex::new(State::default()),
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fits(&self, st: &State, key: &HostKey) -> bool {
        st.total < self.total && st.in_flight.get(key).copied().unwrap_or(0) < self.per_host
    }

    fn acquire(st: &mut State, key: &HostKey) {
        st.total += 1;
        // The key is cloned only for a host with nothing in flight yet.
        match st.in_flight.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                st.in_flight.insert(key.clone(), 1);
            }
        }
    }

    /// Starts `exchange` now if its host and the total have room, else queues it.
    pub(crate) fn submit(&self, priority: Priority, exchange: Exchange) {
        let key = HostKey::of(&exchange.request.url);
        let mut st = self.lock();
        if self.fits(&st, &key) {
            Self::acquire(&mut st, &key);
            drop(st);
            self.launch(key, exchange);
            return;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let id = (Reverse(priority), seq);
        st.queues
            .entry(key.clone())
            .or_default()
            .insert(id, exchange);
        st.queued += 1;
        drop(st);
        let me = self.me.clone();
        let cancel_key = key.clone();
        // Runs at once if the load was cancelled meanwhile.
        self.on_cancel_queued(&key, id, move || {
            if let Some(s) = me.upgrade() {
                s.remove(&cancel_key, id);
            }
        });
    }

    /// Registers `f` on the cancel of the queued exchange `id`, if it is still queued.
    fn on_cancel_queued(&self, key: &HostKey, id: Id, f: impl FnOnce() + Send + 'static) {
        let st = self.lock();
        let Some(ex) = st.queues.get(key).and_then(|q| q.get(&id)) else {
            return;
        };
        // The sink's own lock is taken inside; the callback (which takes
        // ours) runs only on cancel, from the canceller's thread.
        let shared = ex.sink.shared().clone();
        drop(st);
        shared.on_cancel(Box::new(f));
    }

    fn remove(&self, key: &HostKey, id: Id) {
        let removed = {
            let mut st = self.lock();
            let removed = st.queues.get_mut(key).and_then(|q| q.remove(&id));
            if removed.is_some() {
                st.queued -= 1;
            }
            if st.queues.get(key).is_some_and(BTreeMap::is_empty) {
                st.queues.remove(key);
            }
            removed
        };
        // Dropped outside the lock: ending the sink takes other locks.
        drop(removed);
    }

    /// Gives a slot back and starts what now fits.
    fn release(&self, key: &HostKey) {
        let mut ready = Vec::new();
        {
            let mut st = self.lock();
            st.total = st.total.saturating_sub(1);
            if let Some(n) = st.in_flight.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.in_flight.remove(key);
                }
            }
            // Highest priority first, then arrival, among hosts with room.
            while st.total < self.total {
                let best = st
                    .queues
                    .iter()
                    .filter(|(k, _)| st.in_flight.get(*k).copied().unwrap_or(0) < self.per_host)
                    .filter_map(|(k, q)| q.keys().next().map(|id| (*id, k.clone())))
                    .min_by_key(|(id, _)| *id);
                let Some((id, k)) = best else { break };
                let Some(q) = st.queues.get_mut(&k) else {
                    break;
                };
                let Some(exchange) = q.remove(&id) else { break };
                if q.is_empty() {
                    st.queues.remove(&k);
                }
                st.queued -= 1;
                Self::acquire(&mut st, &k);
                ready.push((k, exchange));
            }
        }
        for (key, exchange) in ready {
            self.launch(key, exchange);
        }
    }

    /// Hands an exchange that holds a slot to the backend.
    fn launch(&self, key: HostKey, mut exchange: Exchange) {
        let Some(me) = self.me.upgrade() else { return };
        let release_key = key;
        let weak = self.me.clone();
        exchange.sink.set_on_end(Box::new(move || {
            if let Some(s) = weak.upgrade() {
                s.release(&release_key);
            }
        }));
        let nested = DEFERRED.with(|d| {
            let mut d = d.borrow_mut();
            match d.as_mut() {
                Some(list) => {
                    list.push((me.clone(), exchange));
                    None
                }
                None => {
                    *d = Some(Vec::new());
                    Some(exchange)
                }
            }
        });
        let Some(first) = nested else { return };
        me.backend.start(first);
        loop {
            let next = DEFERRED.with(|d| d.borrow_mut().as_mut().and_then(Vec::pop));
            match next {
                Some((s, ex)) => s.backend.start(ex),
                None => break,
            }
        }
        DEFERRED.with(|d| *d.borrow_mut() = None);
    }

    /// Loads waiting in the queue.
    pub(crate) fn queued(&self) -> usize {
        self.lock().queued
    }

    /// Loads in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().total
    }
}
