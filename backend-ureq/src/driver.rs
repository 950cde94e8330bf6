//! The worker threads that run exchanges with ureq's blocking API.
//!
//! ureq blocks the calling thread for the whole exchange, so each exchange
//! runs on a worker thread the backend owns: `start` only queues it. Workers
//! are spawned on demand up to [`MAX_WORKERS`], and a worker idle for
//! [`IDLE_EXIT`] exits, so an idle backend holds no threads.
//!
//! Two thread hand-offs per exchange are what this module economises, as
//! they cost more than the rest of a small load:
//!
//! - application → worker: a worker that has just ended an exchange spins
//!   for up to [`SPIN`] before it sleeps, and `submit` hands new work to a
//!   spinning worker without a wake-up (an application that reacts to the end
//!   of one load by starting the next finds a worker still running);
//! - worker → application: the sink defers its wakes, so the head, the body
//!   read with it and the end cost the application one wake-up. The
//!   transport flushes the owed wake before it blocks on the socket
//!   ([`flush_wakes`]), so no event ever waits for the network.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use handle_api::{Error, ErrorKind, Exchange, ExchangeSink, WireRequest};
use ureq::{Agent, SendBody};

use crate::agents::Agents;
use crate::convert;
use crate::error::{self, Stage};
use crate::transport::Watch;

/// Exchanges running at once; more wait in the queue. The manager's per-host
/// and total limits keep real loads well under this.
pub(crate) const MAX_WORKERS: usize = 64;
/// How long a worker waits for work before it exits.
pub(crate) const IDLE_EXIT: Duration = Duration::from_secs(10);
/// How long a worker that ended an exchange looks for the next one before
/// it sleeps: about what an application takes to see the end of a load and
/// start another, far less than a wake-up through the condvar costs.
const SPIN: Duration = Duration::from_micros(50);
/// The largest piece of body delivered at once. A read returns what ureq
/// holds, at most one socket read of its input buffer (256 KiB, see
/// `convert.rs`), so in practice that buffer bounds a piece; the wake of
/// the application comes once per socket read, not per piece (see
/// [`flush_wakes`]).
const PIECE: usize = 256 * 1024;
/// The block body pieces are carved from: one allocation (and one zeroing)
/// per this many bytes instead of one per piece.
const BLOCK: usize = 4 * PIECE;
/// The first block when the body's length is not known.
const FIRST_BLOCK: usize = 16 * 1024;
/// Below this much room left in a block, the next read gets a new block
/// rather than a sliver of the old one.
const MIN_ROOM: usize = 16 * 1024;

thread_local! {
    /// The sink of the exchange this worker is running, lent here while
    /// ureq runs so the transport can flush its owed wake before blocking.
    static SINK: RefCell<Option<ExchangeSink>> = const { RefCell::new(None) };
}

/// Wakes the application for events queued without a wake, if the current
/// worker's exchange owes one; the transport calls it before it waits for
/// the socket, so what was read is never held back by the network.
pub(crate) fn flush_wakes() {
    SINK.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if let Some(sink) = s.as_mut() {
                sink.flush_wakes();
            }
        }
    });
}

/// Runs `f` on the lent sink; `None` when no sink is lent (it never is
/// while an exchange runs, but that is no reason to panic).
fn with_sink<R>(f: impl FnOnce(&mut ExchangeSink) -> R) -> Option<R> {
    SINK.with(|s| s.borrow_mut().as_mut().map(f))
}

/// Lends the sink to this thread until the guard is dropped; the guard
/// hands it back with [`Lent::take`], or drops it (failing the load) if the
/// exchange unwinds.
struct Lent;

impl Lent {
    fn new(sink: ExchangeSink) -> Lent {
        SINK.with(|s| *s.borrow_mut() = Some(sink));
        Lent
    }

    fn take(self) -> Option<ExchangeSink> {
        SINK.with(|s| s.borrow_mut().take())
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // Only reached with the sink still lent when unwinding: dropping it
        // reports the failure to the application.
        let sink = SINK.with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.take()));
        drop(sink);
    }
}

