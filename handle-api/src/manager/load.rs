//! One load across its hops: the pipeline between the backend's exchanges
//! and the application's handle. It follows redirects, decodes content and
//! schedules each hop, the same way whichever backend carries it.
//!
//! It runs when the handle is polled, so it needs no thread or runtime of
//! its own: an application that stops reading stops the pipeline, and the
//! bounded exchange queue holds the transfer back.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, COOKIE, LOCATION, REFERER, SET_COOKIE,
    USER_AGENT,
};
use http::{HeaderMap, Method, StatusCode};
use url::Url;

use super::decode::{self, Decoder};
use super::redirect::{self, Decision, NextHop, RedirectRules};
use super::Inner;
use crate::auth::{LoadAuth, OnUnauthorized};
use crate::backend::{BodyFraming, Capability, Exchange, WireRequest};
use crate::body::{RequestBody, UploadBody};
use crate::cache::hop::{CacheHop, Flow};
use crate::error::{Error, ErrorKind};
use crate::events::Event;
use crate::exchange::{ExchangeSink, Shared};
use crate::request::{CachePolicy, HttpVersionPref, Priority};
use crate::response::{ResourceResponse, ResponseSource};

/// The most of a redirect response's body read (and dropped) so its
/// connection can be reused; past it the connection is closed instead.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// A request body that may have to be sent again on a 307/308.
pub(crate) enum ReplayBody {
    Empty,
    Bytes(Bytes),
    File(PathBuf),
    /// A stream can be sent once; `None` after it was.
    OneShot(Option<RequestBody>),
}

impl ReplayBody {
    pub(crate) fn new(body: RequestBody) -> Self {
        match body {
            RequestBody::Empty => ReplayBody::Empty,
            RequestBody::Bytes(b) => ReplayBody::Bytes(b),
            RequestBody::File(p) => ReplayBody::File(p),
            stream @ RequestBody::Stream { .. } => ReplayBody::OneShot(Some(stream)),
        }
    }

    fn replayable(&self) -> bool {
        !matches!(self, ReplayBody::OneShot(None))
    }

    fn for_hop(&mut self) -> RequestBody {
        match self {
            ReplayBody::Empty => RequestBody::Empty,
            ReplayBody::Bytes(b) => RequestBody::Bytes(b.clone()),
            ReplayBody::File(p) => RequestBody::File(p.clone()),
            ReplayBody::OneShot(s) => s.take().unwrap_or_default(),
        }
    }
}

/// What the application asked for, as it stands at the current hop.
pub(crate) struct Plan {
    pub(crate) method: Method,
    /// The current hop's url, fragment included.
    pub(crate) url: Url,
    /// The application's headers, as rewritten by the redirects so far.
    pub(crate) headers: HeaderMap,
    pub(crate) user_agent: HeaderValue,
    pub(crate) referrer: Option<HeaderValue>,
    pub(crate) body: ReplayBody,
    pub(crate) timeout: Option<Duration>,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) http_version: HttpVersionPref,
    pub(crate) priority: Priority,
    pub(crate) decode: bool,
    pub(crate) rules: RedirectRules,
    pub(crate) max_decoded: u64,
    /// Set once a hop was made over https: the Referer then never goes to http.
    pub(crate) seen_https: bool,
    /// Whether the current hop goes through a proxy.
    pub(crate) via_proxy: bool,
    /// The request's cache policy (WebCore's), applied at every hop.
    pub(crate) cache_policy: CachePolicy,
    /// What the cache does for the current hop.
    pub(crate) cache: CacheHop,
    /// Whether cookies are sent and stored (the request's `allow_cookies`).
    pub(crate) allow_cookies: bool,
    /// Basic authentication: credentials sent, a retry after a 401.
    pub(crate) auth: LoadAuth,
}

