//! The channel between a backend and a [`ResourceHandle`](crate::ResourceHandle).
//!
//! The backend holds the [`ExchangeSink`] and pushes the response head, body
//! chunks and the end; the handle pulls. Body bytes in flight are bounded by
//! [`BODY_BUFFER_BYTES`]: past that, the sink refuses more until the consumer
//! catches up, which is how backpressure reaches the socket on every backend
//! (an awaiting hyper task, a blocked ureq worker, a paused curl transfer).
//!
//! Waking the consumer is the expensive part of an event on a small load (a
//! futex call and a context switch each time), so wakes are economised where
//! that cannot change what the application sees:
//!
//! - Upload progress keeps only its latest value and wakes the consumer only
//!   every [`UPLOAD_PROGRESS_WAKE_BYTES`] (or [`UPLOAD_PROGRESS_WAKE_INTERVAL`]
//!   for a slow upload) and when the body is complete; the value waiting is
//!   delivered on the next wake whatever causes it.
//! - A backend may opt in to coalescing with [`ExchangeSink::defer_wakes`]:
//!   the response head and body chunks are then queued without waking, and
//!   [`ExchangeSink::flush_wakes`] wakes once for all of them (curl does at
//!   the end of each pass over its multi handle). The terminal event, a
//!   chunk that fills the buffer and a refused chunk always wake, so a
//!   backend that forgets to flush is at worst slower, never stuck behind a
//!   full buffer or a finished load.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use url::Url;

use crate::error::{Error, ErrorKind};
use crate::events::Event;
use crate::response::{ResourceResponse, ResponseHead};

/// Body bytes a load may hold between the backend and the application.
pub const BODY_BUFFER_BYTES: usize = 1 << 20;

/// Upload bytes between two wakes of the consumer for upload progress alone.
///
/// Every read of a request body updates the progress; waking the
/// application for each (a 64 or 256 KiB read at several GB/s) costs more
/// than the upload. The latest value is always the one delivered. Larger
/// than any backend's read, so a fast upload wakes once per this many bytes.
pub(crate) const UPLOAD_PROGRESS_WAKE_BYTES: u64 = 1 << 20;

/// Longest an application waiting for upload progress goes without it
/// while bytes are being sent, so a slow upload still shows progress
/// several times a second.
pub(crate) const UPLOAD_PROGRESS_WAKE_INTERVAL: Duration = Duration::from_millis(50);

