//! Redirects, followed by the manager for every backend alike (the
//! backends' own redirect following is off), with the Fetch standard's
//! method rules and the security rules of DESIGN.md §8 on every hop.

use std::fmt;
use std::sync::Arc;

use http::header::{
    HeaderName, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LANGUAGE, CONTENT_LOCATION, CONTENT_TYPE,
    COOKIE, LOCATION, PROXY_AUTHORIZATION,
};
use http::{HeaderMap, Method, StatusCode};
use url::Url;

use crate::error::{Error, ErrorKind};

/// The most redirects a load follows unless told otherwise (Fetch's 20).
pub const DEFAULT_MAX_REDIRECTS: u32 = 20;

/// What a redirect callback decides for one hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectAction {
    /// Follow the redirect.
    Follow,
    /// Do not follow: the redirect response itself becomes the response.
    Stop,
    /// Fail the load with a `redirect_refused` error.
    Refuse,
}

/// One hop, as a redirect callback sees it (WebCore's willSendRequest).
#[derive(Debug)]
pub struct RedirectHop<'a> {
    /// Status of the redirect response.
    pub status: StatusCode,
    /// The url that answered with the redirect.
    pub from: &'a Url,
    /// Where the load would go next.
    pub to: &'a Url,
    /// The method the next request would use.
    pub method: &'a Method,
    /// Redirects followed before this one.
    pub count: u32,
}