impl Plan {
    /// A 407 through a proxy: only a proxy sends it (RFC 9110 §15.5.8), so
    /// the origin never saw the request.
    fn is_proxy_answer(&self, status: StatusCode) -> bool {
        self.via_proxy && status == StatusCode::PROXY_AUTHENTICATION_REQUIRED
    }
}

pub(crate) struct Load {
    inner: Arc<Inner>,
    plan: Plan,
    current: Arc<Shared>,
    redirects: u32,
    /// A redirect being followed once the 3xx body is drained.
    draining: Option<(NextHop, u64)>,
    decoder: Option<Decoder>,
    encoded_in: u64,
    input_done: bool,
    paused: AtomicBool,
}

impl Load {
    pub(crate) fn start(inner: Arc<Inner>, mut plan: Plan) -> Load {
        let current = start_hop(&inner, &mut plan, false);
        Load {
            inner,
            plan,
            current,
            redirects: 0,
            draining: None,
            decoder: None,
            encoded_in: 0,
            input_done: false,
            paused: AtomicBool::new(false),
        }
    }

    pub(crate) fn cancel(&self) {
        self.current.cancel();
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        self.current.set_paused(paused);
    }

    pub(crate) fn url(&self) -> &Url {
        &self.plan.url
    }

    /// Ends the load with `error`: the current exchange is cancelled so its
    /// connection is released.
    fn fail(&mut self, error: Error) -> Poll<Option<Event>> {
        self.current.cancel();
        self.decoder = None;
        let error = if error.url().is_none() {
            error.with_url(&self.plan.url)
        } else {
            error
        };
        Poll::Ready(Some(Event::Failed(error)))
    }

