//! The channel between a backend and a [`ResourceHandle`](crate::ResourceHandle).
//!
//! The backend holds the [`ExchangeSink`] and pushes the response head, body
//! chunks and the end; the handle pulls. Body bytes in flight are bounded by
//! [`BODY_BUFFER_BYTES`]: past that, the sink refuses more until the consumer
//! catches up, which is how backpressure reaches the socket on every backend
//! (an awaiting hyper task, a blocked ureq worker, a paused curl transfer).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use url::Url;

use crate::error::{Error, ErrorKind};
use crate::events::Event;
use crate::response::{ResourceResponse, ResponseHead};

/// Body bytes a load may hold between the backend and the application.
pub const BODY_BUFFER_BYTES: usize = 1 << 20;

pub(crate) type Callback = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    events: VecDeque<Event>,
    buffered: usize,
    /// Upload progress is coalesced: only the latest value waits for the consumer.
    upload: Option<(u64, Option<u64>)>,
    responded: bool,
    terminal: bool,
    cancelled: bool,
    paused: bool,
    consumer: Option<Waker>,
    producer: Option<Waker>,
    on_space: Option<Callback>,
    on_cancel: Vec<Callback>,
}

pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue half-updated, so poison is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, event: Event) {
        let waker = {
            let mut st = self.lock();
            if st.terminal {
                return;
            }
            if event.is_terminal() {
                st.terminal = true;
            }
            st.events.push_back(event);
            st.consumer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub(crate) fn upload_progress(&self, sent: u64, total: Option<u64>) {
        let waker = {
            let mut st = self.lock();
            if st.terminal {
                return;
            }
            st.upload = Some((sent, total));
            st.consumer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub(crate) fn cancel(&self) {
        let (callbacks, wakers) = {
            let mut st = self.lock();
            if st.cancelled {
                return;
            }
            st.cancelled = true;
            st.paused = false;
            let wakers = [st.consumer.take(), st.producer.take()];
            let mut callbacks = std::mem::take(&mut st.on_cancel);
            callbacks.extend(st.on_space.take());
            (callbacks, wakers)
        };
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
        for cb in callbacks {
            cb();
        }
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        let waker = {
            let mut st = self.lock();
            st.paused = paused && !st.cancelled;
            if paused {
                None
            } else {
                st.consumer.take()
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The consumer's side: the next event, `Ready(None)` after the terminal one.
    pub(crate) fn poll_event(&self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let (event, wake_producer) = {
            let mut st = self.lock();
            if st.cancelled {
                // The handle reports the cancellation itself; whatever the backend queued is dropped.
                st.events.clear();
                st.buffered = 0;
                st.upload = None;
                return Poll::Ready(None);
            }
            if st.paused {
                st.consumer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            // Upload progress happened before whatever is queued behind it.
            if let Some((sent, total)) = st.upload.take() {
                return Poll::Ready(Some(Event::UploadProgress { sent, total }));
            }
            match st.events.pop_front() {
                None => {
                    st.consumer = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Some(ev) => {
                    let mut wake = None;
                    if let Event::Data(d) = &ev {
                        let was_full = st.buffered >= BODY_BUFFER_BYTES;
                        st.buffered -= d.len();
                        if was_full && st.buffered < BODY_BUFFER_BYTES {
                            wake = Some((st.producer.take(), st.on_space.take()));
                        }
                    }
                    (ev, wake)
                }
            }
        };
        if let Some((waker, cb)) = wake_producer {
            if let Some(w) = waker {
                w.wake();
            }
            if let Some(cb) = cb {
                cb();
            }
        }
        Poll::Ready(Some(event))
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Runs `f` once on cancel, at once if the load already is cancelled.
    pub(crate) fn on_cancel(&self, f: Callback) {
        let mut st = self.lock();
        if st.cancelled {
            drop(st);
            f();
        } else {
            st.on_cancel.push(f);
        }
    }
}

/// Outcome of [`ExchangeSink::try_data`].
#[derive(Debug)]
pub enum TryData {
    /// The chunk was queued.
    Queued,
    /// The buffer is full: the chunk is handed back. Register
    /// [`ExchangeSink::on_space`] and offer it again when called.
    Full(Bytes),
    /// The load was cancelled; stop the transfer.
    Cancelled,
}

/// The backend's end of one exchange: it reports the response head, the body
/// and exactly one end. Dropping it without [`finish`](Self::finish) or
/// [`fail`](Self::fail) fails the load, so a backend can never leave a handle
/// waiting forever.
pub struct ExchangeSink {
    shared: Arc<Shared>,
    url: Url,
    received: u64,
    expected: Option<u64>,
    ended: bool,
    on_end: Option<Callback>,
}

impl ExchangeSink {
    pub(crate) fn new(url: Url) -> (ExchangeSink, Arc<Shared>) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
        });
        (
            ExchangeSink {
                shared: shared.clone(),
                url,
                received: 0,
                expected: None,
                ended: false,
                on_end: None,
            },
            shared,
        )
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Runs `f` when the sink ends, however it ends (the scheduler's slot).
    pub(crate) fn set_on_end(&mut self, f: Callback) {
        self.on_end = Some(f);
    }

    /// The url being loaded (without fragment).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Reports the response head. Informational (1xx) heads must not be reported.
    pub fn response(&mut self, head: ResponseHead) {
        let response = ResourceResponse::from_head(self.url.clone(), head);
        self.expected = response.expected_content_length();
        self.shared.lock().responded = true;
        self.shared.push(Event::Response(response));
    }

    /// Reports upload progress (called by [`UploadBody`](crate::UploadBody) as it is read).
    pub fn upload_progress(&self, sent: u64, total: Option<u64>) {
        self.shared.upload_progress(sent, total);
    }

    /// True once the application cancelled or dropped the handle.
    pub fn is_cancelled(&self) -> bool {
        self.shared.is_cancelled()
    }

    /// Runs `f` once when the load is cancelled (at once if it already was).
    /// Backends use it to abort a transfer that is waiting on the network.
    pub fn on_cancel(&self, f: impl FnOnce() + Send + 'static) {
        self.shared.on_cancel(Box::new(f));
    }

    /// Body bytes reported so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The Content-Length of the reported response, if any.
    pub fn expected_len(&self) -> Option<u64> {
        self.expected
    }

    /// Offers a chunk without waiting (for event-loop backends such as curl).
    pub fn try_data(&mut self, chunk: Bytes) -> TryData {
        if chunk.is_empty() {
            return TryData::Queued;
        }
        let waker = {
            let mut st = self.shared.lock();
            if st.cancelled {
                return TryData::Cancelled;
            }
            debug_assert!(st.responded, "body data before the response head");
            if st.buffered >= BODY_BUFFER_BYTES {
                return TryData::Full(chunk);
            }
            st.buffered += chunk.len();
            self.received += chunk.len() as u64;
            st.events.push_back(Event::Data(chunk));
            st.consumer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        TryData::Queued
    }

    /// Registers `f` to run once when the buffer has room again (or on cancel).
    pub fn on_space(&self, f: impl FnOnce() + Send + 'static) {
        let mut st = self.shared.lock();
        if st.cancelled || st.buffered < BODY_BUFFER_BYTES {
            drop(st);
            f();
        } else {
            st.on_space = Some(Box::new(f));
        }
    }

    /// Queues a chunk, waiting while the buffer is full (for async backends).
    pub fn data(&mut self, chunk: Bytes) -> impl Future<Output = Result<(), Error>> + '_ {
        SendData {
            sink: self,
            chunk: Some(chunk),
        }
    }

    /// Queues a chunk, blocking the thread while the buffer is full (for blocking backends).
    pub fn data_blocking(&mut self, chunk: Bytes) -> Result<(), Error> {
        crate::block_on::block_on(self.data(chunk))
    }

    /// Ends the load successfully.
    pub fn finish(mut self) {
        self.ended = true;
        self.release_slot();
        self.shared.push(Event::Finished);
    }

    /// Gives the scheduler's slot back before the end is reported, so an
    /// application that sees the end finds the slot free.
    fn release_slot(&mut self) {
        if let Some(f) = self.on_end.take() {
            f();
        }
    }

    /// Ends the load with `error` (the url is attached here).
    pub fn fail(mut self, error: Error) {
        self.ended = true;
        self.release_slot();
        let error = if error.url().is_none() {
            error.with_url(&self.url)
        } else {
            error
        };
        self.shared.push(Event::Failed(error));
    }
}

impl Drop for ExchangeSink {
    fn drop(&mut self) {
        self.release_slot();
        if !self.ended {
            self.shared.push(Event::Failed(
                Error::new(
                    ErrorKind::Io,
                    "the backend dropped the exchange without ending it",
                )
                .with_url(&self.url),
            ));
        }
        // However the exchange ended (finish and fail consume the sink, so
        // they end here too), its scheduler slot is free now.
        if let Some(on_end) = self.on_end.take() {
            on_end();
        }
    }
}

impl std::fmt::Debug for ExchangeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeSink")
            .field("url", &self.url.as_str())
            .field("received", &self.received)
            .finish()
    }
}

struct SendData<'a> {
    sink: &'a mut ExchangeSink,
    chunk: Option<Bytes>,
}

impl Future for SendData<'_> {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let chunk = match self.chunk.take() {
            Some(c) => c,
            None => return Poll::Ready(Ok(())),
        };
        match self.sink.try_data(chunk) {
            TryData::Queued => Poll::Ready(Ok(())),
            TryData::Cancelled => Poll::Ready(Err(Error::cancelled())),
            TryData::Full(chunk) => {
                let mut st = self.sink.shared.lock();
                // Re-check under the lock: the consumer may have made room meanwhile.
                if st.buffered >= BODY_BUFFER_BYTES && !st.cancelled {
                    st.producer = Some(cx.waker().clone());
                    drop(st);
                    self.chunk = Some(chunk);
                    Poll::Pending
                } else {
                    drop(st);
                    self.chunk = Some(chunk);
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        }
    }
}