/// Queues exchanges for the workers. Dropping it lets idle workers exit at
/// once; exchanges already queued still run.
pub(crate) struct Driver {
    shared: Arc<Shared>,
}

struct Shared {
    agents: Agents,
    /// Response-head limits (bytes, fields) for the transport's filter.
    limits: (usize, usize),
    state: Mutex<State>,
    work: Condvar,
    /// The queue's length, readable without the lock by spinning workers.
    queued: AtomicUsize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Exchange>,
    threads: usize,
    /// Workers asleep on the condvar.
    idle: usize,
    /// Workers looking for work without sleeping; each takes one exchange
    /// from the queue without being woken.
    spinning: usize,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The queue is only pushed and popped under the lock: a panic cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn pop(&mut self, queued: &AtomicUsize) -> Option<Exchange> {
        let ex = self.queue.pop_front();
        queued.store(self.queue.len(), Ordering::Release);
        ex
    }
}

impl Driver {
    pub(crate) fn new(agents: Agents, limits: (usize, usize)) -> Self {
        Driver {
            shared: Arc::new(Shared {
                agents,
                limits,
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                queued: AtomicUsize::new(0),
            }),
        }
    }

    /// Queues `exchange`; never blocks on the network.
    pub(crate) fn submit(&self, exchange: Exchange) {
        let mut st = self.shared.lock();
        st.queue.push_back(exchange);
        self.shared.queued.store(st.queue.len(), Ordering::Release);
        if st.queue.len() <= st.spinning {
            // A spinning worker takes it: it checks the queue under this
            // lock before it sleeps, so it cannot miss it.
            return;
        }
        if st.idle + st.spinning >= st.queue.len() || st.threads >= MAX_WORKERS {
            // A waiting worker takes it, or the next one to finish does.
            drop(st);
            self.shared.work.notify_one();
            return;
        }
        st.threads += 1;
        let shared = self.shared.clone();
        let spawned = thread::Builder::new()
            .name("ureq-worker".into())
            .spawn(move || worker(shared));
        if let Err(e) = spawned {
            st.threads -= 1;
            // With no worker at all nobody would ever take the exchange: fail it now.
            if st.threads == 0 {
                if let Some(exchange) = st.queue.pop_back() {
                    self.shared.queued.store(st.queue.len(), Ordering::Release);
                    drop(st);
                    let Exchange { sink, .. } = exchange;
                    sink.fail(
                        Error::new(ErrorKind::Io, format!("cannot start a ureq worker: {e}"))
                            .with_source(e),
                    );
                }
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
    }
}

/// Waits up to [`SPIN`] for the queue to hold something. Yields the CPU
/// between looks: on a busy machine the thread the worker waits for (the
/// application's, or the server's on loopback) may need this core.
fn spin(shared: &Shared) {
    let until = Instant::now() + SPIN;
    loop {
        if shared.queued.load(Ordering::Acquire) > 0 {
            return;
        }
        for _ in 0..64 {
            std::hint::spin_loop();
        }
        if shared.queued.load(Ordering::Acquire) > 0 || Instant::now() >= until {
            return;
        }
        thread::yield_now();
    }
}

fn worker(shared: Arc<Shared>) {
    // A new worker was spawned for an exchange already queued: no spin first.
    let mut may_spin = false;
    loop {
        let exchange = {
            let mut st = shared.lock();
            loop {
                if let Some(ex) = st.pop(&shared.queued) {
                    break ex;
                }
                if st.closed {
                    st.threads -= 1;
                    return;
                }
                if std::mem::take(&mut may_spin) {
                    st.spinning += 1;
                    drop(st);
                    spin(&shared);
                    st = shared.lock();
                    st.spinning -= 1;
                    continue;
                }
                st.idle += 1;
                let (guard, wait) = shared
                    .work
                    .wait_timeout(st, IDLE_EXIT)
                    .unwrap_or_else(|p| p.into_inner());
                st = guard;
                st.idle -= 1;
                if wait.timed_out() && st.queue.is_empty() {
                    st.threads -= 1;
                    return;
                }
            }
        };
        // A panic inside ureq must not take the worker down: the sink, dropped
        // while unwinding, fails the load.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            run(&shared.agents, shared.limits, exchange)
        }));
        may_spin = true;
    }
}

