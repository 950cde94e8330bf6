//! One error type for every backend.
//!
//! [`Error::kind`] is what the conformance suite compares: the same fault must
//! give the same [`ErrorKind`] whichever library carried the load. The
//! library's own error stays reachable through [`std::error::Error::source`]
//! but never appears in the public API, as in hyper's opaque error.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use url::Url;

use crate::tls::TlsProblem;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, independent of the backend that saw it.
///
/// The snake_case names returned by [`ErrorKind::as_str`] are stable: tools
/// and CI read them from traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request could not be built or sent as given (bad url, header injection, bad method).
    InvalidRequest,
    /// No handler for the url's scheme.
    UnsupportedScheme,
    /// The host name could not be resolved.
    Dns,
    /// The connection could not be established (refused, unreachable).
    Connect,
    /// The TLS handshake failed or the certificate was not acceptable.
    Tls,
    /// A timeout elapsed; [`Error::timeout_phase`] says which.
    Timeout,
    /// The server's response broke the protocol (malformed status line, bad framing).
    Protocol,
    /// The body ended before its declared length; see [`Error::truncation`].
    BodyTruncated,
    /// More redirects than the policy allows.
    TooManyRedirects,
    /// A redirect was refused by the policy or could not be followed.
    RedirectRefused,
    /// The load was cancelled by the application.
    Cancelled,
    /// The proxy refused or could not be reached.
    Proxy,
    /// Authentication failed.
    Auth,
    /// A configured limit (header size, decoded size) was exceeded.
    LimitExceeded,
    /// A local I/O error, such as a request body that failed to read.
    Io,
    /// The backend cannot honour an option of the request or the manager.
    Unsupported,
    /// The cache policy was [`ReturnCacheDataDontLoad`](crate::CachePolicy::ReturnCacheDataDontLoad)
    /// and nothing usable was cached: the load never touched the network.
    NotCached,
}

impl ErrorKind {
    /// The stable snake_case name used in traces.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::UnsupportedScheme => "unsupported_scheme",
            ErrorKind::Dns => "dns",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
            ErrorKind::BodyTruncated => "body_truncated",
            ErrorKind::TooManyRedirects => "too_many_redirects",
            ErrorKind::RedirectRefused => "redirect_refused",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Proxy => "proxy",
            ErrorKind::Auth => "auth",
            ErrorKind::LimitExceeded => "limit_exceeded",
            ErrorKind::Io => "io",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::NotCached => "not_cached",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The phase of a load in which a timeout elapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// Establishing the connection (TCP, and TLS where present).
    Connect,
    /// No byte arrived for longer than the idle timeout.
    Idle,
    /// The whole load took longer than the total timeout.
    Total,
}

impl TimeoutPhase {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::Idle => "idle",
            TimeoutPhase::Total => "total",
        }
    }
}

/// Counts for a body that ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// Bytes the response declared (Content-Length); `None` for a chunked body.
    pub expected: Option<u64>,
    /// Bytes that arrived before the body ended.
    pub received: u64,
}

