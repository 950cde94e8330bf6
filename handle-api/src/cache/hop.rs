//! The cache's part in one hop of a load, written once for every cache and
//! every backend: RFC 9111 through `http-cache-semantics`, and WebCore's
//! four cache policies.
//!
//! At the start of a hop, [`CacheHop::start`] answers from the cache, adds
//! validators to the exchange, or lets it go as it is. Then the hop sees
//! every event of its exchange ([`CacheHop::observe`]): a 304 that confirms
//! the stored response is swallowed and the stored body is served instead,
//! a success to an unsafe method invalidates the url, and a body being
//! stored is written as it streams and committed only when it completed.
//! [`CacheHop::on_deliver`] marks where a delivered response came from and
//! decides whether a network response is stored.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_LOCATION, COOKIE,
    ETAG, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED,
    LOCATION, PROXY_AUTHORIZATION, RANGE, SET_COOKIE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
    VARY,
};
use http::{HeaderMap, Method, StatusCode};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy as Rules};
use sha2::{Digest, Sha256};
use url::Url;

use super::{BodySource, CacheEntry, CacheMetadata, CacheWriter, NetworkCache};
use crate::backend::WireRequest;
use crate::error::{Error, ErrorKind};
use crate::events::Event;
use crate::exchange::{ExchangeSink, Shared};
use crate::manager::schemes::{deliver_bytes, stream_body};
use crate::request::CachePolicy;
use crate::response::{ResourceResponse, ResponseHead, ResponseSource};

/// The manager's cache and how it counts itself.
#[derive(Clone)]
pub(crate) struct CacheSettings {
    pub(crate) cache: Arc<dyn NetworkCache>,
    /// A shared cache (a proxy's) stores no `private` response and honours
    /// `s-maxage`; the manager's cache is private unless told otherwise.
    pub(crate) shared: bool,
}

impl CacheSettings {
    fn options(&self) -> CacheOptions {
        CacheOptions {
            shared: self.shared,
            ..CacheOptions::default()
        }
    }
}

/// How a hop is answered without the network.
pub(crate) enum Answer {
    /// From this stored response.
    Entry(Box<CacheEntry>),
    /// Not at all: the policy forbids loading and nothing usable is cached.
    Refuse(Error),
}

impl Answer {
    /// Answers the hop's exchange.
    pub(crate) fn deliver(self, sink: ExchangeSink) {
        match self {
            Answer::Refuse(e) => sink.fail(e),
            Answer::Entry(entry) => serve(sink, *entry),
        }
    }
}

/// What the load does with an event of its exchange after the cache saw it.
pub(crate) enum Flow {
    /// Handle it as usual.
    Pass,
    /// Drop it: it belongs to a 304 the cache answers for.
    Drop,
    /// The exchange ended: take the load's events from this queue now.
    Switch(Arc<Shared>),
}

/// The cache's state for the current hop of a load.
#[derive(Default)]
pub(crate) struct CacheHop {
    state: State,
}

#[derive(Default)]
enum State {
    /// The cache has nothing to do with this hop.
    #[default]
    Off,
    /// An unsafe method: a success invalidates what is stored for the url.
    Invalidate {
        cache: Arc<dyn NetworkCache>,
        url: Url,
    },
    /// Sent to the network; the response may be stored.
    Network(Box<Pending>),
    /// The delivered response is being stored as its body streams.
    Writing {
        cache: Arc<dyn NetworkCache>,
        url: Url,
        writer: Box<dyn CacheWriter>,
    },
    /// A 304 confirmed this entry; it is served once the 304's exchange ends.
    Confirmed { url: Url, entry: Box<CacheEntry> },
    /// The hop's events come from the cache.
    Serving(ResponseSource),
}

/// A hop sent to the network whose response the cache may store.
struct Pending {
    settings: CacheSettings,
    /// The request as the rules see it.
    request: http::request::Parts,
    url: Url,
    /// The stale entry whose validators were sent, which a 304 confirms.
    stale: Option<CacheEntry>,
}

fn not_cached(url: &Url, why: &str) -> Option<Answer> {
    Some(Answer::Refuse(
        Error::new(
            ErrorKind::NotCached,
            format!("{why}, and the cache policy forbids loading it"),
        )
        .with_url(url),
    ))
}

/// Methods that never change the resource (RFC 9110 §9.2.1).
fn is_safe(method: &Method) -> bool {
    matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS" | "TRACE")
}

