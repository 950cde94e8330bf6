//! libcurl's `CURLcode`s mapped onto the one [`ErrorKind`] set.
//!
//! curl reports a transfer's failure as a bare code plus a message; some
//! faults need what the driver knows besides the code (whether the connection
//! was up when a timeout fired, how many body bytes arrived, the upload
//! reader's own error), so [`map`] takes that context too.

use std::io;
use std::time::Duration;

use handle_api::{Error, ErrorKind, TimeoutPhase};

use crate::tls;

// CURLcodes that curl-rust has no `is_*` helper for (values from curl.h).
const CURLE_NOT_BUILT_IN: i64 = 4;
const CURLE_WEIRD_SERVER_REPLY: i64 = 8;
const CURLE_HTTP2: i64 = 16;
const CURLE_HTTP2_STREAM: i64 = 92;
const CURLE_SSL_PINNEDPUBKEYNOTMATCH: i64 = 90;
const CURLE_SSL_INVALIDCERTSTATUS: i64 = 91;
const CURLE_PROXY: i64 = 97;
const CURLE_SSL_CLIENTCERT: i64 = 98;
const CURLE_TOO_LARGE: i64 = 100;
const CURLE_ECH_REQUIRED: i64 = 101;

/// curl's connect timeout when CURLOPT_CONNECTTIMEOUT is not set.
pub(crate) const CURL_DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

/// What the driver knows about a transfer when curl reports its failure.
#[derive(Debug, Default)]
pub(crate) struct FailureContext {
    /// The connection was established (or reused) before the failure.
    pub connected: bool,
    /// The request's connect timeout, if set.
    pub connect_timeout: Option<Duration>,
    /// The request's total timeout, if set.
    pub timeout: Option<Duration>,
    /// Content-Length of the reported response.
    pub expected: Option<u64>,
    /// Body bytes handed to the sink.
    pub received: u64,
    /// The error the request body's reader returned, which made the read
    /// callback abort.
    pub upload_error: Option<io::Error>,
    /// An error the callbacks decided on themselves (a malformed header line).
    pub local_error: Option<Error>,
    /// The final response head was reported.
    pub head_reported: bool,
    /// The reported response's body is chunked.
    pub chunked: bool,
    /// libcurl wanted to send the request again after its reused connection
    /// died before any response byte, and was not allowed to.
    pub resend_refused: bool,
    /// The proxy the exchange went through, for messages.
    pub proxy: Option<String>,
    /// The connection was ready for the request (tunnel and TLS included):
    /// libcurl called the prereq callback.
    pub request_started: bool,
    /// The proxy's answer to the CONNECT (CURLINFO_HTTP_CONNECTCODE), if any.
    pub connect_code: Option<u32>,
    /// OpenSSL's verify result of the server's chain (CURLINFO_SSL_VERIFYRESULT).
    pub verify_result: Option<i64>,
}

/// Maps a failed transfer's curl error onto a handle-api error, keeping
/// curl's error as the source.
pub(crate) fn map(e: curl::Error, cx: FailureContext) -> Error {
    // Errors our own callbacks raised win: curl only saw "the callback said stop".
    if let Some(local) = cx.local_error {
        return local.with_source(e);
    }
    if cx.resend_refused {
        // Whatever libcurl said after being stopped, the fault is the
        // server's: it closed the connection without answering.
        return Error::stale_connection().with_source(e);
    }
    if let Some(io) = cx.upload_error {
        return Error::new(
            ErrorKind::Io,
            format!("reading the request body failed: {io}"),
        )
        .with_source(io);
    }
    let msg = message(&e);
    if tls::is_late_certificate_alert(code(&e), &msg)
        || tls::is_client_identity_refused(code(&e), &msg)
        || is_tls_code(&e)
    {
        let problem = tls::problem(code(&e), cx.verify_result, &msg);
        return Error::tls(problem, msg).with_source(e);
    }
    if let Some(proxy) = &cx.proxy {
        if let Some(kind) = proxy_failure(&e, &cx) {
            let msg = match cx.connect_code {
                Some(status) if !(200..300).contains(&status) => {
                    format!("the proxy {proxy} refused the tunnel with status {status}")
                }
                _ => format!("the proxy {proxy} failed: {msg}"),
            };
            return Error::new(kind, msg).with_source(e);
        }
    }
    let kind = if e.is_couldnt_resolve_host() {
        ErrorKind::Dns
    } else if e.is_couldnt_connect() {
        ErrorKind::Connect
    } else if e.is_operation_timedout() {
        return Error::timeout(timeout_phase(&e, &cx)).with_source(e);
    } else if e.is_partial_file() && !cx.head_reported {
        // libcurl says PARTIAL_FILE when the connection closes inside the
        // head too: with no head, there was no body to be short of.
        ErrorKind::Protocol
    } else if e.is_partial_file() {
        return Error::truncated(cx.expected, cx.received).with_source(e);
    } else if e.is_recv_error()
        && cx.head_reported
        && (cx.expected.is_some() || cx.chunked)
        && !is_chunk_framing(&e)
    {
        // The connection broke (a reset) inside a body whose framing says
        // there was more: the body is short, as with a clean close.
        return Error::truncated(cx.expected, cx.received).with_source(e);
    } else if code(&e) == CURLE_WEIRD_SERVER_REPLY
        || e.is_got_nothing()
        // The url's scheme is always http or https here, so "unsupported
        // protocol" is curl refusing an HTTP/0.9 (status-line-less) reply.
        || e.is_unsupported_protocol()
        || e.is_bad_content_encoding()
        || code(&e) == CURLE_HTTP2
        || code(&e) == CURLE_HTTP2_STREAM
        || is_chunk_framing(&e)
        || is_h2_preface_refused(&e)
    {
        ErrorKind::Protocol
    } else if e.is_couldnt_resolve_proxy() || code(&e) == CURLE_PROXY {
        ErrorKind::Proxy
    } else if e.is_filesize_exceeded() || code(&e) == CURLE_TOO_LARGE {
        ErrorKind::LimitExceeded
    } else if e.is_url_malformed() {
        ErrorKind::InvalidRequest
    } else {
        // RECV_ERROR, SEND_ERROR, READ_ERROR, WRITE_ERROR, ABORTED_BY_CALLBACK,
        // OUT_OF_MEMORY and the rest are local or socket-level I/O failures.
        ErrorKind::Io
    };
    Error::new(kind, msg).with_source(e)
}