/// The error of a failed load or of a request that could not be built.
///
/// Cheap to clone: the event stream and the handle both hold it.
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    url: Option<Url>,
    timeout: Option<TimeoutPhase>,
    truncation: Option<Truncation>,
    tls: Option<TlsProblem>,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl Error {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                url: None,
                timeout: None,
                truncation: None,
                tls: None,
                source: None,
            }),
        }
    }

    /// A timeout in `phase`.
    pub fn timeout(phase: TimeoutPhase) -> Self {
        let mut e = Error::new(
            ErrorKind::Timeout,
            format!("{} timeout elapsed", phase.as_str()),
        );
        e.inner_mut().timeout = Some(phase);
        e
    }

    /// A body that ended after `received` bytes, short of the `expected`
    /// Content-Length, or (`None`) before the end of its chunked framing.
    pub fn truncated(expected: Option<u64>, received: u64) -> Self {
        let message = match expected {
            Some(expected) => format!("body ended after {received} of {expected} bytes"),
            None => format!("body ended after {received} bytes, before its last chunk"),
        };
        let mut e = Error::new(ErrorKind::BodyTruncated, message);
        e.inner_mut().truncation = Some(Truncation { expected, received });
        e
    }

    /// A TLS failure: what was wrong with the certificate or handshake, and
    /// the library's description.
    pub fn tls(problem: TlsProblem, message: impl Into<String>) -> Self {
        let mut e = Error::new(ErrorKind::Tls, message);
        e.inner_mut().tls = Some(problem);
        e
    }

    /// The request went out on a reused connection that closed before any
    /// response byte, and may not be (or was already) sent again
    /// ([`WireRequest::may_retry_on_stale_connection`](crate::WireRequest::may_retry_on_stale_connection)):
    /// the server's fault, a `protocol` error on every backend.
    pub fn stale_connection() -> Self {
        Error::new(
            ErrorKind::Protocol,
            "the server closed the reused connection before any response, \
             and the request may not be sent again",
        )
    }

    /// The cancellation error.
    pub fn cancelled() -> Self {
        Error::new(ErrorKind::Cancelled, "the load was cancelled")
    }

    fn inner_mut(&mut self) -> &mut Inner {
        // Builders run before the error is shared, so this never clones in practice.
        if Arc::get_mut(&mut self.inner).is_none() {
            let i = &self.inner;
            self.inner = Arc::new(Inner {
                kind: i.kind,
                message: i.message.clone(),
                url: i.url.clone(),
                timeout: i.timeout,
                truncation: i.truncation,
                tls: i.tls,
                source: i.source.as_ref().map(|s| {
                    Box::new(StringError(s.to_string())) as Box<dyn StdError + Send + Sync>
                }),
            });
        }
        Arc::get_mut(&mut self.inner).expect("unique after copy")
    }

    /// Attaches the library's own error, reachable through `source()`.
    pub fn with_source(mut self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.inner_mut().source = Some(source.into());
        self
    }

    /// Attaches the url of the load.
    pub fn with_url(mut self, url: &Url) -> Self {
        self.inner_mut().url = Some(url.clone());
        self
    }

    /// Sets the timeout phase (for a [`ErrorKind::Timeout`] error).
    pub fn with_timeout_phase(mut self, phase: TimeoutPhase) -> Self {
        self.inner_mut().timeout = Some(phase);
        self
    }

    /// What went wrong, the same for every backend.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The human-readable message, without the url.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The url of the load, when known.
    pub fn url(&self) -> Option<&Url> {
        self.inner.url.as_ref()
    }

    /// For a timeout, the phase in which it elapsed.
    pub fn timeout_phase(&self) -> Option<TimeoutPhase> {
        self.inner.timeout
    }

    /// For a truncated body, how many bytes were expected and received.
    pub fn truncation(&self) -> Option<Truncation> {
        self.inner.truncation
    }

    /// For a TLS error, what was wrong with the certificate or handshake.
    pub fn tls_problem(&self) -> Option<TlsProblem> {
        self.inner.tls
    }

    /// The detail a trace compares besides the kind: for a TLS error, what
    /// was wrong (`expired`, `wrong_host`, …).
    pub fn detail(&self) -> Option<&'static str> {
        self.inner.tls.map(TlsProblem::as_str)
    }

    /// True for [`ErrorKind::Timeout`].
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == ErrorKind::Timeout
    }

    /// True for [`ErrorKind::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        self.inner.kind == ErrorKind::Cancelled
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(url) = &self.inner.url {
            d.field("url", &url.as_str());
        }
        if let Some(p) = self.inner.timeout {
            d.field("timeout", &p);
        }
        if let Some(t) = self.inner.truncation {
            d.field("truncation", &t);
        }
        if let Some(t) = self.inner.tls {
            d.field("tls", &t);
        }
        if let Some(s) = &self.inner.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.inner.kind, self.inner.message)?;
        if let Some(url) = &self.inner.url {
            write!(f, " ({url})")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| &**s as &(dyn StdError + 'static))
    }
}

#[derive(Debug)]
struct StringError(String);

impl fmt::Display for StringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for StringError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_stable_names() {
        assert_eq!(ErrorKind::BodyTruncated.as_str(), "body_truncated");
        assert_eq!(
            ErrorKind::TooManyRedirects.to_string(),
            "too_many_redirects"
        );
    }

    #[test]
    fn truncation_and_timeout_carry_detail() {
        let e = Error::truncated(Some(10), 4);
        assert_eq!(e.kind(), ErrorKind::BodyTruncated);
        assert_eq!(
            e.truncation(),
            Some(Truncation {
                expected: Some(10),
                received: 4
            })
        );
        let t = Error::timeout(TimeoutPhase::Connect);
        assert!(t.is_timeout());
        assert_eq!(t.timeout_phase(), Some(TimeoutPhase::Connect));
    }

    #[test]
    fn source_survives_url_attachment_after_clone() {
        let io = std::io::Error::other("boom");
        let e = Error::new(ErrorKind::Io, "read failed").with_source(io);
        let shared = e.clone();
        let with_url = shared.with_url(&Url::parse("http://a.test/").unwrap());
        assert_eq!(with_url.source().unwrap().to_string(), "boom");
        assert_eq!(with_url.url().unwrap().as_str(), "http://a.test/");
        assert!(e.url().is_none());
    }
}