    /// The next event for the application; `Ready(None)` when the load was cancelled.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            if let Some(dec) = self.decoder.as_mut() {
                match dec.next_output() {
                    Ok(Some(b)) => return Poll::Ready(Some(Event::Data(b))),
                    Ok(None) => {}
                    Err(e) => return self.fail(e),
                }
                if self.input_done {
                    // An empty body has nothing to decode, whatever it claims.
                    let flushed = if self.encoded_in == 0 {
                        Ok(None)
                    } else {
                        dec.finish()
                    };
                    match flushed {
                        Ok(Some(b)) => return Poll::Ready(Some(Event::Data(b))),
                        Ok(None) => {
                            self.decoder = None;
                            return Poll::Ready(Some(Event::Finished));
                        }
                        Err(e) => return self.fail(e),
                    }
                }
            }
            let ev = match self.current.poll_event(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(ev)) => ev,
            };
            if let Event::Response(resp) = &ev {
                // Before the cache, which may answer for a 304 and hide it.
                note_response(&self.inner, &self.plan, resp);
            }
            // The cache sees the exchange first: it stores a body as it
            // streams, and answers for a 304 that confirmed its entry.
            let paused = self.paused.load(Ordering::SeqCst);
            match self.plan.cache.observe(&ev, paused) {
                Flow::Pass => {}
                Flow::Drop => continue,
                Flow::Switch(cached) => {
                    self.current = cached;
                    continue;
                }
            }
            if let Some((_, drained)) = self.draining.as_mut() {
                let over = match &ev {
                    Event::Data(d) => {
                        *drained += d.len() as u64;
                        *drained > DRAIN_LIMIT
                    }
                    _ => false,
                };
                if over {
                    // Not worth reading to the end: close this connection instead.
                    self.current.cancel();
                }
                if over || matches!(ev, Event::Finished | Event::Failed(_)) {
                    self.follow();
                }
                continue;
            }
            match ev {
                Event::Response(resp) if self.plan.is_proxy_answer(resp.status) => {
                    // Only a proxy sends 407 (RFC 9110 §15.5.8): the load
                    // never reached its origin.
                    return self.fail(Error::new(
                        ErrorKind::Proxy,
                        "the proxy asks for authentication (407)",
                    ));
                }
                Event::Response(mut resp) => {
                    match self.authenticate(&resp) {
                        Ok(false) => {}
                        Ok(true) => continue,
                        Err(e) => return self.fail(e),
                    }
                    let hsts_headers = hsts_location(&self.inner, &self.plan.url, &resp.headers);
                    match redirect::decide(
                        &self.plan.rules,
                        resp.status,
                        hsts_headers.as_ref().unwrap_or(&resp.headers),
                        &self.plan.url,
                        &self.plan.method,
                        self.redirects,
                    ) {
                        Decision::Fail(e) => return self.fail(e),
                        Decision::Follow(hop) => {
                            if hop.keep_body && !self.plan.body.replayable() {
                                return self.fail(Error::new(
                                    ErrorKind::RedirectRefused,
                                    format!(
                                        "the {} redirect to {} needs the request body again, but it was a one-shot stream",
                                        resp.status.as_u16(),
                                        hop.url
                                    ),
                                ));
                            }
                            let ev = Event::Redirected {
                                status: resp.status,
                                from: self.plan.url.clone(),
                                to: hop.url.clone(),
                            };
                            self.draining = Some((hop, 0));
                            return Poll::Ready(Some(ev));
                        }
                        Decision::Deliver => {}
                    }
                    resp.url = self.plan.url.clone();
                    resp.redirect_count = self.redirects;
                    if !matches!(self.plan.url.scheme(), "http" | "https") {
                        resp.source = ResponseSource::Local;
                    }
                    self.plan.cache.on_deliver(&mut resp);
                    if self.plan.decode && may_have_body(&self.plan.method, resp.status) {
                        match Decoder::for_headers(&resp.headers, self.plan.max_decoded) {
                            Ok(Some(d)) => {
                                // The declared length is the encoded one; the decoded length is unknown.
                                resp.expected_content_length = None;
                                self.decoder = Some(d);
                            }
                            Ok(None) => {}
                            Err(e) => return self.fail(e),
                        }
                    }
                    return Poll::Ready(Some(Event::Response(resp)));
                }
                Event::Data(d) => match self.decoder.as_mut() {
                    Some(dec) => {
                        self.encoded_in += d.len() as u64;
                        dec.push(d);
                    }
                    None => return Poll::Ready(Some(Event::Data(d))),
                },
                Event::Finished if self.decoder.is_some() => self.input_done = true,
                other => return Poll::Ready(Some(other)),
            }
        }
    }

    /// Moves on to the hop the last redirect named, or sends the current
    /// hop again with credentials after a 401.
    fn follow(&mut self) {
        let Some((hop, _)) = self.draining.take() else {
            return;
        };
        if !self.plan.auth.retrying() {
            redirect::rewrite_headers(&mut self.plan.headers, &self.plan.url, &hop);
            if !hop.keep_body {
                self.plan.body = ReplayBody::Empty;
            }
            self.plan.url = hop.url;
            self.plan.method = hop.method;
            self.redirects += 1;
            self.plan.auth.new_hop();
        }
        let paused = self.paused.load(Ordering::SeqCst);
        self.current = start_hop(&self.inner, &mut self.plan, paused);
    }
}

impl Load {
    /// Basic authentication on a response head: `Ok(true)` when the hop is
    /// sent again with credentials once its 401 body is drained.
    fn authenticate(&mut self, resp: &ResourceResponse) -> Result<bool, Error> {
        if !matches!(self.plan.url.scheme(), "http" | "https") {
            return Ok(false);
        }
        let own = self.plan.headers.contains_key(AUTHORIZATION);
        let verdict = self.inner.auth.on_response(
            &mut self.plan.auth,
            &self.plan.url,
            resp.status,
            &resp.headers,
            own,
        );
        match verdict {
            OnUnauthorized::Deliver => Ok(false),
            OnUnauthorized::Fail(e) => Err(e),
            OnUnauthorized::Retry if !self.plan.body.replayable() => Err(Error::new(
                ErrorKind::Auth,
                "the server asks for credentials, but the request body was a one-shot stream that cannot be sent again",
            )),
            OnUnauthorized::Retry => {
                let again = NextHop {
                    url: self.plan.url.clone(),
                    method: self.plan.method.clone(),
                    keep_body: true,
                };
                self.draining = Some((again, 0));
                Ok(true)
            }
        }
    }
}

