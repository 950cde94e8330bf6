//! ureq's errors onto the one [`ErrorKind`] set every backend reports.
//!
//! ureq reports most network faults as `Error::Io`, so what an I/O error
//! means depends on where it happened: the backend's own connector and
//! resolver wrap their failures in the marker types below, the request body
//! reader wraps its errors in [`UploadError`], and the driver says whether
//! the response head was already received ([`Stage`]).

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;

use handle_api::{Error, ErrorKind, TimeoutPhase, TlsProblem};

use crate::framing::Refusal;

/// Where in the exchange an error surfaced.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stage {
    /// Connecting, sending the request, or waiting for the response head.
    Head,
    /// Reading the body of a reported response.
    Body {
        /// The response's Content-Length.
        expected: Option<u64>,
        /// Body bytes reported so far.
        received: u64,
        /// The body is chunked.
        chunked: bool,
    },
}

/// The exchange was cancelled: raised by the transport instead of doing I/O.
#[derive(Debug)]
pub(crate) struct CancelledIo;

impl fmt::Display for CancelledIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the exchange was cancelled")
    }
}

impl StdError for CancelledIo {}

/// The TCP connection could not be established.
#[derive(Debug)]
pub(crate) struct ConnectError {
    addr: Option<SocketAddr>,
    source: io::Error,
}

impl ConnectError {
    pub(crate) fn new(addr: Option<SocketAddr>, source: io::Error) -> Self {
        ConnectError { addr, source }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(a) => write!(f, "cannot connect to {a}: {}", self.source),
            None => write!(f, "cannot connect: {}", self.source),
        }
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}

/// The host name has no address: overridden to none, or unknown to the system.
#[derive(Debug)]
pub(crate) struct ResolveError {
    host: String,
    port: u16,
    source: Option<ureq::Error>,
}

impl ResolveError {
    pub(crate) fn new(host: &str, port: u16, source: Option<ureq::Error>) -> Self {
        ResolveError {
            host: host.to_owned(),
            port,
            source,
        }
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(e) => write!(f, "cannot resolve {}:{}: {e}", self.host, self.port),
            None => write!(
                f,
                "{}:{} is mapped to no address by the host overrides",
                self.host, self.port
            ),
        }
    }
}

impl StdError for ResolveError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// The TLS handshake or session failed: a certificate the verifier refused,
/// an alert from the server, a broken record, or the connection lost during
/// the handshake.
#[derive(Debug)]
pub(crate) struct TlsFailure {
    problem: TlsProblem,
    source: Box<dyn StdError + Send + Sync>,
}

impl TlsFailure {
    pub(crate) fn from_rustls(e: rustls::Error) -> Self {
        TlsFailure {
            problem: crate::tls::problem(&e),
            source: Box::new(e),
        }
    }

    /// The connection failed under the handshake (closed, reset).
    pub(crate) fn handshake(e: io::Error) -> Self {
        TlsFailure::new(TlsProblem::Handshake, e)
    }

    pub(crate) fn new(
        problem: TlsProblem,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        TlsFailure {
            problem,
            source: source.into(),
        }
    }

    fn to_error(&self) -> Error {
        Error::tls(self.problem, self.to_string())
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.problem {
            TlsProblem::UntrustedIssuer => {
                "the server's certificate is not issued by a trusted root"
            }
            TlsProblem::Expired => "the server's certificate has expired or is not valid yet",
            TlsProblem::WrongHost => "the server's certificate is not valid for the host name",
            TlsProblem::ClientCertificate => "the server refused the client certificate",
            _ => "the TLS handshake failed",
        };
        write!(f, "{what}: {}", self.source)
    }
}

impl StdError for TlsFailure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// The proxy could not be reached, refused the tunnel, or failed the SOCKS5
/// handshake.
#[derive(Debug)]
pub(crate) struct ProxyFailure {
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl ProxyFailure {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ProxyFailure {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }
}

impl fmt::Display for ProxyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{}: {s}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl StdError for ProxyFailure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// The connection broke (a reset) while reading: raised by the transport
/// instead of the plain io::Error, which ureq would take for a clean close.
#[derive(Debug)]
pub(crate) struct ConnectionBroken(pub(crate) io::Error);

impl fmt::Display for ConnectionBroken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the connection broke: {}", self.0)
    }
}

