//! Schemes the manager serves itself, identically whichever backend is
//! compiled: `data:` (RFC 2397, read as the Fetch standard's data: URL
//! processor does), `file:`, and application-registered handlers (Qt's and
//! WebKit's custom scheme handlers).
//!
//! A handler receives the same [`Exchange`] a backend receives and reports
//! through its sink, so the handle, events, progress and traces behave as for
//! HTTP.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::RwLock;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, StatusCode, Version};
use url::{Position, Url};

use crate::backend::Exchange;
use crate::error::{Error, ErrorKind};
use crate::exchange::{ExchangeSink, TryData};
use crate::response::ResponseHead;

/// Body bytes handed to the sink at a time.
const CHUNK: usize = 64 * 1024;

/// A handler for a url scheme (Qt's and WebKit's custom scheme handlers).
///
/// It receives the same [`Exchange`] a backend receives (method, url,
/// headers, body, sink) and must end the sink, with
/// [`finish`](crate::ExchangeSink::finish) or
/// [`fail`](crate::ExchangeSink::fail).
///
/// ```
/// use handle_api::{http, Exchange, ResponseHead, SchemeHandler};
/// struct Hello;
/// impl SchemeHandler for Hello {
///     fn start(&self, exchange: Exchange) {
///         let mut sink = exchange.sink;
///         sink.response(ResponseHead::new(
///             http::StatusCode::OK,
///             http::Version::HTTP_11,
///             http::HeaderMap::new(),
///         ));
///         // Small bodies fit the handle's buffer; large ones go on a thread
///         // of their own with `data_blocking`.
///         let _ = sink.try_data("hello".into());
///         sink.finish();
///     }
/// }
/// ```
pub trait SchemeHandler: Send + Sync + 'static {
    /// Starts one load; must not block: run long work on a thread of its own.
    fn start(&self, exchange: Exchange);
}

/// Schemes registered by applications, process-wide as in WebKit's
/// LegacySchemeRegistry: a request is validated before any manager sees it.
static REGISTERED: RwLock<BTreeSet<String>> = RwLock::new(BTreeSet::new());

/// Schemes every manager serves.
const BUILT_IN: &[&str] = &["http", "https", "data", "file"];

/// Marks `scheme` as handled so requests naming it build; called by the manager builder.
pub(crate) fn register_scheme_name(scheme: &str) {
    let name = scheme.to_ascii_lowercase();
    // A poisoned lock still holds a valid set: inserts cannot half-happen.
    let mut set = REGISTERED.write().unwrap_or_else(|p| p.into_inner());
    set.insert(name);
}

/// True for http, https, data, file and every registered name.
pub(crate) fn is_known_scheme(scheme: &str) -> bool {
    if BUILT_IN.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
        return true;
    }
    let set = REGISTERED.read().unwrap_or_else(|p| p.into_inner());
    // Url lower-cases schemes; a caller's spelling may not be.
    if set.contains(scheme) {
        return true;
    }
    set.contains(&scheme.to_ascii_lowercase())
}

/// Refuses methods other than GET and HEAD for a scheme with no notion of them.
fn check_method(sink_url: &Url, method: &Method) -> Result<(), Error> {
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Unsupported,
        format!(
            "the {}: scheme serves only GET and HEAD, not {method}",
            sink_url.scheme()
        ),
    ))
}

fn head(content_type: HeaderValue, len: u64) -> ResponseHead {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    ResponseHead::new(StatusCode::OK, Version::HTTP_11, headers)
}

/// `data:` urls (RFC 2397): base64 and percent-encoded, mime type and charset.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DataScheme;

impl SchemeHandler for DataScheme {
    fn start(&self, exchange: Exchange) {
        let Exchange { request, mut sink } = exchange;
        if let Err(e) = check_method(&request.url, &request.method) {
            sink.fail(e);
            return;
        }
        let (content_type, body) = match parse_data_url(&request.url) {
            Ok(parsed) => parsed,
            Err(e) => {
                sink.fail(e);
                return;
            }
        };
        sink.response(head(content_type, body.len() as u64));
        if request.method == Method::HEAD {
            sink.finish();
            return;
        }
        deliver_bytes(sink, Bytes::from(body), "rh-data-scheme");
    }
}