/// What a response head teaches the manager, on every hop, redirects and
/// 401s included: its cookies and its HSTS policy.
fn note_response(inner: &Inner, plan: &Plan, resp: &ResourceResponse) {
    if !matches!(plan.url.scheme(), "http" | "https") || plan.is_proxy_answer(resp.status) {
        // Not from the origin: a local scheme, or the proxy's own answer.
        return;
    }
    if plan.cache.serves_stored() {
        // A stored response was not received from the server now: its
        // Strict-Transport-Security must not renew a policy the server may
        // have since ended (RFC 6797 §8.1 counts headers received over a
        // secure transport), nor its Set-Cookie, should a cache keep one,
        // bring back cookies the server has since changed. A 304 that
        // confirmed the entry came from the server and was noted already.
        return;
    }
    if plan.allow_cookies {
        inner
            .cookie_jar
            .set_cookies(&mut resp.headers.get_all(SET_COOKIE).iter(), &plan.url);
    }
    if inner.hsts_learn {
        if let Some(hsts) = &inner.hsts {
            hsts.observe(&plan.url, &resp.headers);
        }
    }
}

/// The response headers with the Location upgraded to https when it names
/// an http url of a Known HSTS Host, so the redirect rules judge the url
/// that will be loaded (a redirect from https to such a host is then no
/// downgrade); `None` when nothing changes.
fn hsts_location(inner: &Inner, current: &Url, headers: &HeaderMap) -> Option<HeaderMap> {
    let hsts = inner.hsts.as_ref()?;
    let location = std::str::from_utf8(headers.get(LOCATION)?.as_bytes()).ok()?;
    let target = current.join(location.trim()).ok()?;
    let upgraded = hsts.upgrade(&target)?;
    let mut headers = headers.clone();
    headers.insert(LOCATION, HeaderValue::from_str(upgraded.as_str()).ok()?);
    Some(headers)
}

/// The headers of a hop that come from the manager's stores: the jar's
/// cookies for the hop's url, and the credentials for its origin. An
/// application's own Cookie or Authorization header is left as it is.
fn credentials_and_cookies(inner: &Inner, plan: &mut Plan, wire: &mut WireRequest) {
    if plan.allow_cookies && !wire.headers.contains_key(COOKIE) {
        if let Some(cookies) = inner.cookie_jar.cookies(&wire.url) {
            wire.headers.insert(COOKIE, cookies);
        }
    }
    inner
        .auth
        .authorize(&mut plan.auth, &wire.url, &mut wire.headers);
}