pub(crate) type Callback = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    events: VecDeque<Event>,
    buffered: usize,
    /// Upload progress is coalesced: only the latest value waits for the consumer.
    upload: Option<(u64, Option<u64>)>,
    /// The upload progress of the last wake it caused, and when.
    upload_woken_at: u64,
    upload_woken_when: Option<Instant>,
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

    /// Queues `event`; wakes the consumer unless `defer` (never deferred for
    /// the terminal event). Returns whether a wake is owed.
    fn push(&self, event: Event, defer: bool) -> bool {
        let waker = {
            let mut st = self.lock();
            if st.terminal {
                return false;
            }
            let terminal = event.is_terminal();
            st.terminal |= terminal;
            st.events.push_back(event);
            if defer && !terminal {
                return true;
            }
            st.consumer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        false
    }

    /// Wakes the consumer if it waits (the end of a deferred batch).
    fn wake_consumer(&self) {
        let waker = self.lock().consumer.take();
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
            // The value is stored either way; only the wake is rationed, and
            // the body's last byte always wakes so a finished upload shows.
            let now = Instant::now();
            let due = sent.saturating_sub(st.upload_woken_at) >= UPLOAD_PROGRESS_WAKE_BYTES
                || total == Some(sent)
                || st
                    .upload_woken_when
                    .is_none_or(|at| now.duration_since(at) >= UPLOAD_PROGRESS_WAKE_INTERVAL);
            if !due {
                return;
            }
            st.upload_woken_at = sent;
            st.upload_woken_when = Some(now);
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
    /// Set by [`Self::defer_wakes`]: non-terminal events do not wake.
    defer: bool,
    /// An event was queued without waking since the last flush.
    wake_owed: bool,
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
                defer: false,
                wake_owed: false,
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
        self.wake_owed |= self.shared.push(Event::Response(response), self.defer);
    }

    /// Opts this sink in to wake coalescing: from now on the response head
    /// and body chunks are queued without waking the consumer, and the
    /// backend calls [`flush_wakes`](Self::flush_wakes) when it is about to
    /// wait (for the network, or at the end of a pass over its transfers),
    /// so a head, its first chunks and the end cost the application one
    /// wake-up instead of one each.
    ///
    /// What always wakes at once, deferred or not: [`finish`](Self::finish),
    /// [`fail`](Self::fail) and dropping the sink; a chunk that fills the
    /// buffer to [`BODY_BUFFER_BYTES`]; a chunk refused as
    /// [`TryData::Full`] or a [`data`](Self::data) call that has to wait.
    /// So forgetting a flush delays events until one of those, and can
    /// never leave the backend waiting for room that the application was
    /// not told to make. Event order is the same as without deferral.
    pub fn defer_wakes(&mut self) {
        self.defer = true;
    }

    /// Wakes the consumer for the events queued since the last wake, if
    /// any (cheap when none are owed: no lock is taken). See
    /// [`defer_wakes`](Self::defer_wakes).
    pub fn flush_wakes(&mut self) {
        if std::mem::take(&mut self.wake_owed) {
            self.shared.wake_consumer();
        }
    }

    /// True when events were queued without a wake since the last flush.
    pub fn wakes_owed(&self) -> bool {
        self.wake_owed
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
                // The backend will wait for room: the application must know
                // there is something to take, whatever was deferred.
                self.wake_owed = false;
                let waker = st.consumer.take();
                drop(st);
                if let Some(w) = waker {
                    w.wake();
                }
                return TryData::Full(chunk);
            }
            st.buffered += chunk.len();
            self.received += chunk.len() as u64;
            st.events.push_back(Event::Data(chunk));
            if self.defer && st.buffered < BODY_BUFFER_BYTES {
                self.wake_owed = true;
                return TryData::Queued;
            }
            self.wake_owed = false;
            st.consumer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        TryData::Queued
    }

    /// True while the buffer has room for another chunk, so an event-loop
    /// backend can check before it copies a chunk that
    /// [`try_data`](Self::try_data) would refuse. A cancelled load has room
    /// (its `try_data` reports the cancel).
    pub fn has_room(&self) -> bool {
        let st = self.shared.lock();
        st.cancelled || st.buffered < BODY_BUFFER_BYTES
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
        self.wake_owed = false;
        self.shared.push(Event::Finished, false);
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
        self.wake_owed = false;
        self.shared.push(Event::Failed(error), false);
    }
}

impl Drop for ExchangeSink {
    fn drop(&mut self) {
        // However the exchange ended (finish and fail release it first), its
        // scheduler slot is free before the end is reported.
        self.release_slot();
        if !self.ended {
            self.shared.push(
                Event::Failed(
                    Error::new(
                        ErrorKind::Io,
                        "the backend dropped the exchange without ending it",
                    )
                    .with_url(&self.url),
                ),
                false,
            );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HeaderMap, StatusCode, Version};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// Counts its wakes.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Consumer {
        shared: Arc<Shared>,
        counter: Arc<Counter>,
        waker: Waker,
    }

    impl Consumer {
        fn new(shared: Arc<Shared>) -> Self {
            let counter = Arc::new(Counter(AtomicUsize::new(0)));
            let waker = Waker::from(counter.clone());
            Consumer {
                shared,
                counter,
                waker,
            }
        }

        fn wakes(&self) -> usize {
            self.counter.0.load(Ordering::SeqCst)
        }