/// Hands an in-memory body (a `data:` url's, a cached one) to the sink
/// without blocking the caller: what fits the handle's buffer goes now, the
/// rest from a short-lived thread named `thread` that waits for the
/// application to make room.
pub(crate) fn deliver_bytes(mut sink: ExchangeSink, mut body: Bytes, thread: &str) {
    while !body.is_empty() {
        let chunk = body.split_to(body.len().min(CHUNK));
        match sink.try_data(chunk) {
            TryData::Queued => {}
            TryData::Cancelled => {
                sink.fail(Error::cancelled());
                return;
            }
            TryData::Full(chunk) => {
                let spawned = std::thread::Builder::new()
                    .name(thread.into())
                    .spawn(move || {
                        let mut rest = chunk;
                        loop {
                            if let Err(e) = sink.data_blocking(rest) {
                                sink.fail(e);
                                return;
                            }
                            if body.is_empty() {
                                break;
                            }
                            rest = body.split_to(body.len().min(CHUNK));
                        }
                        sink.finish();
                    });
                // Should the thread not start, the closure and the sink in it
                // are dropped, and a dropped sink fails the load: no handle
                // is left waiting.
                drop(spawned);
                return;
            }
        }
    }
    sink.finish();
}

fn invalid_data_url(what: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidRequest, what)
}

/// The Fetch standard's data: URL processor: the media type (defaulting to
/// `text/plain;charset=US-ASCII`, RFC 2397 §2) and the decoded body.
pub(crate) fn parse_data_url(url: &Url) -> Result<(HeaderValue, Vec<u8>), Error> {
    // The serialization without the fragment; the query is part of the data.
    let serialized = &url[..Position::AfterQuery];
    let input = serialized
        .get(url.scheme().len() + 1..)
        .unwrap_or_default()
        .trim_matches(is_ascii_whitespace);
    let Some((mime, encoded)) = input.split_once(',') else {
        return Err(invalid_data_url(
            "malformed data: url: no comma separates the media type from the data",
        ));
    };
    let mut mime = mime.trim_matches(is_ascii_whitespace);
    let mut body = percent_decode(encoded.as_bytes());
    if let Some(stripped) = strip_base64_marker(mime) {
        mime = stripped;
        body = forgiving_base64_decode(&body)
            .ok_or_else(|| invalid_data_url("malformed data: url: the data is not valid base64"))?;
    }
    Ok((data_media_type(mime), body))
}

fn is_ascii_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

/// `…;base64` (ASCII case-insensitive, spaces allowed before `base64`) → the
/// media type without it.
fn strip_base64_marker(mime: &str) -> Option<&str> {
    let cut = mime.len().checked_sub(6)?;
    let tail = mime.get(cut..)?;
    if !tail.eq_ignore_ascii_case("base64") {
        return None;
    }
    let before = mime[..cut].trim_end_matches(' ');
    before.strip_suffix(';')
}

/// The Content-Type for a data: url's media type part: a valid
/// `type/subtype` with its parameters as given, else RFC 2397's default; a
/// part of parameters only (`;charset=utf-8`) gets `text/plain` in front.
fn data_media_type(mime: &str) -> HeaderValue {
    const DEFAULT: &str = "text/plain;charset=US-ASCII";
    let mime = if mime.starts_with(';') {
        format!("text/plain{mime}")
    } else {
        mime.to_owned()
    };
    let mut parts = mime.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    let is_token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let valid = essence
        .split_once('/')
        .is_some_and(|(t, s)| is_token(t) && is_token(s));
    if !valid {
        return HeaderValue::from_static(DEFAULT);
    }
    let mut value = essence.to_ascii_lowercase();
    for param in parts.map(str::trim).filter(|p| !p.is_empty()) {
        value.push(';');
        value.push_str(param);
    }
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(DEFAULT))
}