/// How a load treats redirects.
#[derive(Clone, Default)]
pub enum RedirectPolicy {
    /// Follow every redirect (within the maximum and the security rules).
    #[default]
    Follow,
    /// Never follow: a 3xx is the response.
    None,
    /// Follow redirects within the same origin; a redirect elsewhere fails
    /// with `redirect_refused`.
    SameOrigin,
    /// Ask the callback at each hop, after the security rules allowed it.
    Custom(Arc<dyn Fn(&RedirectHop<'_>) -> RedirectAction + Send + Sync>),
}

impl RedirectPolicy {
    /// A policy that asks `f` at each hop.
    pub fn custom(f: impl Fn(&RedirectHop<'_>) -> RedirectAction + Send + Sync + 'static) -> Self {
        RedirectPolicy::Custom(Arc::new(f))
    }
}

impl fmt::Debug for RedirectPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedirectPolicy::Follow => f.write_str("Follow"),
            RedirectPolicy::None => f.write_str("None"),
            RedirectPolicy::SameOrigin => f.write_str("SameOrigin"),
            RedirectPolicy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// The redirect settings in force for one load.
#[derive(Debug, Clone)]
pub(crate) struct RedirectRules {
    pub(crate) policy: RedirectPolicy,
    pub(crate) max: u32,
    pub(crate) allow_downgrade: bool,
}

/// The next hop of a followed redirect.
#[derive(Debug)]
pub(crate) struct NextHop {
    pub(crate) url: Url,
    pub(crate) method: Method,
    /// False when the body is dropped (303, and POST on 301/302).
    pub(crate) keep_body: bool,
}

/// The outcome of looking at a response for a redirect.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Not a redirect to follow: deliver the response.
    Deliver,
    /// Follow to the next hop.
    Follow(NextHop),
    /// Fail the load.
    Fail(Error),
}

/// True for the statuses the manager follows.
pub(crate) fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn refused(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::RedirectRefused, msg)
}

/// Looks at a response to `method` on `current` (with its fragment) and
/// decides whether and where to go next. `count` is the redirects followed so far.
pub(crate) fn decide(
    rules: &RedirectRules,
    status: StatusCode,
    headers: &HeaderMap,
    current: &Url,
    method: &Method,
    count: u32,
) -> Decision {
    if !is_redirect(status) {
        return Decision::Deliver;
    }
    let Some(location) = headers.get(LOCATION) else {
        // A 3xx without a Location has nowhere to go: it is the response.
        return Decision::Deliver;
    };
    if matches!(rules.policy, RedirectPolicy::None) {
        return Decision::Deliver;
    }
    let Ok(location) = std::str::from_utf8(location.as_bytes()) else {
        return Decision::Fail(refused("the Location header is not valid UTF-8"));
    };
    let mut next = match current.join(location.trim()) {
        Ok(u) => u,
        Err(e) => {
            return Decision::Fail(
                refused(format!("the Location {location:?} does not parse: {e}")).with_source(e),
            )
        }
    };
    if !matches!(next.scheme(), "http" | "https") {
        return Decision::Fail(refused(format!(
            "the Location {next} has a scheme redirects may not go to"
        )));
    }
    if next.host_str().is_none_or(str::is_empty) {
        return Decision::Fail(refused(format!("the Location {location:?} has no host")));
    }
    // A Location without a fragment inherits the current one (RFC 9110 §10.2.2).
    if next.fragment().is_none() {
        next.set_fragment(current.fragment());
    }
    if count >= rules.max {
        return Decision::Fail(Error::new(
            ErrorKind::TooManyRedirects,
            format!("more than {} redirects", rules.max),
        ));
    }
    if current.scheme() == "https" && next.scheme() == "http" && !rules.allow_downgrade {
        return Decision::Fail(refused(format!(
            "the redirect from {current} to {next} would leave https"
        )));
    }
    let (next_method, keep_body) = match status.as_u16() {
        303 if *method != Method::HEAD => (Method::GET, false),
        301 | 302 if *method == Method::POST => (Method::GET, false),
        _ => (method.clone(), true),
    };
    let same_origin = current.origin() == next.origin();
    let action = match &rules.policy {
        RedirectPolicy::SameOrigin if !same_origin => {
            return Decision::Fail(refused(format!(
                "the redirect from {current} to {next} leaves the origin"
            )))
        }
        RedirectPolicy::Custom(f) => f(&RedirectHop {
            status,
            from: current,
            to: &next,
            method: &next_method,
            count,
        }),
        _ => RedirectAction::Follow,
    };
    match action {
        RedirectAction::Follow => Decision::Follow(NextHop {
            url: next,
            method: next_method,
            keep_body,
        }),
        RedirectAction::Stop => Decision::Deliver,
        RedirectAction::Refuse => Decision::Fail(refused(format!(
            "the application refused the redirect to {next}"
        ))),
    }
}

/// Headers that never cross to another origin.
const CREDENTIALS: [HeaderName; 3] = [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION];

/// Headers that describe a body, dropped with it (Fetch's request-body-header names).
const BODY_HEADERS: [HeaderName; 4] = [
    CONTENT_TYPE,
    CONTENT_ENCODING,
    CONTENT_LANGUAGE,
    CONTENT_LOCATION,
];

/// Updates the application's headers for a hop from `from` to `hop`.
pub(crate) fn rewrite_headers(headers: &mut HeaderMap, from: &Url, hop: &NextHop) {
    if from.origin() != hop.url.origin() {
        // Once stripped they stay stripped, even if a later hop comes back.
        for h in &CREDENTIALS {
            headers.remove(h);
        }
    }
    if !hop.keep_body {
        for h in &BODY_HEADERS {
            headers.remove(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RedirectRules {
        RedirectRules {
            policy: RedirectPolicy::Follow,
            max: 3,
            allow_downgrade: false,
        }
    }

    fn loc(l: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(LOCATION, l.parse().unwrap());
        h
    }

    fn follow(d: Decision) -> NextHop {
        match d {
            Decision::Follow(n) => n,
            other => panic!("expected follow, got {other:?}"),
        }
    }

    fn kind(d: Decision) -> ErrorKind {
        match d {
            Decision::Fail(e) => e.kind(),
            other => panic!("expected failure, got {other:?}"),
        }
    }

    #[test]
    fn method_rules_follow_fetch() {
        let cur = Url::parse("http://a.test/x").unwrap();
        let s = |c| StatusCode::from_u16(c).unwrap();
        let h = loc("/y");
        let n = follow(decide(&rules(), s(303), &h, &cur, &Method::PUT, 0));
        assert_eq!((n.method, n.keep_body), (Method::GET, false));
        let n = follow(decide(&rules(), s(303), &h, &cur, &Method::HEAD, 0));
        assert_eq!(n.method, Method::HEAD);
        let n = follow(decide(&rules(), s(302), &h, &cur, &Method::POST, 0));
        assert_eq!((n.method, n.keep_body), (Method::GET, false));
        let n = follow(decide(&rules(), s(301), &h, &cur, &Method::PUT, 0));
        assert_eq!((n.method, n.keep_body), (Method::PUT, true));
        let n = follow(decide(&rules(), s(307), &h, &cur, &Method::POST, 0));
        assert_eq!((n.method, n.keep_body), (Method::POST, true));
        assert_eq!(n.url.as_str(), "http://a.test/y");
    }

    #[test]
    fn locations_resolve_and_carry_fragments() {
        let cur = Url::parse("https://a.test/dir/page#frag").unwrap();
        let s = StatusCode::FOUND;
        let n = follow(decide(&rules(), s, &loc("other"), &cur, &Method::GET, 0));
        assert_eq!(n.url.as_str(), "https://a.test/dir/other#frag");
        let n = follow(decide(
            &rules(),
            s,
            &loc("//b.test/p"),
            &cur,
            &Method::GET,
            0,
        ));
        assert_eq!(n.url.as_str(), "https://b.test/p#frag");
        let n = follow(decide(&rules(), s, &loc("/q#own"), &cur, &Method::GET, 0));
        assert_eq!(n.url.as_str(), "https://a.test/q#own");
    }

    #[test]
    fn refusals() {
        let cur = Url::parse("https://a.test/").unwrap();
        let s = StatusCode::FOUND;
        assert_eq!(
            kind(decide(
                &rules(),
                s,
                &loc("http://a.test/"),
                &cur,
                &Method::GET,
                0
            )),
            ErrorKind::RedirectRefused
        );
        assert_eq!(
            kind(decide(
                &rules(),
                s,
                &loc("ftp://a.test/"),
                &cur,
                &Method::GET,
                0
            )),
            ErrorKind::RedirectRefused
        );
        assert_eq!(
            kind(decide(
                &rules(),
                s,
                &loc("http://[::1"),
                &cur,
                &Method::GET,
                0
            )),
            ErrorKind::RedirectRefused
        );
        assert_eq!(
            kind(decide(&rules(), s, &loc("/a"), &cur, &Method::GET, 3)),
            ErrorKind::TooManyRedirects
        );
        let mut r = rules();
        r.policy = RedirectPolicy::SameOrigin;
        assert_eq!(
            kind(decide(
                &r,
                s,
                &loc("https://b.test/"),
                &cur,
                &Method::GET,
                0
            )),
            ErrorKind::RedirectRefused
        );
        assert!(matches!(
            decide(&r, s, &loc("/b"), &cur, &Method::GET, 0),
            Decision::Follow(_)
        ));
        r.allow_downgrade = true;
        r.policy = RedirectPolicy::Follow;
        assert!(matches!(
            decide(&r, s, &loc("http://a.test/"), &cur, &Method::GET, 0),
            Decision::Follow(_)
        ));
    }

    #[test]
    fn policies_none_and_custom() {
        let cur = Url::parse("http://a.test/").unwrap();
        let s = StatusCode::MOVED_PERMANENTLY;
        let mut r = rules();
        r.policy = RedirectPolicy::None;
        assert!(matches!(
            decide(&r, s, &loc("/b"), &cur, &Method::GET, 0),
            Decision::Deliver
        ));
        r.policy = RedirectPolicy::custom(|hop| {
            if hop.to.path() == "/stop" {
                RedirectAction::Stop
            } else {
                RedirectAction::Refuse
            }
        });
        assert!(matches!(
            decide(&r, s, &loc("/stop"), &cur, &Method::GET, 0),
            Decision::Deliver
        ));
        assert_eq!(
            kind(decide(&r, s, &loc("/x"), &cur, &Method::GET, 0)),
            ErrorKind::RedirectRefused
        );
        // No Location, or not a followed status: deliver.
        assert!(matches!(
            decide(&rules(), s, &HeaderMap::new(), &cur, &Method::GET, 0),
            Decision::Deliver
        ));
        assert!(matches!(
            decide(
                &rules(),
                StatusCode::MULTIPLE_CHOICES,
                &loc("/b"),
                &cur,
                &Method::GET,
                0
            ),
            Decision::Deliver
        ));
    }

    #[test]
    fn credentials_never_cross_origins() {
        let from = Url::parse("http://a.test/").unwrap();
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, "Basic x".parse().unwrap());
        h.insert(COOKIE, "a=b".parse().unwrap());
        h.insert(CONTENT_TYPE, "text/plain".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        let same = NextHop {
            url: Url::parse("http://a.test/b").unwrap(),
            method: Method::GET,
            keep_body: true,
        };
        rewrite_headers(&mut h, &from, &same);
        assert!(h.contains_key(AUTHORIZATION) && h.contains_key(CONTENT_TYPE));
        let other = NextHop {
            url: Url::parse("http://b.test/").unwrap(),
            method: Method::GET,
            keep_body: false,
        };
        rewrite_headers(&mut h, &from, &other);
        assert!(
            !h.contains_key(AUTHORIZATION)
                && !h.contains_key(COOKIE)
                && !h.contains_key(CONTENT_TYPE)
        );
        assert!(h.contains_key("x-keep"));
    }
}