/// Range requests and the application's own conditional requests go to the
/// network untouched: a stored full response answers neither.
fn bypasses(headers: &HeaderMap) -> bool {
    [
        RANGE,
        IF_MATCH,
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
    ]
    .iter()
    .any(|h| headers.contains_key(h))
}

fn is_credential(name: &HeaderName) -> bool {
    *name == AUTHORIZATION || *name == COOKIE || *name == PROXY_AUTHORIZATION
}

/// The request headers as the rules see them: credentials replaced by a
/// digest, so they can be compared (Vary: Cookie) without being stored.
fn guarded(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let value = if is_credential(name) {
            let hex: String = Sha256::digest(value.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            HeaderValue::from_str(&format!("sha256:{hex}")).unwrap_or_else(|_| value.clone())
        } else {
            value.clone()
        };
        out.append(name.clone(), value);
    }
    out
}

/// True when a stored entry's request carried the same Authorization as
/// `request` (both as digests, see [`guarded`]), or both carried none.
fn same_credentials(stored: &HeaderMap, request: &HeaderMap) -> bool {
    stored
        .get_all(AUTHORIZATION)
        .iter()
        .eq(request.get_all(AUTHORIZATION).iter())
}

/// The request headers an entry keeps: those its response varies on, and
/// those the rules read back (Cache-Control, whether it was authorized).
fn kept_request_headers(request: &HeaderMap, response: &HeaderMap) -> HeaderMap {
    let mut names: Vec<HeaderName> = vec![CACHE_CONTROL, AUTHORIZATION];
    for v in response.get_all(VARY) {
        let Ok(v) = v.to_str() else { continue };
        names.extend(
            v.split(',')
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
        );
    }
    let mut out = HeaderMap::new();
    for name in names {
        if out.contains_key(&name) {
            continue;
        }
        for v in request.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

/// Headers that describe one connection, not the response (RFC 9110
/// §7.6.1), and Set-Cookie, which is for the load that received it only.
fn is_stored(name: &HeaderName, listed: &[String]) -> bool {
    !([
        CONNECTION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
        SET_COOKIE,
    ]
    .contains(name)
        || matches!(
            name.as_str(),
            "keep-alive" | "proxy-connection" | "set-cookie2"
        )
        || listed.iter().any(|l| l == name.as_str()))
}

fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The response headers an entry stores.
fn stored_headers(headers: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if is_stored(name, &listed) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The stored headers updated by a 304 (RFC 9111 §3.2): each field it
/// carries replaces the stored one, in place, or is added; the fields that
/// describe the stored body keep their stored values.
fn merge(stored: &HeaderMap, fresh: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(fresh);
    let updates = |name: &HeaderName| {
        fresh.contains_key(name)
            && is_stored(name, &listed)
            && !matches!(
                name.as_str(),
                "content-length" | "content-encoding" | "content-range"
            )
    };
    let mut out = HeaderMap::with_capacity(stored.len() + fresh.len());
    for name in stored.keys() {
        let from = if updates(name) { fresh } else { stored };
        for v in from.get_all(name) {
            out.append(name.clone(), v.clone());
        }
    }
    for name in fresh.keys() {
        if !stored.contains_key(name) && updates(name) {
            for v in fresh.get_all(name) {
                out.append(name.clone(), v.clone());
            }
        }
    }
    out
}

fn request_parts(method: Method, url: &Url, headers: HeaderMap) -> Option<http::request::Parts> {
    let uri: http::Uri = url.as_str().parse().ok()?;
    let (mut parts, ()) = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .ok()?
        .into_parts();
    parts.headers = headers;
    Some(parts)
}

fn response_parts(status: StatusCode, headers: &HeaderMap) -> http::response::Parts {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.headers = headers.clone();
    parts
}

/// The rules for a stored response.
fn rules_for(meta: &CacheMetadata, opts: CacheOptions) -> Option<Rules> {
    let req = request_parts(Method::GET, &meta.url, meta.request_headers.clone())?;
    let res = response_parts(meta.status, &meta.headers);
    Some(Rules::new_options(&req, &res, meta.response_time, opts))
}

fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(ETAG) || headers.contains_key(LAST_MODIFIED)
}

impl CacheHop {
    fn serving(source: ResponseSource) -> CacheHop {
        CacheHop {
            state: State::Serving(source),
        }
    }

    /// Decides how the hop `wire` describes is answered: from the cache
    /// (`Some`), or by the network, with validators added to `wire` when a
    /// stale stored response may be confirmed.
    pub(crate) fn start(
        settings: Option<&CacheSettings>,
        policy: CachePolicy,
        wire: &mut WireRequest,
    ) -> (CacheHop, Option<Answer>) {
        let off = CacheHop::default;
        if !matches!(wire.url.scheme(), "http" | "https") {
            return (off(), None);
        }
        let dont_load = policy == CachePolicy::ReturnCacheDataDontLoad;
        if wire.method != Method::GET {
            if dont_load {
                return (
                    off(),
                    not_cached(&wire.url, "only GET responses are cached"),
                );
            }
            return match settings {
                Some(s) if !is_safe(&wire.method) => (
                    CacheHop {
                        state: State::Invalidate {
                            cache: s.cache.clone(),
                            url: wire.url.clone(),
                        },
                    },
                    None,
                ),
                _ => (off(), None),
            };
        }
        let Some(settings) = settings else {
            let answer = if dont_load {
                not_cached(&wire.url, "the manager has no cache")
            } else {
                None
            };
            return (off(), answer);
        };
        let request = match request_parts(Method::GET, &wire.url, guarded(&wire.headers)) {
            Some(r) if !bypasses(&wire.headers) => r,
            _ => {
                let answer = if dont_load {
                    not_cached(
                        &wire.url,
                        "a range or conditional request is never answered by the cache",
                    )
                } else {
                    None
                };
                return (off(), answer);
            }
        };
        let network = |request, stale| CacheHop {
            state: State::Network(Box::new(Pending {
                settings: settings.clone(),
                request,
                url: wire.url.clone(),
                stale,
            })),
        };
        if policy == CachePolicy::ReloadIgnoringCacheData {
            return (network(request, None), None);
        }
        let opts = settings.options();
        let usable = settings.cache.lookup(&wire.url).and_then(|entry| {
            // A response stored for other credentials (or none) is never
            // served to this request, nor revalidated for it: the network
            // answers, and its response replaces the entry.
            if !same_credentials(&entry.metadata.request_headers, &request.headers) {
                return None;
            }
            match rules_for(&entry.metadata, opts) {
                // Stored under other rules (a private response, now in a shared cache).
                Some(rules) if rules.is_storable() => Some((entry, rules)),
                _ => {
                    settings.cache.remove(&wire.url);
                    None
                }
            }
        });
        let Some((entry, rules)) = usable else {
            if dont_load {
                return (
                    off(),
                    not_cached(&wire.url, "nothing is cached for this url"),
                );
            }
            return (network(request, None), None);
        };
        match rules.before_request(&request, SystemTime::now()) {
            BeforeRequest::Fresh(_) => (
                CacheHop::serving(ResponseSource::Cache),
                Some(Answer::Entry(Box::new(entry))),
            ),
            BeforeRequest::Stale {
                request: revalidation,
                matches: true,
            } => match policy {
                // WebCore's "whatever its age".
                CachePolicy::ReturnCacheDataElseLoad | CachePolicy::ReturnCacheDataDontLoad => (
                    CacheHop::serving(ResponseSource::Cache),
                    Some(Answer::Entry(Box::new(entry))),
                ),
                _ => {
                    for name in [IF_NONE_MATCH, IF_MODIFIED_SINCE] {
                        for v in revalidation.headers.get_all(&name) {
                            wire.headers.append(name.clone(), v.clone());
                        }
                    }
                    (network(request, Some(entry)), None)
                }
            },
            // Stored for other values of the headers it varies on.
            BeforeRequest::Stale { matches: false, .. } => {
                if dont_load {
                    return (
                        off(),
                        not_cached(
                            &wire.url,
                            "the cached response is for other values of the headers it varies on",
                        ),
                    );
                }
                (network(request, None), None)
            }
        }
    }

    /// True when the hop's events come from the cache (a fresh entry, or
    /// one a 304 confirmed) rather than from the server just now.
    pub(crate) fn serves_stored(&self) -> bool {
        matches!(self.state, State::Serving(_))
    }

    /// Sees each event of the hop's exchange before the load handles it.
    pub(crate) fn observe(&mut self, ev: &Event, paused: bool) -> Flow {
        match (&mut self.state, ev) {
            (State::Writing { writer, .. }, Event::Data(d)) => {
                if writer.write(d).is_err() {
                    // Not storable after all: what was stored before is outdated.
                    if let State::Writing { cache, url, .. } = std::mem::take(&mut self.state) {
                        cache.remove(&url);
                    }
                }
                Flow::Pass
            }
            (State::Writing { .. }, Event::Finished) => {
                if let State::Writing { writer, .. } = std::mem::take(&mut self.state) {
                    // A cache that cannot commit keeps its old entry or none; the load goes on.
                    let _ = writer.commit();
                }
                Flow::Pass
            }
            (State::Writing { .. }, Event::Failed(_)) => {
                // The body did not complete: it is not stored.
                self.state = State::Off;
                Flow::Pass
            }
            (State::Confirmed { .. }, Event::Finished | Event::Failed(_)) => {
                let State::Confirmed { url, entry } = std::mem::take(&mut self.state) else {
                    return Flow::Pass;
                };
                self.state = State::Serving(ResponseSource::Revalidated);
                let (sink, shared) = ExchangeSink::new(url);
                if paused {
                    shared.set_paused(true);
                }
                serve(sink, *entry);
                Flow::Switch(shared)
            }
            (State::Confirmed { .. }, _) => Flow::Drop,
            (State::Invalidate { .. }, Event::Response(resp)) => {
                if let State::Invalidate { cache, url } = std::mem::take(&mut self.state) {
                    invalidate(&*cache, &url, resp);
                }
                Flow::Pass
            }
            (State::Network(pending), Event::Response(resp))
                if pending.stale.is_some() && resp.status == StatusCode::NOT_MODIFIED =>
            {
                self.not_modified(resp)
            }
            _ => Flow::Pass,
        }
    }

    /// A 304 to the validators of the stale entry: update the entry and
    /// serve it, unless the 304 names another representation.
    fn not_modified(&mut self, resp: &ResourceResponse) -> Flow {
        let State::Network(pending) = std::mem::take(&mut self.state) else {
            return Flow::Pass;
        };
        let Pending {
            settings,
            request,
            url,
            stale: Some(entry),
        } = *pending
        else {
            return Flow::Pass;
        };
        let opts = settings.options();
        let now = SystemTime::now();
        let Some(rules) = rules_for(&entry.metadata, opts) else {
            return Flow::Pass;
        };
        let confirmed = match rules.after_response(
            &request,
            &response_parts(resp.status, &resp.headers),
            now,
        ) {
            AfterResponse::NotModified(..) => true,
            // A 304 that carries no validator at all can only answer the
            // validators this hop sent, which were the entry's.
            AfterResponse::Modified(..) => !has_validator(&resp.headers),
        };
        if !confirmed {
            // The server's representation is not the stored one: the 304 is
            // delivered as it came, and the entry is outdated.
            settings.cache.remove(&url);
            return Flow::Pass;
        }
        let headers = merge(&entry.metadata.headers, &resp.headers);
        let metadata = CacheMetadata {
            request_headers: kept_request_headers(&request.headers, &headers),
            headers,
            response_time: now,
            ..entry.metadata
        };
        match rules_for(&metadata, opts) {
            Some(r) if r.is_storable() => {
                settings.cache.update_metadata(metadata.clone());
            }
            _ => {
                settings.cache.remove(&url);
            }
        }
        self.state = State::Confirmed {
            url,
            entry: Box::new(CacheEntry {
                metadata,
                body: entry.body,
            }),
        };
        Flow::Drop
    }

    /// The response is about to be delivered: mark where it came from, and
    /// start storing a network response the rules allow to be stored.
    pub(crate) fn on_deliver(&mut self, resp: &mut ResourceResponse) {
        if let State::Serving(source) = self.state {
            resp.source = source;
            return;
        }
        let State::Network(pending) = std::mem::take(&mut self.state) else {
            return;
        };
        let Pending {
            settings,
            request,
            url,
            ..
        } = *pending;
        let now = SystemTime::now();
        let rules = Rules::new_options(
            &request,
            &response_parts(resp.status, &resp.headers),
            now,
            settings.options(),
        );
        if !rules.is_storable() {
            // no-store, or not cacheable: what was stored is superseded.
            settings.cache.remove(&url);
            return;
        }
        let metadata = CacheMetadata {
            url: url.clone(),
            status: resp.status,
            reason: resp.reason.clone(),
            version: resp.version,
            headers: stored_headers(&resp.headers),
            request_headers: kept_request_headers(&request.headers, &resp.headers),
            response_time: now,
        };
        match settings.cache.prepare(metadata) {
            Some(writer) => {
                self.state = State::Writing {
                    cache: settings.cache,
                    url,
                    writer,
                }
            }
            None => {
                settings.cache.remove(&url);
            }
        }
    }
}

/// After a response to an unsafe method on `url` (RFC 9111 §4.4): a
/// success invalidates the url, and the Location and Content-Location it
/// names on the same origin.
fn invalidate(cache: &dyn NetworkCache, url: &Url, resp: &ResourceResponse) {
    let status = resp.status.as_u16();
    if !(200..400).contains(&status) {
        return;
    }
    cache.remove(url);
    for name in [LOCATION, CONTENT_LOCATION] {
        let Some(target) = resp
            .headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| url.join(v.trim()).ok())
        else {
            continue;
        };
        if target.origin() == url.origin() {
            let mut target = target;
            target.set_fragment(None);
            cache.remove(&target);
        }
    }
}

/// Answers an exchange with a stored response.
fn serve(mut sink: ExchangeSink, entry: CacheEntry) {
    let CacheEntry { metadata, body } = entry;
    let mut head = ResponseHead::new(metadata.status, metadata.version, metadata.headers);
    head.reason = Some(metadata.reason);
    sink.response(head);
    let len = body.len;
    match body.source {
        BodySource::Bytes(bytes) => deliver_bytes(sink, bytes, "rh-cache-body"),
        BodySource::Reader(reader) => {
            let spawned = std::thread::Builder::new()
                .name("rh-cache-body".into())
                .spawn(move || stream_body(sink, reader, len, "the cached body could not be read"));
            // Should the thread not start, the sink in the closure is dropped,
            // and a dropped sink fails the load: no handle waits forever.
            drop(spawned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn pairs(h: &HeaderMap) -> Vec<(String, String)> {
        h.iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn stored_headers_drop_connection_fields_and_cookies() {
        let h = headers(&[
            ("content-type", "text/plain"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("set-cookie", "a=1"),
            ("etag", "\"v1\""),
        ]);
        assert_eq!(
            pairs(&stored_headers(&h)),
            [
                ("content-type".into(), "text/plain".into()),
                ("etag".into(), "\"v1\"".into())
            ]
        );
    }

    #[test]
    fn a_304_replaces_fields_in_place_and_adds_new_ones() {
        let stored = headers(&[
            ("content-type", "text/plain"),
            ("cache-control", "max-age=0"),
            ("content-length", "10"),
            ("x-multi", "a"),
            ("x-multi", "b"),
            ("etag", "\"v1\""),
        ]);
        let fresh = headers(&[
            ("cache-control", "max-age=60"),
            ("content-length", "0"),
            ("x-multi", "c"),
            ("x-new", "1"),
            ("connection", "close"),
        ]);
        assert_eq!(
            pairs(&merge(&stored, &fresh)),
            [
                ("content-type".into(), "text/plain".into()),
                ("cache-control".into(), "max-age=60".into()),
                ("content-length".into(), "10".into()),
                ("x-multi".into(), "c".into()),
                ("etag".into(), "\"v1\"".into()),
                ("x-new".into(), "1".into()),
            ]
        );
    }

    #[test]
    fn credentials_are_kept_only_as_digests() {
        let req = headers(&[
            ("cookie", "session=secret"),
            ("accept-language", "fr"),
            ("authorization", "Basic c2VjcmV0"),
            ("x-other", "1"),
        ]);
        let resp = headers(&[("vary", "Cookie, Accept-Language")]);
        let kept = kept_request_headers(&guarded(&req), &resp);
        let text = format!("{:?}", pairs(&kept));
        assert!(
            !text.contains("secret") && !text.contains("c2VjcmV0"),
            "{text}"
        );
        assert!(kept["cookie"].to_str().unwrap().starts_with("sha256:"));
        assert_eq!(kept["accept-language"], "fr");
        assert!(kept.contains_key("authorization"));
        assert!(!kept.contains_key("x-other"));
    }

    #[test]
    fn conditional_and_range_requests_bypass() {
        assert!(bypasses(&headers(&[("range", "bytes=0-1")])));
        assert!(bypasses(&headers(&[("if-none-match", "\"x\"")])));
        assert!(!bypasses(&headers(&[("accept", "*/*")])));
    }
}
