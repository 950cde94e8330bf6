//! The exchange in ureq's terms: the agent's configuration, the
//! `http::Request` ureq runs, and the response head handed back.

use std::io::{self, Read};

use handle_api::http::header::{
    HeaderValue, CONTENT_LENGTH, PROXY_AUTHORIZATION, TRANSFER_ENCODING,
};
use handle_api::http::{self, Method, Uri, Version};
use handle_api::{
    BackendConfig, BodyFraming, Error, ErrorKind, HttpVersionPref, ProxyScheme, ResponseHead,
    UploadBody, WireRequest,
};
use ureq::config::{AutoHeaderValue, Config};
use ureq::{Agent, SendBody};

use crate::error::UploadError;
use crate::transport::Watch;

/// Bytes ureq reads from the socket at a time: a body that arrives faster
/// than it is taken comes in pieces up to this large, with one wake-up of
/// the application per piece (see `driver.rs`). Only the pages a read
/// touches are resident, so a pooled connection that carried small
/// responses costs far less than this.
const INPUT_BUFFER: usize = 256 * 1024;
/// The most header fields ureq-proto parses (its MAX_RESPONSE_HEADERS).
pub(crate) const MAX_FIELDS: usize = 128;
/// Idle connections kept over all hosts (ureq's default of 10 is too few for 6 per host).
const MAX_IDLE_TOTAL: usize = 256;

/// The agent configuration: ureq's own policies (redirects, automatic
/// headers, status errors, proxies from the environment) all off, because
/// handle-api owns them.
pub(crate) fn agent_config(config: &BackendConfig) -> Config {
    let per_host = config.max_connections_per_host.max(1);
    Config::builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .save_redirect_history(false)
        .user_agent(AutoHeaderValue::None)
        .accept(AutoHeaderValue::None)
        .accept_encoding(AutoHeaderValue::None)
        // ureq's default reads ALL_PROXY / HTTPS_PROXY / HTTP_PROXY from the
        // environment. The proxy is handle-api's choice, per exchange: each
        // route has its own agent and connector (see `agents.rs`), and ureq's
        // own proxy support stays off.
        .proxy(None)
        .https_only(false)
        .allow_non_standard_methods(true)
        .max_idle_connections_per_host(per_host)
        .max_idle_connections(MAX_IDLE_TOTAL.max(per_host))
        .max_idle_age(config.idle_timeout)
        // The head limits are the transport filter's, exact to the byte and
        // field; ureq's own size check sees the filtered head, never larger.
        .input_buffer_size(INPUT_BUFFER.max(2 * config.max_response_head_bytes))
        .max_response_header_size(config.max_response_head_bytes)
        .no_delay(true)
        .build()
}

/// Refuses what this backend cannot put on the wire, before any I/O.
///
/// HTTP/2: `Http2` asks for h2 *if the server and client agree on it*
/// (ALPN over TLS; HTTP/1.1 over cleartext). This client offers only
/// `http/1.1` in ALPN, so the negotiation honestly ends in HTTP/1.1, as it
/// does against any server without h2: the request goes out as HTTP/1.1 and
/// the response reports that version. `Http2PriorKnowledge` leaves nothing
/// to negotiate (it demands h2 frames from the first byte), so it is
/// refused as `unsupported`.
pub(crate) fn check(request: &WireRequest) -> Result<(), Error> {
    match request.http_version {
        HttpVersionPref::Http1 | HttpVersionPref::Http2 => {}
        HttpVersionPref::Http2PriorKnowledge => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "ureq has no HTTP/2, so it cannot speak h2 with prior knowledge",
            ));
        }
    }
    match request.url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(Error::new(
            ErrorKind::UnsupportedScheme,
            format!("the ureq backend speaks http and https, not {other}"),
        )),
    }
}

/// Everything of a request but its body, kept so that a bodyless request
/// can be sent once more after the keep-alive race.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    method: Method,
    uri: Uri,
    headers: http::HeaderMap,
    timeout: Option<std::time::Duration>,
    connect_timeout: Option<std::time::Duration>,
    read_timeout: Option<std::time::Duration>,
}

impl Outgoing {
    /// The same request with its total timeout cut to what is left.
    pub(crate) fn with_time_spent(&self, spent: std::time::Duration) -> Outgoing {
        let mut o = self.clone();
        o.timeout = o.timeout.map(|t| t.saturating_sub(spent));
        o
    }
}