/// `%XX` → the byte; a `%` not followed by two hex digits stays as it is (URL
/// standard). Also decodes the userinfo of urls (auth) and of proxy urls.
pub(crate) fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// The Infra standard's forgiving-base64 decode: ASCII whitespace ignored,
/// padding optional, anything else outside the alphabet a failure.
fn forgiving_base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut data: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' '))
        .collect();
    if data.len().is_multiple_of(4) {
        if data.ends_with(b"==") {
            data.truncate(data.len() - 2);
        } else if data.ends_with(b"=") {
            data.truncate(data.len() - 1);
        }
    }
    if data.len() % 4 == 1 {
        return None;
    }
    let value = |b: u8| -> Option<u32> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 2);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in &data {
        buffer = buffer << 6 | value(b)?;
        bits += 6;
        if bits == 24 {
            out.extend_from_slice(&buffer.to_be_bytes()[1..]);
            buffer = 0;
            bits = 0;
        }
    }
    // 12 or 18 bits left: the low 4 or 2 are padding.
    match bits {
        12 => out.push((buffer >> 4) as u8),
        18 => out.extend_from_slice(&((buffer >> 2) as u16).to_be_bytes()),
        _ => {}
    }
    Some(out)
}

/// `file:` urls: streamed from disk on a thread, mime type from the
/// extension, errors clear.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FileScheme;

impl SchemeHandler for FileScheme {
    fn start(&self, exchange: Exchange) {
        let Exchange { request, sink } = exchange;
        if let Err(e) = check_method(&request.url, &request.method) {
            sink.fail(e);
            return;
        }
        let path = match file_path(&request.url) {
            Ok(p) => p,
            Err(e) => {
                sink.fail(e);
                return;
            }
        };
        let head_only = request.method == Method::HEAD;
        // Opening can block too (network file systems), so all of it runs on
        // the thread. Should the thread not start, the dropped sink fails the
        // load.
        let spawned = std::thread::Builder::new()
            .name("rh-file-scheme".into())
            .spawn(move || serve_file(sink, &path, head_only));
        drop(spawned);
    }
}

/// The local path a file: url names; a remote host is refused rather than
/// silently read from this machine.
fn file_path(url: &Url) -> Result<std::path::PathBuf, Error> {
    if let Some(host) = url.host_str() {
        if !host.is_empty() && !host.eq_ignore_ascii_case("localhost") {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                format!("file: url names the host {host:?}; only local files are served"),
            ));
        }
    }
    url.to_file_path()
        .map_err(|()| Error::new(ErrorKind::InvalidRequest, "file: url names no local path"))
}

fn open_error(path: &Path, e: io::Error) -> Error {
    let message = match e.kind() {
        io::ErrorKind::NotFound => format!("no such file: {}", path.display()),
        io::ErrorKind::PermissionDenied => format!("permission denied: {}", path.display()),
        _ => format!("cannot open {}: {e}", path.display()),
    };
    Error::new(ErrorKind::Io, message).with_source(e)
}

fn serve_file(mut sink: ExchangeSink, path: &Path, head_only: bool) {
    let file = File::open(path).and_then(|f| f.metadata().map(|m| (f, m)));
    let (file, meta) = match file {
        Ok(fm) => fm,
        Err(e) => {
            sink.fail(open_error(path, e));
            return;
        }
    };
    if meta.is_dir() {
        let message = format!("is a directory: {}", path.display());
        sink.fail(Error::new(ErrorKind::Io, message));
        return;
    }
    let len = meta.len();
    sink.response(head(mime_for_path(path), len));
    if head_only {
        sink.finish();
        return;
    }
    // Exactly the length announced: a file that grows meanwhile is cut at
    // Content-Length, one that shrinks is a truncated body, never a short
    // success.
    let what = format!("read error on {}", path.display());
    stream_body(sink, file, len, &what);
}

/// Streams exactly `len` bytes of `reader` (a file, a cached body) to the
/// sink as the application takes them, blocking this thread while it does
/// not: a read error is `io` (`what: error`), and fewer bytes than `len` is
/// a truncated body, never a short success.
pub(crate) fn stream_body(mut sink: ExchangeSink, reader: impl Read, len: u64, what: &str) {
    let mut reader = reader.take(len);
    let mut sent = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let message = format!("{what}: {e}");
                sink.fail(Error::new(ErrorKind::Io, message).with_source(e));
                return;
            }
        };
        sent += n as u64;
        if let Err(e) = sink.data_blocking(Bytes::copy_from_slice(&buf[..n])) {
            // Cancelled: the application no longer wants the bytes.
            sink.fail(e);
            return;
        }
    }
    if sent < len {
        sink.fail(Error::truncated(Some(len), sent));
        return;
    }
    sink.finish();
}