fn may_have_body(method: &Method, status: StatusCode) -> bool {
    *method != Method::HEAD
        && !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// Starts the exchange for the plan's current hop and returns its queue.
fn start_hop(inner: &Arc<Inner>, plan: &mut Plan, paused: bool) -> Arc<Shared> {
    // RFC 6797 §8.3: an http url of a Known HSTS Host goes to https
    // before anything is sent, on every hop.
    if let Some(upgraded) = inner.hsts.as_ref().and_then(|h| h.upgrade(&plan.url)) {
        plan.url = upgraded;
    }
    let mut url = plan.url.clone();
    url.set_fragment(None);
    let (sink, shared) = ExchangeSink::new(url.clone());
    if paused {
        shared.set_paused(true);
    }
    let body = match UploadBody::open(plan.body.for_hop()) {
        Ok(b) => b,
        Err(e) => {
            sink.fail(Error::new(ErrorKind::Io, e.to_string()).with_source(e));
            return shared;
        }
    };
    let is_http = matches!(url.scheme(), "http" | "https");
    if url.scheme() == "https" {
        plan.seen_https = true;
    }
    let mut wire = wire_request(plan, url, body, &sink);
    if is_http {
        credentials_and_cookies(inner, plan, &mut wire);
    }
    wire.proxy = if is_http {
        inner.proxy.proxy_for(&wire.url).cloned()
    } else {
        None
    };
    plan.via_proxy = wire.proxy.is_some();
    if let Some(proxy) = &wire.proxy {
        let needed = if proxy.scheme().is_socks() {
            Capability::Socks5
        } else {
            Capability::Proxy
        };
        if let Err(why) = inner.backend.capabilities().check(needed) {
            sink.fail(Error::new(
                ErrorKind::Unsupported,
                format!("{proxy} cannot be used: {why}"),
            ));
            return shared;
        }
    }
    if !is_http {
        wire.headers.remove(ACCEPT_ENCODING);
    }
    // The cache decides last, on the headers as they would be sent.
    let (hop, answer) = CacheHop::start(inner.cache.as_ref(), plan.cache_policy, &mut wire);
    plan.cache = hop;
    if let Some(answer) = answer {
        answer.deliver(sink);
        return shared;
    }
    let exchange = Exchange {
        request: wire,
        sink,
    };
    if is_http {
        inner.scheduler.submit(plan.priority, exchange);
    } else {
        match inner.schemes.get(exchange.request.url.scheme()) {
            Some(handler) => handler.start(exchange),
            None => {
                let scheme = exchange.request.url.scheme().to_owned();
                exchange.sink.fail(Error::new(
                    ErrorKind::UnsupportedScheme,
                    format!("no handler for the {scheme:?} scheme on this manager"),
                ));
            }
        }
    }
    shared
}

/// The exchange for one hop: the application's headers, then the ones the
/// manager supplies, and the framing rule every backend follows.
fn wire_request(plan: &Plan, url: Url, mut body: UploadBody, sink: &ExchangeSink) -> WireRequest {
    let mut headers = plan.headers.clone();
    // Framing is the backend's to write, from `framing` below; an
    // application value would only conflict with it.
    headers.remove(http::header::CONTENT_LENGTH);
    headers.remove(http::header::TRANSFER_ENCODING);
    if !headers.contains_key(USER_AGENT) {
        headers.insert(USER_AGENT, plan.user_agent.clone());
    }
    if !headers.contains_key(ACCEPT) {
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    }
    if plan.decode && !headers.contains_key(ACCEPT_ENCODING) {
        headers.insert(
            ACCEPT_ENCODING,
            HeaderValue::from_static(decode::ACCEPT_ENCODING),
        );
    }
    headers.remove(REFERER);
    if let Some(referrer) = &plan.referrer {
        // No Referer from https to http (no-referrer-when-downgrade).
        let downgrade = url.scheme() == "http"
            && (plan.seen_https || referrer.as_bytes().starts_with(b"https:"));
        if !downgrade {
            headers.insert(REFERER, referrer.clone());
        }
    }
    let framing = framing(&plan.method, &body);
    body.attach(sink.shared().clone());
    WireRequest {
        method: plan.method.clone(),
        url,
        headers,
        body,
        framing,
        timeout: plan.timeout,
        connect_timeout: plan.connect_timeout,
        read_timeout: plan.read_timeout,
        http_version: plan.http_version,
        proxy: None,
    }
}

/// The framing rule every backend follows: a known length is sent as
/// Content-Length (0 included for methods that define a body), an unknown
/// one chunked, and no body means no framing header.
fn framing(method: &Method, body: &UploadBody) -> BodyFraming {
    match body.len() {
        None => BodyFraming::Chunked,
        Some(0) if body.is_empty() => {
            if matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
                BodyFraming::Length(0)
            } else {
                BodyFraming::None
            }
        }
        Some(n) => BodyFraming::Length(n),
    }
}
