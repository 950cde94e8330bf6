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
    scheme: String,
    host: String,
    port: u16,
}

impl HostKey {
    pub(crate) fn of(url: &Url) -> HostKey {
        HostKey {
            scheme: url.scheme().to_owned(),
            host: url.host_str().unwrap_or_default().to_ascii_lowercase(),
            port: url.port_or_known_default().unwrap_or(0),
        }
    }
}

struct Queued {
    key: HostKey,
    exchange: Exchange,
}

#[derive(Default)]
struct State {
    in_flight: HashMap<HostKey, usize>,
    total: usize,
    queue: BTreeMap<(Reverse<Priority>, u64), Queued>,
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
        *st.in_flight.entry(key.clone()).or_insert(0) += 1;
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
        let me = self.me.clone();
        // Registered before queueing so a cancel can never miss the entry; it
        // runs at once if the load is already cancelled.
        exchange.sink.on_cancel(move || {
            if let Some(s) = me.upgrade() {
                s.remove(id);
            }
        });
        st.queue.insert(id, Queued { key, exchange });
    }

    fn remove(&self, id: (Reverse<Priority>, u64)) {
        let removed = self.lock().queue.remove(&id);
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
            // Highest priority first, then arrival; skip hosts that are full.
            let mut picked = Vec::new();
            let mut budget_host: HashMap<HostKey, usize> = HashMap::new();
            let mut total = st.total;
            for (id, q) in st.queue.iter() {
                if total >= self.total {
                    break;
                }
                let used = st.in_flight.get(&q.key).copied().unwrap_or(0)
                    + budget_host.get(&q.key).copied().unwrap_or(0);
                if used < self.per_host {
                    *budget_host.entry(q.key.clone()).or_insert(0) += 1;
                    total += 1;
                    picked.push(*id);
                }
            }
            for id in picked {
                if let Some(q) = st.queue.remove(&id) {
                    Self::acquire(&mut st, &q.key);
                    ready.push(q);
                }
            }
        }
        for q in ready {
            self.launch(q.key, q.exchange);
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
        self.lock().queue.len()
    }

    /// Loads in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().total
    }
}