/// The media type for a file's extension; `application/octet-stream` when unknown.
pub(crate) fn mime_for_path(path: &Path) -> HeaderValue {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let mime = match ext.as_str() {
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "txt" | "text" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "xml" => "application/xml",
        "xhtml" => "application/xhtml+xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/vnd.microsoft.icon",
        "bmp" => "image/bmp",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "zst" => "application/zstd",
        "tar" => "application/x-tar",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        _ => "application/octet-stream",
    };
    HeaderValue::from_static(mime)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::backend::{BodyFraming, WireRequest};
    use crate::body::{RequestBody, UploadBody};
    use crate::events::Event;
    use crate::exchange::Shared;
    use crate::request::HttpVersionPref;
    use crate::response::ResourceResponse;

    /// Reads a load's events straight from the queue its sink fills, as the
    /// handle does, so these tests need nothing of the handle's pipeline.
    struct Reader {
        shared: Arc<Shared>,
    }

    impl Reader {
        fn event(&self) -> Option<Event> {
            crate::block_on::block_on(std::future::poll_fn(|cx| self.shared.poll_event(cx)))
        }

        fn response(&self) -> Result<ResourceResponse, Error> {
            loop {
                match self.event() {
                    Some(Event::Response(r)) => return Ok(r),
                    Some(Event::Failed(e)) => return Err(e),
                    Some(_) => {}
                    None => return Err(Error::cancelled()),
                }
            }
        }

        fn chunk(&self) -> Result<Option<Bytes>, Error> {
            loop {
                match self.event() {
                    Some(Event::Data(d)) => return Ok(Some(d)),
                    Some(Event::Finished) => return Ok(None),
                    Some(Event::Failed(e)) => return Err(e),
                    Some(_) => {}
                    // The queue ends this way once the load is cancelled.
                    None => return Err(Error::cancelled()),
                }
            }
        }

        fn body(&self) -> Vec<u8> {
            let mut body = Vec::new();
            while let Some(chunk) = self.chunk().unwrap() {
                assert!(chunk.len() <= CHUNK);
                body.extend_from_slice(&chunk);
            }
            body
        }
    }

    /// An exchange as the manager would hand it to a handler, and the reader
    /// of its outcome.
    fn exchange(method: &str, url: &str) -> (Exchange, Reader) {
        let url = Url::parse(url).unwrap();
        let (sink, shared) = ExchangeSink::new(url.clone());
        let request = WireRequest {
            method: Method::from_bytes(method.as_bytes()).unwrap(),
            url,
            headers: HeaderMap::new(),
            body: UploadBody::open(RequestBody::Empty).unwrap(),
            framing: BodyFraming::None,
            timeout: None,
            connect_timeout: None,
            read_timeout: None,
            http_version: HttpVersionPref::default(),
            proxy: None,
        };
        (Exchange { request, sink }, Reader { shared })
    }

    fn load(handler: &dyn SchemeHandler, method: &str, url: &str) -> Reader {
        let (exchange, reader) = exchange(method, url);
        handler.start(exchange);
        reader
    }

    /// (content-type, content-length, body) of a successful load.
    fn fetch(handler: &dyn SchemeHandler, method: &str, url: &str) -> (String, u64, Vec<u8>) {
        let reader = load(handler, method, url);
        let response = reader.response().unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let len = response.expected_content_length().unwrap();
        (content_type, len, reader.body())
    }

    fn failure(handler: &dyn SchemeHandler, method: &str, url: &str) -> Error {
        load(handler, method, url).response().unwrap_err()
    }

    #[test]
    fn data_urls_decode_like_browsers() {
        let cases: &[(&str, &str, &[u8])] = &[
            (
                "data:,Hello%2C%20World%21",
                "text/plain;charset=US-ASCII",
                b"Hello, World!",
            ),
            (
                "data:text/plain;base64,SGVsbG8sIFdvcmxkIQ==",
                "text/plain",
                b"Hello, World!",
            ),
            (
                "data:text/html;charset=utf-8,%3Ch1%3E%E2%82%AC%3C%2Fh1%3E",
                "text/html;charset=utf-8",
                "<h1>€</h1>".as_bytes(),
            ),
            ("data:;charset=utf-8,x", "text/plain;charset=utf-8", b"x"),
            (
                "data:;base64,AAEC",
                "text/plain;charset=US-ASCII",
                &[0, 1, 2],
            ),
            (
                "data:Image/PNG;BASE64,iVBORw==",
                "image/png",
                &[0x89, b'P', b'N', b'G'],
            ),
            // Padding optional, whitespace ignored, as forgiving-base64 says.
            (
                "data:application/octet-stream;base64,SGVs%20bG8",
                "application/octet-stream",
                b"Hello",
            ),
            (
                "data:text/plain ; charset=UTF-8 ; base64,aGk=",
                "text/plain;charset=UTF-8",
                b"hi",
            ),
            // The fragment is not data; the query is.
            ("data:text/plain,a?b=c#frag", "text/plain", b"a?b=c"),
            ("data:not-a-type,hi", "text/plain;charset=US-ASCII", b"hi"),
            ("data:text/plain,50%25%zz", "text/plain", b"50%%zz"),
            ("data:text/plain,", "text/plain", b""),
        ];
        for (url, content_type, body) in cases {
            let (ct, len, got) = fetch(&DataScheme, "GET", url);
            assert_eq!(ct, *content_type, "{url}");
            assert_eq!(got, *body, "{url}");
            assert_eq!(len, body.len() as u64, "{url}");
        }
    }

    #[test]
    fn malformed_data_urls_are_invalid_requests() {
        for url in [
            "data:text/plain;base64",
            "data:;base64,A",
            "data:;base64,SGV$",
            "data:;base64,SGVsbG8=x",
            "data:;base64,SGVsbG8===",
        ] {
            let e = failure(&DataScheme, "GET", url);
            assert_eq!(e.kind(), ErrorKind::InvalidRequest, "{url}: {e}");
            assert!(e.message().starts_with("malformed data: url"), "{url}: {e}");
            assert_eq!(
                e.url().map(Url::as_str),
                Some(url),
                "the sink names the url"
            );
        }
    }

    #[test]
    fn data_urls_answer_head_and_refuse_other_methods() {
        let (ct, len, body) = fetch(&DataScheme, "HEAD", "data:text/plain,abc");
        assert_eq!((ct.as_str(), len, body.len()), ("text/plain", 3, 0));
        for method in ["POST", "PUT", "DELETE"] {
            let e = failure(&DataScheme, method, "data:,x");
            assert_eq!(e.kind(), ErrorKind::Unsupported);
            assert!(e.message().contains(method), "{e}");
        }
    }

    /// Bodies past the handle's 1 MiB buffer go through the helper thread.
    #[test]
    fn large_data_urls_stream_past_the_buffer() {
        let data: Vec<u8> = (0..3 * (1 << 20) + 17)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut encoded = String::new();
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for chunk in data.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |a, &b| a << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
            for k in 0..=chunk.len() {
                encoded.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
            }
        }
        let url = format!("data:application/octet-stream;base64,{encoded}");
        let got = load(&DataScheme, "GET", &url).body();
        assert!(got == data, "{} of {} bytes", got.len(), data.len());
    }

    /// A temporary directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let name = format!(
                "rh-schemes-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let dir = std::env::temp_dir().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn url(&self, name: &str) -> String {
            Url::from_file_path(self.0.join(name)).unwrap().to_string()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn files_stream_in_pieces_with_type_and_length() {
        let dir = TempDir::new();
        let data: Vec<u8> = (0..5 << 20)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(dir.0.join("big.bin"), &data).unwrap();
        let reader = load(&FileScheme, "GET", &dir.url("big.bin"));
        let response = reader.response().unwrap();
        assert_eq!(response.headers()[CONTENT_TYPE], "application/octet-stream");
        assert_eq!(response.expected_content_length(), Some(5 << 20));
        let (mut got, mut pieces) = (Vec::new(), 0);
        while let Some(chunk) = reader.chunk().unwrap() {
            assert!(chunk.len() <= CHUNK);
            pieces += 1;
            got.extend_from_slice(&chunk);
        }
        assert!(got == data);
        assert!(pieces >= 80, "{pieces} pieces");

        std::fs::write(dir.0.join("a page.HTML"), "<p>hi</p>").unwrap();
        let url = dir.url("a page.HTML");
        assert!(url.contains("a%20page"), "{url}");
        let (ct, len, body) = fetch(&FileScheme, "GET", &url);
        assert_eq!(
            (ct.as_str(), len, &body[..]),
            ("text/html", 9, &b"<p>hi</p>"[..])
        );
        let (_, len, body) = fetch(&FileScheme, "HEAD", &url);
        assert_eq!((len, body.len()), (9, 0));
        let localhost = url.replacen("file://", "file://localhost", 1);
        assert_eq!(fetch(&FileScheme, "GET", &localhost).2, b"<p>hi</p>");
    }

    #[test]
    fn file_errors_are_clear() {
        let dir = TempDir::new();
        let missing = dir.0.join("missing.txt");
        let e = failure(&FileScheme, "GET", &dir.url("missing.txt"));
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(e.message(), format!("no such file: {}", missing.display()));
        let source = std::error::Error::source(&e).expect("the io::Error");
        assert!(source.downcast_ref::<io::Error>().is_some());

        let dir_url = Url::from_directory_path(&dir.0).unwrap();
        let e = failure(&FileScheme, "GET", dir_url.as_str());
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.message().starts_with("is a directory: "), "{e}");

        let e = failure(&FileScheme, "GET", "file://files.example/etc/hosts");
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
        assert!(e.message().contains("files.example"), "{e}");

        std::fs::write(dir.0.join("x.txt"), "x").unwrap();
        let e = failure(&FileScheme, "PUT", &dir.url("x.txt"));
        assert_eq!(e.kind(), ErrorKind::Unsupported);
    }

    /// Waits until the reader is the last owner of the load's shared state,
    /// i.e. the handler's thread has dropped its sink.
    fn wait_for_handler_to_let_go(reader: &Reader) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&reader.shared) > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the handler thread did not end"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn cancelling_ends_the_handler_threads() {
        let dir = TempDir::new();
        std::fs::write(dir.0.join("big"), vec![7u8; 4 << 20]).unwrap();
        let big_data = format!("data:,{}", "x".repeat(3 << 20));
        for (handler, url) in [
            (&FileScheme as &dyn SchemeHandler, dir.url("big")),
            (&DataScheme, big_data),
        ] {
            let reader = load(handler, "GET", &url);
            reader.response().unwrap();
            assert!(reader.chunk().unwrap().is_some());
            // The handler is now waiting for room in the full buffer.
            reader.shared.cancel();
            let e = reader.chunk().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Cancelled);
            wait_for_handler_to_let_go(&reader);
        }
    }

    #[test]
    fn mime_types_come_from_the_extension() {
        for (name, mime) in [
            ("a.css", "text/css"),
            ("A.JPG", "image/jpeg"),
            ("x.tar.gz", "application/gzip"),
            ("noext", "application/octet-stream"),
            ("weird.xyz", "application/octet-stream"),
            ("m.woff2", "font/woff2"),
        ] {
            assert_eq!(mime_for_path(Path::new(name)), mime, "{name}");
        }
    }

    #[test]
    fn registered_schemes_become_known() {
        for s in ["http", "https", "data", "file", "HTTP"] {
            assert!(is_known_scheme(s), "{s}");
        }
        assert!(!is_known_scheme("rh-test-unregistered"));
        assert!(!is_known_scheme("rh-test-app"));
        register_scheme_name("RH-Test-App");
        assert!(is_known_scheme("rh-test-app"));
        assert!(is_known_scheme("Rh-Test-App"));
    }
}