        /// Polls until pending; the names of the events taken.
        fn drain(&self) -> Vec<&'static str> {
            let mut cx = Context::from_waker(&self.waker);
            let mut names = Vec::new();
            while let Poll::Ready(Some(ev)) = self.shared.poll_event(&mut cx) {
                names.push(ev.name());
            }
            names
        }
    }

    fn sink() -> (ExchangeSink, Consumer) {
        let (sink, shared) = ExchangeSink::new(Url::parse("http://example.test/").unwrap());
        (sink, Consumer::new(shared))
    }

    fn take_none(consumer: &Consumer) {
        assert!(consumer.drain().is_empty());
    }

    fn head() -> ResponseHead {
        ResponseHead::new(StatusCode::OK, Version::HTTP_11, HeaderMap::new())
    }

    #[test]
    fn every_event_wakes_without_deferral() {
        let (mut sink, consumer) = sink();
        assert!(consumer.drain().is_empty());
        sink.response(head());
        assert_eq!(consumer.drain(), ["response"]);
        assert!(matches!(
            sink.try_data(Bytes::from_static(b"ab")),
            TryData::Queued
        ));
        assert_eq!(consumer.drain(), ["data"]);
        sink.finish();
        assert_eq!(consumer.drain(), ["finished"]);
        assert_eq!(consumer.wakes(), 3);
    }

    #[test]
    fn deferred_events_wake_once_on_flush_and_keep_their_order() {
        let (mut sink, consumer) = sink();
        sink.defer_wakes();
        assert!(consumer.drain().is_empty());
        sink.response(head());
        assert!(matches!(
            sink.try_data(Bytes::from_static(b"ab")),
            TryData::Queued
        ));
        assert!(matches!(
            sink.try_data(Bytes::from_static(b"cd")),
            TryData::Queued
        ));
        assert_eq!(consumer.wakes(), 0);
        assert!(sink.wakes_owed());
        sink.flush_wakes();
        assert_eq!(consumer.wakes(), 1);
        // Nothing owed: a second flush does not wake.
        sink.flush_wakes();
        assert_eq!(consumer.wakes(), 1);
        assert_eq!(consumer.drain(), ["response", "data", "data"]);
        // The end always wakes, flushed or not.
        assert!(matches!(
            sink.try_data(Bytes::from_static(b"ef")),
            TryData::Queued
        ));
        sink.finish();
        assert_eq!(consumer.wakes(), 2);
        assert_eq!(consumer.drain(), ["data", "finished"]);
    }

    #[test]
    fn a_deferred_sink_wakes_when_the_buffer_fills_and_when_dropped() {
        let (mut sink, consumer) = sink();
        sink.defer_wakes();
        take_none(&consumer);
        sink.response(head());
        let half = Bytes::from(vec![0u8; BODY_BUFFER_BYTES / 2]);
        assert!(matches!(sink.try_data(half.clone()), TryData::Queued));
        assert_eq!(consumer.wakes(), 0);
        // This chunk fills the buffer: the backend must wait, so it wakes.
        assert!(matches!(sink.try_data(half.clone()), TryData::Queued));
        assert_eq!(consumer.wakes(), 1);
        assert!(!sink.wakes_owed());
        assert!(!sink.has_room());
        assert!(matches!(sink.try_data(half), TryData::Full(_)));
        assert_eq!(consumer.drain(), ["response", "data", "data"]);
        drop(sink);
        assert_eq!(consumer.wakes(), 2);
        assert_eq!(consumer.drain(), ["failed"]);
    }

    #[test]
    fn upload_progress_wakes_are_rationed_but_the_latest_value_is_kept() {
        let started = Instant::now();
        let (sink, consumer) = sink();
        let step = 256 * 1024;
        let total = 12 * step;
        let mut cx = Context::from_waker(&consumer.waker);
        let mut seen = Vec::new();
        let mut take = |consumer: &Consumer| loop {
            match consumer.shared.poll_event(&mut cx) {
                Poll::Ready(Some(Event::UploadProgress { sent, .. })) => seen.push(sent),
                Poll::Pending => break,
                other => panic!("expected upload progress, got {other:?}"),
            }
        };
        take(&consumer);
        let mut sent = 0;
        while sent < total {
            sent = (sent + step).min(total);
            let before = consumer.wakes();
            sink.upload_progress(sent, Some(total));
            if consumer.wakes() > before {
                take(&consumer);
            }
        }
        // Not one wake per read; the body's last byte always wakes.
        assert!(consumer.wakes() < 12, "{seen:?}");
        assert_eq!(seen.last(), Some(&total));
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        if started.elapsed() < UPLOAD_PROGRESS_WAKE_INTERVAL {
            // The first update, then one per UPLOAD_PROGRESS_WAKE_BYTES.
            assert_eq!(seen, [step, 5 * step, 9 * step, total]);
        }

        // A value not worth a wake is still delivered with the next event.
        let started = Instant::now();
        let (mut sink2, consumer2) = super::tests::sink();
        take_none(&consumer2);
        sink2.upload_progress(10, None);
        assert_eq!(consumer2.wakes(), 1);
        assert_eq!(consumer2.drain(), ["upload_progress"]);
        sink2.upload_progress(20, None);
        if started.elapsed() < UPLOAD_PROGRESS_WAKE_INTERVAL {
            assert_eq!(consumer2.wakes(), 1);
        }
        sink2.response(head());
        assert!(consumer2.wakes() >= 2);
        assert_eq!(consumer2.drain(), ["upload_progress", "response"]);
        sink2.finish();
        sink.finish();
    }
}
