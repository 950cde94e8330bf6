//! A backend through the abstraction: `NetworkAccessManager::load` and the
//! handle's events, as an application uses them.
//!
//! Requests in flight are driven from one application thread: each handle
//! gets a waker of its own that queues the handle's index and unparks the
//! thread, so a wake-up polls only the handle that has news (the way a
//! `FuturesUnordered` would), and the cost measured is the abstraction's, not
//! a poll of every handle on every event.
//!
//! In the HTTP/2 workload each request asks for
//! `HttpVersionPref::Http2PriorKnowledge`, and the manager's per-host limit
//! is the streams in flight: how they share a connection is the backend's
//! business (the harness checks that it is one).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use resource_handle::{
    Backend, Event, HttpVersionPref, NetworkAccessManager, ResourceHandle, ResourceRequest,
};

use super::{
    check_length, check_sink_answer, check_status, check_version, upload_source, Protocol, Runner,
    Sample, STALL,
};

pub(crate) struct Abstraction {
    nam: NetworkAccessManager,
    in_flight: usize,
    protocol: Protocol,
}

impl Abstraction {
    pub(crate) fn new(
        backend: Backend,
        in_flight: usize,
        protocol: Protocol,
    ) -> Result<Self, String> {
        let nam = NetworkAccessManager::builder()
            .max_connections_per_host(in_flight)
            .build(backend)
            .map_err(|e| format!("cannot start the {backend} backend: {e}"))?;
        Ok(Abstraction {
            nam,
            in_flight,
            protocol,
        })
    }

    fn preference(&self) -> HttpVersionPref {
        match self.protocol {
            Protocol::Http1 => HttpVersionPref::Http1,
            Protocol::Http2PriorKnowledge => HttpVersionPref::Http2PriorKnowledge,
        }
    }

    fn start(&self, url: &str) -> Result<ResourceHandle, String> {
        let request = ResourceRequest::get(url)
            .http_version(self.preference())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(self.nam.load(request))
    }
}

/// The indices of the handles whose wakers fired, and the thread to unpark.
struct Ready {
    queue: Mutex<VecDeque<usize>>,
    thread: Thread,
}

impl Ready {
    fn push(&self, i: usize) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(i);
        self.thread.unpark();
    }

    fn take(&self) -> VecDeque<usize> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

struct SlotWaker {
    index: usize,
    ready: Arc<Ready>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.ready.push(self.index);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.push(self.index);
    }
}

impl Runner for Abstraction {
    fn requests(&mut self, url: &str, until: Instant) -> Result<Sample, String> {
        let n = self.in_flight.max(1);
        let want = self.protocol.version();
        let ready = Arc::new(Ready {
            queue: Mutex::new(VecDeque::with_capacity(n * 2)),
            thread: thread::current(),
        });
        let wakers: Vec<Waker> = (0..n)
            .map(|index| {
                Waker::from(Arc::new(SlotWaker {
                    index,
                    ready: ready.clone(),
                }))
            })
            .collect();
        let mut slots: Vec<Option<ResourceHandle>> = Vec::with_capacity(n);
        for i in 0..n {
            slots.push(Some(self.start(url)?));
            ready.push(i);
        }
        let stall_at = until + STALL;
        let mut live = n;
        let mut done = 0u64;
        while live > 0 {
            let batch = ready.take();
            if batch.is_empty() {
                if Instant::now() > stall_at {
                    return Err(format!("{live} loads stalled"));
                }
                thread::park_timeout(Duration::from_millis(100));
                continue;
            }
            for i in batch {
                let mut cx = Context::from_waker(&wakers[i]);
                while let Some(handle) = slots[i].as_mut() {
                    match handle.poll_next_event(&mut cx) {
                        Poll::Pending => break,
                        Poll::Ready(Some(Event::Response(r))) => {
                            check_status(r.status().as_u16(), url)?;
                            check_version(r.version(), want, url)?;
                        }
                        Poll::Ready(Some(Event::Finished)) => {
                            done += 1;
                            if Instant::now() < until {
                                slots[i] = Some(self.start(url)?);
                            } else {
                                slots[i] = None;
                                live -= 1;
                            }
                        }
                        Poll::Ready(Some(Event::Failed(e))) => return Err(e.to_string()),
                        Poll::Ready(Some(_)) => {}
                        Poll::Ready(None) => {
                            return Err("a load ended without finishing".into());
                        }
                    }
                }
            }
        }
        Ok(Sample::requests(done))
    }

    fn download(&mut self, url: &str, expected: u64) -> Result<Sample, String> {
        let mut handle = self.start(url)?;
        let response = handle.response_blocking().map_err(|e| e.to_string())?;
        check_status(response.status().as_u16(), url)?;
        check_version(response.version(), self.protocol.version(), url)?;
        let mut total = 0u64;
        while let Some(chunk) = handle.chunk_blocking().map_err(|e| e.to_string())? {
            total += chunk.len() as u64;
        }
        check_length(total, expected)
    }

    fn upload(&mut self, url: &str, len: u64) -> Result<Sample, String> {
        let request = ResourceRequest::post(url)
            .http_version(self.preference())
            .body(resource_handle::RequestBody::sized(upload_source(len), len))
            .build()
            .map_err(|e| e.to_string())?;
        let mut handle = self.nam.load(request);
        let body = handle.bytes_blocking().map_err(|e| e.to_string())?;
        check_sink_answer(&body, len).map(Sample::transfer)
    }
}
