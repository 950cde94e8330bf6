//! `ResourceHandle`: one running load, after WebCore's ResourceHandle and Qt's QNetworkReply.

use std::future::poll_fn;
use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use url::Url;

use crate::block_on::block_on;
use crate::error::{Error, ErrorKind, Result};
use crate::events::Event;
use crate::manager::Load;
use crate::response::ResourceResponse;

/// One running load.
///
/// Pull its events with [`next_event`](Self::next_event), or use the
/// shortcuts: [`response`](Self::response), [`chunk`](Self::chunk),
/// [`bytes`](Self::bytes), [`text`](Self::text). Each has a `_blocking` twin
/// for code outside any async runtime. The body is streamed: bytes not yet
/// taken are bounded, and the transfer waits for the application.
///
/// Dropping the handle cancels the load and releases its connection.
pub struct ResourceHandle {
    load: Load,
    url: Url,
    /// The download progress that follows the data event just delivered;
    /// never more than one event waits here, so no queue is allocated.
    pending: Option<Event>,
    response: Option<ResourceResponse>,
    error: Option<Error>,
    delivered: u64,
    done: bool,
    finished: bool,
}

impl ResourceHandle {
    pub(crate) fn new(load: Load) -> Self {
        ResourceHandle {
            url: load.url().clone(),
            load,
            pending: None,
            response: None,
            error: None,
            delivered: 0,
            done: false,
            finished: false,
        }
    }

    /// The url requested.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Cancels the load. The handle then ends with a `cancelled` failure
    /// (unless it had already ended), and the backend frees the connection.
    pub fn cancel(&self) {
        self.load.cancel();
    }

    /// Stops delivering events (WebCore's defersLoading). Bytes keep arriving
    /// until the buffer is full, then the transfer waits; nothing is lost.
    pub fn pause(&self) {
        self.load.set_paused(true);
    }