/// The CURLcodes that are TLS failures whatever their message.
fn is_tls_code(e: &curl::Error) -> bool {
    e.is_ssl_connect_error()
        || e.is_peer_failed_verification()
        || e.is_ssl_certproblem()
        || e.is_ssl_cipher()
        || e.is_ssl_cacert_badfile()
        || e.is_ssl_crl_badfile()
        || e.is_ssl_issuer_error()
        || e.is_ssl_shutdown_failed()
        || e.is_ssl_engine_notfound()
        || e.is_ssl_engine_setfailed()
        || e.is_ssl_engine_initfailed()
        || e.is_use_ssl_failed()
        || matches!(
            code(e),
            CURLE_SSL_PINNEDPUBKEYNOTMATCH
                | CURLE_SSL_INVALIDCERTSTATUS
                | CURLE_SSL_CLIENTCERT
                | CURLE_ECH_REQUIRED
        )
}

/// `Some(Proxy)` when a failure of an exchange through a proxy is the
/// proxy's: it could not be reached or resolved, refused the CONNECT
/// (libcurl says COULDNT_CONNECT and records the status as the connect
/// code), failed the SOCKS handshake (CURLE_PROXY), or broke the connection
/// before the tunnel was up. libcurl only ever connects to the proxy, so
/// any connect failure is one. Timeouts keep their own kind.
fn proxy_failure(e: &curl::Error, cx: &FailureContext) -> Option<ErrorKind> {
    let refused = cx.connect_code.is_some_and(|c| !(200..300).contains(&c));
    let before_request =
        !cx.request_started && (e.is_recv_error() || e.is_send_error() || e.is_got_nothing());
    let proxy_fault = refused
        || e.is_couldnt_connect()
        || e.is_couldnt_resolve_proxy()
        || code(e) == CURLE_PROXY
        || before_request;
    (proxy_fault && !e.is_operation_timedout()).then_some(ErrorKind::Proxy)
}

/// Maps an error curl returned while the transfer was being configured.
pub(crate) fn setup(what: &str, e: curl::Error) -> Error {
    let kind = if e.is_unknown_option() || code(&e) == CURLE_NOT_BUILT_IN {
        ErrorKind::Unsupported
    } else if e.is_url_malformed() {
        ErrorKind::InvalidRequest
    } else {
        ErrorKind::Io
    };
    Error::new(kind, format!("curl refused {what}: {}", message(&e))).with_source(e)
}

/// Maps an error of the multi handle (adding, removing, unpausing transfers).
pub(crate) fn multi(what: &str, e: curl::MultiError) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("curl multi handle failed to {what}: {}", e.description()),
    )
    .with_source(e)
}

/// A CURLE_OPERATION_TIMEDOUT is a connect timeout when the connection was
/// not up yet and the connect timeout, not the total one, was the shorter
/// deadline; otherwise the total timeout fired.
fn timeout_phase(e: &curl::Error, cx: &FailureContext) -> TimeoutPhase {
    // curl words the message after its own state: "Resolving timed out" and
    // "Connection timed out" while connecting (TCP and TLS), "Operation timed
    // out" once connected. The timing-based guess is for a missing message.
    let connecting = match e.extra_description() {
        Some(m) => m.starts_with("Connection timed out") || m.starts_with("Resolving timed out"),
        None => !cx.connected,
    };
    let connect = cx.connect_timeout.unwrap_or(CURL_DEFAULT_CONNECT_TIMEOUT);
    match cx.timeout {
        _ if !connecting => TimeoutPhase::Total,
        Some(total) if total < connect => TimeoutPhase::Total,
        _ => TimeoutPhase::Connect,
    }
}