impl StdError for ConnectionBroken {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

/// The transport's response filter refused the response (see `framing`).
#[derive(Debug)]
pub(crate) struct FilterRefusal(pub(crate) Refusal);

impl fmt::Display for FilterRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Refusal::Limit(m) | Refusal::Protocol(m) => f.write_str(m),
            Refusal::Truncated => f.write_str("the chunked body ended before its last chunk"),
        }
    }
}

impl StdError for FilterRefusal {}

/// Reading the request body failed (the application's reader, or a stream
/// shorter or longer than its declared length).
#[derive(Debug)]
pub(crate) struct UploadError(pub(crate) io::Error);

impl fmt::Display for UploadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reading the request body failed: {}", self.0)
    }
}

impl StdError for UploadError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

/// Maps an error ureq returned at `stage`.
pub(crate) fn from_ureq(e: ureq::Error, stage: Stage) -> Error {
    use ureq::Error as U;
    let kind = match e {
        U::Timeout(t) => {
            // ureq names the phase whose deadline came first: its connect
            // budget, or the global one (our total timeout).
            // PerRead is the request's idle timeout (`timeout_per_read`).
            let phase = match t {
                ureq::Timeout::Connect => TimeoutPhase::Connect,
                ureq::Timeout::PerRead => TimeoutPhase::Idle,
                _ => TimeoutPhase::Total,
            };
            return Error::timeout(phase).with_source(e);
        }
        U::Io(io) => return from_io(io, stage),
        U::Other(o) => {
            if let Some(t) = o.downcast_ref::<TlsFailure>() {
                return t.to_error().with_source(o);
            }
            let kind = if o.is::<ResolveError>() {
                ErrorKind::Dns
            } else if o.is::<ConnectError>() {
                ErrorKind::Connect
            } else if o.is::<ProxyFailure>() {
                ErrorKind::Proxy
            } else {
                ErrorKind::Io
            };
            return Error::new(kind, o.to_string()).with_source(o);
        }
        U::HostNotFound => ErrorKind::Dns,
        U::ConnectionFailed => ErrorKind::Connect,
        U::Protocol(_) | U::StatusCode(_) | U::BodyStalled => ErrorKind::Protocol,
        U::Http(_) | U::BadUri(_) | U::RequireHttpsOnly(_) => ErrorKind::InvalidRequest,
        U::LargeResponseHeader(..) | U::BodyExceedsLimit(_) => ErrorKind::LimitExceeded,
        U::TooManyRedirects => ErrorKind::TooManyRedirects,
        U::RedirectFailed => ErrorKind::RedirectRefused,
        U::Tls(_) | U::TlsRequired => ErrorKind::Tls,
        U::InvalidProxyUrl | U::ConnectProxyFailed(_) => ErrorKind::Proxy,
        _ => ErrorKind::Io,
    };
    Error::new(kind, e.to_string()).with_source(e)
}

