//! hyper's errors → [`handle_api::Error`].
//!
//! hyper's error is opaque: what it tells is its `is_*` checks and its
//! `source()` chain. Each mapping below walks that chain and looks for the
//! first cause it recognises: a `hyper::Error`, a rustls error (a TLS alert
//! can arrive after the handshake, in TLS 1.3 when the server refuses the
//! client certificate), or the `io::Error` underneath. Connect failures
//! never get here: the connector reports them in the contract's terms.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use handle_api::{Error, ErrorKind, TimeoutPhase};

/// The error frame a streamed request body yields when its reader failed.
/// The `io::Error` itself travels beside it (see `convert::UploadFailure`),
/// because hyper may report only a generic error once the body aborts.
#[derive(Debug)]
pub(crate) struct UploadAborted;

impl fmt::Display for UploadAborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request body could not be read")
    }
}

impl StdError for UploadAborted {}

fn chain<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |e: &&'a (dyn StdError + 'static)| (*e).source())
}

fn find<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    chain(e).find_map(|e| e.downcast_ref::<T>())
}

/// The innermost description, which is what a reader of the message wants
/// ("connection refused" rather than "client error (Connect)").
fn describe(e: &(dyn StdError + 'static)) -> String {
    chain(e)
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// A request body read error: the load fails with `io`.
pub(crate) fn upload(e: io::Error) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("reading the request body failed: {e}"),
    )
    .with_source(e)
}

/// The total timeout elapsed.
pub(crate) fn total_timeout(elapsed: tokio::time::error::Elapsed) -> Error {
    Error::timeout(TimeoutPhase::Total).with_source(elapsed)
}

/// A TLS error (an alert from the server, a bad record) somewhere in the chain.
fn tls(e: &(dyn StdError + 'static)) -> Option<Error> {
    let io = chain(e).find_map(|e| {
        let io = e.downcast_ref::<io::Error>()?;
        crate::tls::rustls_error(io)
    })?;
    Some(Error::tls(
        crate::tls::problem(io),
        format!("the TLS connection failed: {io}"),
    ))
}

/// What an HTTP/2 error says, when the failure was one: `Some(Protocol)`
/// for a peer that broke the protocol (or a frame this side could not
/// take), `Some(Io)` for a stream the peer reset or a connection it closed
/// with GOAWAY, `None` when a socket error underneath is the real cause.
fn h2_kind(e: &(dyn StdError + 'static)) -> Option<ErrorKind> {
    let h2 = find::<h2::Error>(e)?;
    if h2.is_io() {
        return None;
    }
    let broken = matches!(
        h2.reason(),
        Some(
            h2::Reason::PROTOCOL_ERROR
                | h2::Reason::FRAME_SIZE_ERROR
                | h2::Reason::COMPRESSION_ERROR
                | h2::Reason::FLOW_CONTROL_ERROR
                | h2::Reason::STREAM_CLOSED
        )
    );
    Some(if broken {
        ErrorKind::Protocol
    } else {
        ErrorKind::Io
    })
}

/// A failure before the response head arrived (sending the request,
/// reading the head).
pub(crate) fn request(err: hyper::Error, upload_failed: Option<io::Error>) -> Error {
    // A failed body read makes hyper abort the request with an error of its
    // own; the stored read error is the real cause.
    if let Some(e) = upload_failed {
        return upload(e);
    }
    let dyn_err: &(dyn StdError + 'static) = &err;
    let message = describe(dyn_err);

    if let Some(e) = tls(dyn_err) {
        return e.with_source(err);
    }
    // `Wire` raises the limit as an io::Error, whose source() skips the
    // error it wraps: look inside.
    let too_large = chain(dyn_err).find_map(|e| {
        e.downcast_ref::<io::Error>()?
            .get_ref()?
            .downcast_ref::<crate::conn::HeadTooLarge>()
    });
    if let Some(limit) = too_large {
        return Error::new(ErrorKind::LimitExceeded, limit.to_string()).with_source(err);
    }
    let h = &err;
    {
        // `is_parse_too_large` exists only with hyper's server feature; its
        // message is the same check ("message head is too large").
        if h.is_parse() && h.to_string().contains("too large") {
            // Past the head limits hyper was built with (BackendConfig's).
            return Error::new(
                ErrorKind::LimitExceeded,
                format!("the response head is over the limit: {message}"),
            )
            .with_source(err);
        }
        if h.is_parse() {
            // A malformed status line or header, or a head past hyper's size limit.
            return Error::new(ErrorKind::Protocol, message).with_source(err);
        }
        if h.is_incomplete_message() {
            // The server closed the connection before a complete head.
            return Error::new(ErrorKind::Protocol, message).with_source(err);
        }
        if h.is_timeout() {
            return Error::timeout(TimeoutPhase::Total).with_source(err);
        }
    }

    if find::<UploadAborted>(dyn_err).is_some() {
        return Error::new(ErrorKind::Io, message).with_source(err);
    }
    if let Some(kind) = h2_kind(dyn_err) {
        return Error::new(kind, message).with_source(err);
    }

    if let Some(io) = find::<io::Error>(dyn_err) {
        if matches!(
            io.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
        ) {
            return Error::new(ErrorKind::Protocol, message).with_source(err);
        }
    }

    Error::new(ErrorKind::Io, message).with_source(err)
}

/// A failure while the body streamed, after the head was reported.
/// `expected` and `received` are the sink's Content-Length and byte count;
/// `chunked` says the body's framing marks its own end (chunked, or HTTP/2's
/// END_STREAM), so a cut before that end is a truncation.
pub(crate) fn body(
    err: hyper::Error,
    expected: Option<u64>,
    received: u64,
    chunked: bool,
    upload_failed: Option<io::Error>,
) -> Error {
    if let Some(e) = upload_failed {
        return upload(e);
    }
    if let Some(expected) = expected {
        if received < expected {
            // Whatever cut the stream (a close, a reset), the body is short of
            // what the head declared.
            return Error::truncated(Some(expected), received).with_source(err);
        }
    }
    let dyn_err: &(dyn StdError + 'static) = &err;
    if let Some(e) = tls(dyn_err) {
        return e.with_source(err);
    }
    let message = describe(dyn_err);
    match h2_kind(dyn_err) {
        Some(ErrorKind::Protocol) => {
            return Error::new(ErrorKind::Protocol, message).with_source(err)
        }
        // The peer reset the stream or went away before its end.
        Some(_) => return Error::truncated(expected, received).with_source(err),
        None => {}
    }
    let io_kind = find::<io::Error>(dyn_err).map(io::Error::kind);
    let broken = matches!(
        io_kind,
        Some(
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
        )
    );
    if err.is_incomplete_message()
        || (broken && chunked)
        || io_kind == Some(io::ErrorKind::UnexpectedEof)
    {
        // The connection ended inside a chunked body: the same fault as a
        // short Content-Length body, without a length to quote.
        return Error::truncated(expected, received).with_source(err);
    }
    let malformed = err.is_parse()
        || matches!(
            io_kind,
            Some(io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput)
        );
    // A malformed chunk breaks the framing itself.
    let kind = if malformed {
        ErrorKind::Protocol
    } else {
        ErrorKind::Io
    };
    Error::new(kind, message).with_source(err)
}