/// Splits the exchange into what ureq sends: method, url, the headers
/// exactly as given plus the framing header, and the body as a stream.
///
/// The framing header is always written here rather than left to ureq, so
/// that ureq sends exactly that: with Content-Length or Transfer-Encoding
/// present it neither adds nor changes one.
pub(crate) fn split(wire: WireRequest) -> Result<(Outgoing, SendBody<'static>), Error> {
    let mut url = wire.url;
    // ureq turns userinfo into its own Authorization header; credentials are
    // handle-api's to send, so they never reach ureq.
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    let uri: Uri = url.as_str().parse().map_err(|e| {
        Error::new(
            ErrorKind::InvalidRequest,
            format!("the url cannot be sent by ureq: {e}"),
        )
        .with_source(e)
    })?;
    let mut headers = wire.headers;
    if let Some(proxy) = &wire.proxy {
        // A forwarded request (http through an HTTP proxy) carries the
        // proxy's credentials itself, preemptively; a tunnel carries them
        // in its CONNECT only, and SOCKS in its own handshake.
        if proxy.scheme() == ProxyScheme::Http && url.scheme() == "http" {
            if let Some(value) = proxy.basic_authorization() {
                headers.insert(PROXY_AUTHORIZATION, value);
            }
        }
    }
    let body = UploadReader(wire.body);
    let framing = match wire.framing {
        // ureq always frames a POST, PUT or PATCH body (chunked when no length
        // is set); an empty Content-Length is the closest to "no body".
        BodyFraming::None if needs_body(&wire.method) => BodyFraming::Length(0),
        f => f,
    };
    let send_body = match framing {
        BodyFraming::None => SendBody::none(),
        BodyFraming::Length(n) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
            SendBody::from_owned_reader(body)
        }
        BodyFraming::Chunked => {
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            SendBody::from_owned_reader(body)
        }
    };
    let out = Outgoing {
        method: wire.method,
        uri,
        headers,
        timeout: wire.timeout,
        connect_timeout: wire.connect_timeout,
        read_timeout: wire.read_timeout,
    };
    Ok((out, send_body))
}

/// The request ureq runs, with the per-request timeouts.
pub(crate) fn to_ureq<'a>(
    agent: &Agent,
    out: &Outgoing,
    body: SendBody<'a>,
) -> http::Request<SendBody<'a>> {
    let mut request = http::Request::new(body);
    *request.method_mut() = out.method.clone();
    *request.uri_mut() = out.uri.clone();
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = out.headers.clone();
    if out.timeout.is_none() && out.connect_timeout.is_none() && out.read_timeout.is_none() {
        return request;
    }
    agent
        .configure_request(request)
        // ureq's global timeout runs from the start of the call to the end of the body.
        .timeout_global(out.timeout)
        .timeout_connect(out.connect_timeout)
        // Each transport read, restarted by every byte: the idle timeout.
        .timeout_per_read(out.read_timeout)
        .build()
}

fn needs_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// The request body as ureq reads it, streamed in ureq's buffer-sized
/// pieces. Its errors are tagged so they are reported as the upload's fault
/// (`io`), not the network's.
struct UploadReader(UploadBody);

impl Read for UploadReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::other(UploadError(e)))
    }
}

/// The response head as handle-api wants it. ureq drops the reason phrase:
/// it comes from the status line the transport saw (handle-api falls back to
/// the canonical one when there is none).
pub(crate) fn head(response: &mut http::Response<ureq::Body>, watch: &Watch) -> ResponseHead {
    let mut head = ResponseHead::new(
        response.status(),
        response.version(),
        std::mem::take(response.headers_mut()),
    );
    head.reason = watch.reason(head.status.as_u16());
    head.remote_addr = watch.peer();
    head.timing = watch.timing();
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_turns_library_policies_off() {
        let c = agent_config(&BackendConfig::default());
        assert!(!c.http_status_as_error());
        assert_eq!(c.max_redirects(), 0);
        assert!(c.proxy().is_none());
        assert!(c.allow_non_standard_methods());
        assert_eq!(c.max_idle_connections_per_host(), 6);
    }
}