/// Runs one exchange to its end and reports exactly one outcome.
fn run(agents: &Agents, limits: (usize, usize), exchange: Exchange) {
    let Exchange {
        request: wire,
        mut sink,
        ..
    } = exchange;
    if sink.is_cancelled() {
        sink.fail(Error::cancelled());
        return;
    }
    if let Err(e) = convert::check(&wire) {
        sink.fail(e);
        return;
    }
    let agent = agents.get(wire.proxy.as_ref());
    let watch = Watch::new(wire.method == handle_api::http::Method::HEAD, limits);
    let on_cancel = watch.clone();
    sink.on_cancel(move || on_cancel.cancel());
    sink.defer_wakes();
    let lent = Lent::new(sink);
    let guard = watch.enter();
    let outcome = transfer(&agent, wire, &watch);
    // Detach from the socket before reporting the end, so the application
    // cannot cancel into a connection that already serves another exchange.
    drop(guard);
    let Some(sink) = lent.take() else {
        return;
    };
    match outcome {
        _ if sink.is_cancelled() => sink.fail(Error::cancelled()),
        Ok(()) => sink.finish(),
        Err(e) => sink.fail(e),
    }
}

fn transfer(agent: &Agent, wire: WireRequest, watch: &Watch) -> Result<(), Error> {
    let may_retry = wire.may_retry_on_stale_connection();
    let (out, body) = convert::split(wire)?;
    let mut result = agent.run(convert::to_ureq(agent, &out, body));
    if result.is_err() && watch.stale() && !watch.is_cancelled() {
        // The keep-alive race: the reused connection died before any byte
        // of the response. A request handle-api allows to is sent once more,
        // on another connection; any other fails without being sent again.
        if !may_retry {
            return Err(Error::stale_connection());
        }
        let out = out.with_time_spent(watch.elapsed());
        watch.new_attempt();
        result = agent.run(convert::to_ureq(agent, &out, SendBody::none()));
        if result.is_err() && watch.stale() && !watch.is_cancelled() {
            return Err(Error::stale_connection());
        }
    }
    let mut response = result.map_err(|e| error::from_ureq(e, Stage::Head))?;
    if watch.is_cancelled() {
        return Err(Error::cancelled());
    }
    let chunked = response
        .headers()
        .contains_key(handle_api::http::header::TRANSFER_ENCODING);
    let head = convert::head(&mut response, watch);
    with_sink(|s| s.response(head)).ok_or_else(Error::cancelled)?;
    // into_reader() has no size limit (read_to_vec has 10 MB) and, with
    // ureq's decoding features off, yields the body as received.
    let mut reader = response.into_body().into_reader();
    // The first block fits a body of known length (and the read that finds
    // its end), so a small body costs a small allocation.
    let expected = with_sink(|s| s.expected_len()).flatten();
    let first = expected.map_or(FIRST_BLOCK, |n| {
        usize::try_from(n).map_or(PIECE, |n| n.saturating_add(1).min(PIECE))
    });
    let mut block = BytesMut::zeroed(first);
    let mut floor = 1;
    loop {
        if block.len() < floor {
            // Pieces still queued keep the old block alive; the next is new.
            block = BytesMut::zeroed(BLOCK);
            floor = MIN_ROOM;
        }
        let room = block.len().min(PIECE);
        let n = match reader.read(&mut block[..room]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let (expected, received) =
                    with_sink(|s| (s.expected_len(), s.received())).ok_or_else(Error::cancelled)?;
                let stage = Stage::Body {
                    expected,
                    received,
                    chunked,
                };
                return Err(error::from_io(e, stage));
            }
        };
        let piece = block.split_to(n).freeze();
        // Blocks while the application's buffer is full; an error means it
        // cancelled, and dropping the reader closes the connection mid-body
        // instead of returning it to the pool.
        with_sink(|s| s.data_blocking(piece)).unwrap_or_else(|| Err(Error::cancelled()))?;
    }
}
