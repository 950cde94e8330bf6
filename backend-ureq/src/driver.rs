//! The worker threads that run exchanges with ureq's blocking API.
//!
//! ureq blocks the calling thread for the whole exchange, so each exchange
//! runs on a worker thread the backend owns: `start` only queues it. Workers
//! are spawned on demand up to [`MAX_WORKERS`], and a worker idle for
//! [`IDLE_EXIT`] exits, so an idle backend holds no threads.

use std::collections::VecDeque;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use handle_api::{Bytes, Error, ErrorKind, Exchange, ExchangeSink, WireRequest};
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
/// Size of the pieces the body is read and delivered in.
const CHUNK: usize = 64 * 1024;

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
}

#[derive(Default)]
struct State {
    queue: VecDeque<Exchange>,
    threads: usize,
    idle: usize,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The queue is only pushed and popped under the lock: a panic cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
            }),
        }
    }

    /// Queues `exchange`; never blocks on the network.
    pub(crate) fn submit(&self, exchange: Exchange) {
        let mut st = self.shared.lock();
        st.queue.push_back(exchange);
        if st.idle >= st.queue.len() || st.threads >= MAX_WORKERS {
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

fn worker(shared: Arc<Shared>) {
    loop {
        let exchange = {
            let mut st = shared.lock();
            loop {
                if let Some(ex) = st.queue.pop_front() {
                    break ex;
                }
                if st.closed {
                    st.threads -= 1;
                    return;
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
    let guard = watch.enter();
    let outcome = transfer(&agent, wire, &mut sink, &watch);
    // Detach from the socket before reporting the end, so the application
    // cannot cancel into a connection that already serves another exchange.
    drop(guard);
    match outcome {
        _ if sink.is_cancelled() => sink.fail(Error::cancelled()),
        Ok(()) => sink.finish(),
        Err(e) => sink.fail(e),
    }
}

fn transfer(
    agent: &Agent,
    wire: WireRequest,
    sink: &mut ExchangeSink,
    watch: &Watch,
) -> Result<(), Error> {
    let may_retry = wire.may_retry_on_stale_connection();
    let (out, body) = convert::split(wire)?;
    let mut result = agent.run(convert::to_ureq(agent, &out, body));
    if result.is_err() && watch.stale() && !watch.is_cancelled() {
        // The keep-alive race: the reused connection died before any byte
        // of the response. A request handle-api allows to is sent once more,
        // on another connection; any other fails without being sent again.
        if !may_retry {
            return Err(error::stale_connection());
        }
        let out = out.with_time_spent(watch.elapsed());
        watch.new_attempt();
        result = agent.run(convert::to_ureq(agent, &out, SendBody::none()));
        if result.is_err() && watch.stale() && !watch.is_cancelled() {
            return Err(error::stale_connection());
        }
    }
    let mut response = result.map_err(|e| error::from_ureq(e, Stage::Head))?;
    if watch.is_cancelled() {
        return Err(Error::cancelled());
    }
    let chunked = response
        .headers()
        .contains_key(handle_api::http::header::TRANSFER_ENCODING);
    sink.response(convert::head(&mut response, watch));
    // into_reader() has no size limit (read_to_vec has 10 MB) and, with
    // ureq's decoding features off, yields the body as received.
    let mut reader = response.into_body().into_reader();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let stage = Stage::Body {
                    expected: sink.expected_len(),
                    received: sink.received(),
                    chunked,
                };
                return Err(error::from_io(e, stage));
            }
        };
        // Blocks while the application's buffer is full; an error means it
        // cancelled, and dropping the reader closes the connection mid-body
        // instead of returning it to the pool.
        sink.data_blocking(Bytes::copy_from_slice(&buf[..n]))?;
    }
}