/// curl reports bad chunked framing as a receive error; only its message
/// tells it apart from a socket failure.
fn is_chunk_framing(e: &curl::Error) -> bool {
    e.is_recv_error()
        && e.extra_description()
            .is_some_and(|m| m.contains("chunk") || m.contains("Chunk"))
}

/// nghttp2 found something other than the server's SETTINGS where the
/// HTTP/2 connection preface belongs (an HTTP/1 server answering prior
/// knowledge). libcurl reports it as a send or a receive error, depending on
/// which of the two was running when the answer was read; either way the
/// server spoke the wrong protocol.
fn is_h2_preface_refused(e: &curl::Error) -> bool {
    (e.is_send_error() || e.is_recv_error())
        && e.extra_description()
            .is_some_and(|m| m.contains("expected SETTINGS frame"))
}

/// The CURLcode, whose C type differs between platforms.
fn code(e: &curl::Error) -> i64 {
    i64::from(e.code())
}

fn message(e: &curl::Error) -> String {
    match e.extra_description() {
        Some(extra) if !extra.is_empty() => extra.to_owned(),
        _ => e.description().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curl_err(code: u8) -> curl::Error {
        curl::Error::new(code.into())
    }

    #[test]
    fn codes_map_to_kinds() {
        let cases = [
            (6, ErrorKind::Dns),
            (7, ErrorKind::Connect),
            (8, ErrorKind::Protocol),
            (52, ErrorKind::Protocol),
            (1, ErrorKind::Protocol),
            (56, ErrorKind::Io),
            (35, ErrorKind::Tls),
            (60, ErrorKind::Tls),
            (18, ErrorKind::BodyTruncated),
            (100, ErrorKind::LimitExceeded),
            (42, ErrorKind::Io),
        ];
        for (code, kind) in cases {
            let cx = FailureContext {
                head_reported: true,
                ..Default::default()
            };
            assert_eq!(map(curl_err(code), cx).kind(), kind, "code {code}");
        }
    }

    #[test]
    fn where_the_connection_broke_decides_the_kind() {
        // PARTIAL_FILE with no head: the head was cut, not the body.
        assert_eq!(
            map(curl_err(18), FailureContext::default()).kind(),
            ErrorKind::Protocol
        );
        // A reset inside a framed body: the body is short.
        let mut e = curl_err(56);
        e.set_extra("Recv failure: Connection reset by peer".into());
        let cx = FailureContext {
            head_reported: true,
            chunked: true,
            received: 7,
            ..Default::default()
        };
        let t = map(e, cx);
        assert_eq!(t.kind(), ErrorKind::BodyTruncated);
        assert_eq!(t.truncation().map(|t| t.received), Some(7));
        // A re-send that was refused is the server's fault, whatever curl said.
        let cx = FailureContext {
            resend_refused: true,
            ..Default::default()
        };
        assert_eq!(map(curl_err(42), cx).kind(), ErrorKind::Protocol);
    }

    #[test]
    fn truncation_quotes_counts() {
        let e = map(
            curl_err(18),
            FailureContext {
                expected: Some(10),
                received: 4,
                head_reported: true,
                ..Default::default()
            },
        );
        let t = e.truncation().expect("counts");
        assert_eq!((t.expected, t.received), (Some(10), 4));
    }

    #[test]
    fn chunk_framing_is_protocol() {
        let mut e = curl_err(56);
        e.set_extra("chunk hex-length char not a hex digit: 0x7a".into());
        assert_eq!(
            map(e, FailureContext::default()).kind(),
            ErrorKind::Protocol
        );
    }

    #[test]
    fn timeout_phase_follows_the_deadline_that_fired() {
        let ms = Duration::from_millis;
        let phase = |connected, connect_timeout, timeout| {
            map(
                curl_err(28),
                FailureContext {
                    connected,
                    connect_timeout,
                    timeout,
                    ..Default::default()
                },
            )
            .timeout_phase()
        };
        assert_eq!(
            phase(false, Some(ms(100)), None),
            Some(TimeoutPhase::Connect)
        );
        assert_eq!(
            phase(false, Some(ms(100)), Some(ms(50))),
            Some(TimeoutPhase::Total)
        );
        assert_eq!(phase(false, None, Some(ms(50))), Some(TimeoutPhase::Total));
        assert_eq!(phase(true, Some(ms(100)), None), Some(TimeoutPhase::Total));

        let worded = |msg: &str| {
            let mut e = curl_err(28);
            e.set_extra(msg.into());
            map(
                e,
                FailureContext {
                    connected: true,
                    connect_timeout: Some(ms(100)),
                    ..Default::default()
                },
            )
            .timeout_phase()
        };
        assert_eq!(
            worded("Connection timed out after 100 milliseconds"),
            Some(TimeoutPhase::Connect)
        );
        assert_eq!(
            worded("Operation timed out after 100 milliseconds with 0 bytes received"),
            Some(TimeoutPhase::Total)
        );
    }

    #[test]
    fn upload_error_wins_over_the_abort_code() {
        let e = map(
            curl_err(42),
            FailureContext {
                upload_error: Some(io::Error::new(io::ErrorKind::UnexpectedEof, "short")),
                ..Default::default()
            },
        );
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(std::error::Error::source(&e).is_some());
    }
}