/// Maps an I/O error: ureq's own (through `Error::Io`) or one of a body reader.
pub(crate) fn from_io(e: io::Error, stage: Stage) -> Error {
    // ureq wraps its non-I/O errors in io::Error inside body readers.
    if e.get_ref().is_some_and(|i| i.is::<ureq::Error>()) {
        return from_ureq(ureq::Error::from(e), stage);
    }
    if e.get_ref().is_some_and(|i| i.is::<CancelledIo>()) {
        return Error::cancelled();
    }
    if let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<TlsFailure>()) {
        return t.to_error().with_source(e);
    }
    if e.get_ref().is_some_and(|i| i.is::<ProxyFailure>()) {
        return Error::new(ErrorKind::Proxy, e.to_string()).with_source(e);
    }
    if let Some(FilterRefusal(r)) = e.get_ref().and_then(|i| i.downcast_ref::<FilterRefusal>()) {
        return match (r, stage) {
            (Refusal::Limit(m), _) => Error::new(ErrorKind::LimitExceeded, m.clone()),
            (Refusal::Protocol(m), _) => Error::new(ErrorKind::Protocol, m.clone()),
            (
                Refusal::Truncated,
                Stage::Body {
                    expected, received, ..
                },
            ) => Error::truncated(expected, received),
            (Refusal::Truncated, Stage::Head) => Error::truncated(None, 0),
        }
        .with_source(e);
    }
    if e.get_ref().is_some_and(|i| i.is::<ConnectionBroken>()) {
        return match stage {
            // A body with framing that broke off is short, as after a close.
            Stage::Body {
                expected,
                received,
                chunked,
            } if expected.is_some() || chunked => Error::truncated(expected, received),
            _ => Error::new(ErrorKind::Io, e.to_string()),
        }
        .with_source(e);
    }
    if e.get_ref().is_some_and(|i| i.is::<UploadError>()) {
        let msg = e.to_string();
        return Error::new(ErrorKind::Io, msg).with_source(e);
    }
    match (e.kind(), stage) {
        // ureq reports a connection closed too early as UnexpectedEof.
        (
            io::ErrorKind::UnexpectedEof,
            Stage::Body {
                expected, received, ..
            },
        ) => Error::truncated(expected, received).with_source(e),
        (io::ErrorKind::UnexpectedEof, Stage::Head) => Error::new(
            ErrorKind::Protocol,
            "the connection closed before a complete response head",
        )
        .with_source(e),
        (io::ErrorKind::ConnectionRefused, _) => {
            Error::new(ErrorKind::Connect, e.to_string()).with_source(e)
        }
        _ => Error::new(ErrorKind::Io, e.to_string()).with_source(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_name_their_phase() {
        let e = from_ureq(ureq::Error::Timeout(ureq::Timeout::Connect), Stage::Head);
        assert_eq!(e.timeout_phase(), Some(TimeoutPhase::Connect));
        let e = from_ureq(ureq::Error::Timeout(ureq::Timeout::Global), Stage::Head);
        assert_eq!(e.timeout_phase(), Some(TimeoutPhase::Total));
        // A body reader hands ureq's timeout back wrapped in io::Error.
        let io = ureq::Error::Timeout(ureq::Timeout::Global).into_io();
        let e = from_io(
            io,
            Stage::Body {
                expected: None,
                received: 0,
                chunked: false,
            },
        );
        assert_eq!(e.timeout_phase(), Some(TimeoutPhase::Total));
    }

    #[test]
    fn early_eof_depends_on_the_stage() {
        let eof = || io::Error::new(io::ErrorKind::UnexpectedEof, "Peer disconnected");
        assert_eq!(from_io(eof(), Stage::Head).kind(), ErrorKind::Protocol);
        let e = from_io(
            eof(),
            Stage::Body {
                expected: Some(10),
                received: 4,
                chunked: false,
            },
        );
        assert_eq!(e.kind(), ErrorKind::BodyTruncated);
        assert_eq!(
            e.truncation().map(|t| (t.expected, t.received)),
            Some((Some(10), 4))
        );
    }

    #[test]
    fn marker_errors_keep_their_kind() {
        let dns = ureq::Error::Other(Box::new(ResolveError::new("a.test", 80, None)));
        assert_eq!(from_ureq(dns, Stage::Head).kind(), ErrorKind::Dns);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let c = ureq::Error::Other(Box::new(ConnectError::new(None, refused)));
        let c = from_ureq(c, Stage::Head);
        assert_eq!(c.kind(), ErrorKind::Connect);
        assert!(c.source().is_some());
        let up = io::Error::other(UploadError(io::Error::other("disk gone")));
        assert_eq!(
            from_ureq(ureq::Error::Io(up), Stage::Head).kind(),
            ErrorKind::Io
        );
        let cancel = io::Error::other(CancelledIo);
        assert_eq!(from_io(cancel, Stage::Head).kind(), ErrorKind::Cancelled);
    }
}