    /// Resumes delivery after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.load.set_paused(false);
    }

    /// The response, once it has arrived.
    pub fn current_response(&self) -> Option<&ResourceResponse> {
        self.response.as_ref()
    }

    /// The error the load ended with, if it failed.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// Body bytes handed to the application so far.
    pub fn bytes_received(&self) -> u64 {
        self.delivered
    }

    /// Polls for the next event; `Ready(None)` once the terminal event was delivered.
    pub fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if let Some(ev) = self.pending.take() {
            return Poll::Ready(Some(ev));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let ev = match self.load.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(ev)) => ev,
            // The queue reports cancellation as its end; the handle names it.
            Poll::Ready(None) => Event::Failed(Error::cancelled().with_url(&self.url)),
        };
        match &ev {
            Event::Response(r) => self.response = Some(r.clone()),
            Event::Data(d) => {
                self.delivered += d.len() as u64;
                // Progress is derived here, once for every backend, so the last
                // progress always equals the bytes delivered.
                self.pending = Some(Event::DownloadProgress {
                    received: self.delivered,
                    total: self
                        .response
                        .as_ref()
                        .and_then(|r| r.expected_content_length()),
                });
            }
            Event::Finished => {
                self.done = true;
                self.finished = true;
            }
            Event::Failed(e) => {
                self.done = true;
                self.error = Some(e.clone());
            }
            _ => {}
        }
        Poll::Ready(Some(ev))
    }

    /// The next event, or `None` after the terminal one.
    pub async fn next_event(&mut self) -> Option<Event> {
        poll_fn(|cx| self.poll_next_event(cx)).await
    }

    /// Blocking twin of [`next_event`](Self::next_event).
    pub fn next_event_blocking(&mut self) -> Option<Event> {
        block_on(self.next_event())
    }

    fn ended_error(&self) -> Error {
        self.error.clone().unwrap_or_else(|| {
            Error::new(ErrorKind::Io, "the load ended without a response").with_url(&self.url)
        })
    }

    /// Waits for the response head (skipping progress and redirects).
    pub async fn response(&mut self) -> Result<&ResourceResponse> {
        while self.response.is_none() {
            match self.next_event().await {
                Some(Event::Failed(e)) => return Err(e),
                Some(_) => {}
                None => return Err(self.ended_error()),
            }
        }
        Ok(self.response.as_ref().expect("checked above"))
    }

    /// Blocking twin of [`response`](Self::response).
    pub fn response_blocking(&mut self) -> Result<&ResourceResponse> {
        block_on(async {
            while self.response.is_none() {
                match self.next_event().await {
                    Some(Event::Failed(e)) => return Err(e),
                    Some(_) => {}
                    None => return Err(self.ended_error()),
                }
            }
            Ok(())
        })?;
        Ok(self.response.as_ref().expect("checked above"))
    }

    /// The next body chunk; `Ok(None)` at the end of a complete body.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            match self.next_event().await {
                Some(Event::Data(d)) => return Ok(Some(d)),
                Some(Event::Failed(e)) => return Err(e),
                Some(Event::Finished) => return Ok(None),
                Some(_) => {}
                None if self.finished => return Ok(None),
                None => return Err(self.ended_error()),
            }
        }
    }

    /// Blocking twin of [`chunk`](Self::chunk).
    pub fn chunk_blocking(&mut self) -> Result<Option<Bytes>> {
        block_on(self.chunk())
    }

    /// The whole body. Prefer [`chunk`](Self::chunk) for large bodies.
    pub async fn bytes(&mut self) -> Result<Bytes> {
        let Some(first) = self.chunk().await? else {
            return Ok(Bytes::new());
        };
        // A body that came in one chunk is returned without a copy.
        let Some(second) = self.chunk().await? else {
            return Ok(first);
        };
        let mut buf = BytesMut::with_capacity(first.len() + second.len());
        buf.extend_from_slice(&first);
        buf.extend_from_slice(&second);
        while let Some(c) = self.chunk().await? {
            buf.extend_from_slice(&c);
        }
        Ok(buf.freeze())
    }

    /// Blocking twin of [`bytes`](Self::bytes).
    pub fn bytes_blocking(&mut self) -> Result<Bytes> {
        block_on(self.bytes())
    }

    /// The whole body as text (UTF-8, invalid sequences replaced).
    pub async fn text(&mut self) -> Result<String> {
        let b = self.bytes().await?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// Blocking twin of [`text`](Self::text).
    pub fn text_blocking(&mut self) -> Result<String> {
        block_on(self.text())
    }

    /// The events as a [`futures_core::Stream`].
    pub fn events(self) -> EventStream {
        EventStream { handle: self }
    }

    /// The body as a blocking [`Read`]er; a failed load reads as an I/O error
    /// whose inner error is the [`Error`].
    pub fn into_reader(self) -> BodyReader {
        BodyReader {
            handle: self,
            current: Bytes::new(),
        }
    }
}

impl Drop for ResourceHandle {
    fn drop(&mut self) {
        if !self.done {
            self.load.cancel();
        }
    }
}

impl std::fmt::Debug for ResourceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceHandle")
            .field("url", &self.url.as_str())
            .field("delivered", &self.delivered)
            .field("done", &self.done)
            .finish()
    }
}

/// A [`ResourceHandle`]'s events as a stream.
#[derive(Debug)]
pub struct EventStream {
    handle: ResourceHandle,
}

impl EventStream {
    /// The handle behind the stream.
    pub fn handle(&self) -> &ResourceHandle {
        &self.handle
    }
}

impl futures_core::Stream for EventStream {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.handle.poll_next_event(cx)
    }
}

/// A blocking reader over a handle's body.
#[derive(Debug)]
pub struct BodyReader {
    handle: ResourceHandle,
    current: Bytes,
}

impl BodyReader {
    /// The handle behind the reader.
    pub fn handle(&self) -> &ResourceHandle {
        &self.handle
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.handle.chunk_blocking() {
                Ok(Some(c)) => self.current = c,
                Ok(None) => return Ok(0),
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}
