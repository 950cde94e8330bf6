//! HTTP Basic authentication (RFC 7617), done by the manager for every
//! backend alike (Qt's authenticationRequired).
//!
//! A load sends no credentials until a server asks: on a 401 whose
//! `WWW-Authenticate` offers Basic, the manager looks for credentials for
//! the origin (scheme, host and port) of the url that answered — those in
//! the url itself, those given to the manager, then the application's
//! authenticator callback — and sends the request again once with them. A
//! second 401 fails the load with [`ErrorKind::Auth`]; with no credentials
//! the 401 is the response. Credentials the server accepted are remembered
//! for their origin and sent at once on later requests there. They are
//! never sent to another origin.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use http::StatusCode;
use url::{Origin, Url};

use crate::error::{Error, ErrorKind, Result};

/// A user name and password for HTTP Basic authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password never reaches a log.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials for Basic authentication. A user name with `:` cannot be
    /// sent (RFC 7617 §2), nor can control characters: both are an
    /// `invalid_request` error.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Result<Self> {
        let (user, password) = (user.into(), password.into());
        if user.contains(':') {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                "a Basic user name cannot contain ':'",
            ));
        }
        if user.chars().chain(password.chars()).any(char::is_control) {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                "Basic credentials cannot contain control characters",
            ));
        }
        Ok(Credentials { user, password })
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The `Authorization` value: `Basic` and the UTF-8 `user:password` in base64.
    pub(crate) fn basic(&self) -> HeaderValue {
        let token = STANDARD.encode(format!("{}:{}", self.user, self.password));
        let mut v = HeaderValue::from_str(&format!("Basic {token}"))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
        v.set_sensitive(true);
        v
    }
}

/// A server's request for Basic credentials, as the authenticator sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthChallenge {
    /// The url that answered 401.
    pub url: Url,
    /// The protection space's realm, when the challenge names one.
    pub realm: Option<String>,
    /// True when credentials were already sent for this request and refused.
    pub retry: bool,
}

/// The application's callback for credentials (Qt's authenticationRequired):
/// `None` declines, and the 401 becomes the response.
pub(crate) type Authenticator = Arc<dyn Fn(&AuthChallenge) -> Option<Credentials> + Send + Sync>;

/// The manager's credentials: given per origin, accepted by servers, and the
/// callback that supplies more.
#[derive(Default)]
pub(crate) struct AuthStore {
    given: HashMap<Origin, Credentials>,
    accepted: Mutex<HashMap<Origin, Credentials>>,
    authenticator: Option<Authenticator>,
}

impl fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthStore")
            .field("origins", &self.given.len())
            .field("authenticator", &self.authenticator.is_some())
            .finish()
    }
}

/// The origin of an http(s) url given as a string, such as `http://a.test:8080`.
pub(crate) fn parse_origin(origin: &str) -> Result<Origin> {
    let url = Url::parse(origin).map_err(|e| {
        Error::new(
            ErrorKind::InvalidRequest,
            format!("{origin:?} is not an origin url: {e}"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(Error::new(
            ErrorKind::InvalidRequest,
            format!("{origin:?} is not an http or https origin"),
        ));
    }
    Ok(url.origin())
}

/// The credentials in a url's userinfo (percent-decoded), removed from the url.
pub(crate) fn take_url_credentials(url: &mut Url) -> Option<(Origin, Credentials)> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let creds = Credentials::new(
        percent_decode(url.username()),
        percent_decode(url.password().unwrap_or("")),
    );
    // Credentials never travel in the url: not on the wire, not in traces.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Some((url.origin(), creds.ok()?))
}

/// Percent-decodes userinfo; bytes that are not UTF-8 become U+FFFD.
fn percent_decode(s: &str) -> String {
    String::from_utf8_lossy(&crate::manager::schemes::percent_decode(s.as_bytes())).into_owned()
}

/// What to do with a 401.
#[derive(Debug)]
pub(crate) enum OnUnauthorized {
    /// Deliver it as the response.
    Deliver,
    /// Send the same request again with credentials.
    Retry,
    /// Fail the load.
    Fail(Error),
}

/// One load's authentication state.
#[derive(Debug, Default)]
pub(crate) struct LoadAuth {
    /// Credentials from the url the application gave.
    url_credentials: Option<(Origin, Credentials)>,
    /// Credentials for the next attempt of the current hop, after a 401.
    retry: Option<(Origin, Credentials)>,
    /// What the current hop sent.
    sent: Option<Credentials>,
    /// Whether the current hop was already sent again after a 401.
    retried: bool,
}

impl LoadAuth {
    pub(crate) fn new(url_credentials: Option<(Origin, Credentials)>) -> Self {
        LoadAuth {
            url_credentials,
            ..LoadAuth::default()
        }
    }

    /// True once, when the hop being started repeats the last one with
    /// credentials (so it is no new hop).
    pub(crate) fn retrying(&self) -> bool {
        self.retry.is_some()
    }

    /// Called when a redirect moves the load to a new hop.
    pub(crate) fn new_hop(&mut self) {
        self.retry = None;
        self.retried = false;
    }
}

impl AuthStore {
    pub(crate) fn new(
        given: HashMap<Origin, Credentials>,
        authenticator: Option<Authenticator>,
    ) -> Self {
        AuthStore {
            given,
            accepted: Mutex::new(HashMap::new()),
            authenticator,
        }
    }

    fn accepted(&self) -> MutexGuard<'_, HashMap<Origin, Credentials>> {
        self.accepted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the `Authorization` of a hop to `url`: the credentials of a
    /// retry, or those the server accepted before. Left alone when the
    /// application set the header itself.
    pub(crate) fn authorize(&self, load: &mut LoadAuth, url: &Url, headers: &mut HeaderMap) {
        load.sent = None;
        if headers.contains_key(http::header::AUTHORIZATION) {
            return;
        }
        let origin = url.origin();
        let creds = match load.retry.take() {
            Some((o, c)) if o == origin => Some(c),
            _ => self.accepted().get(&origin).cloned(),
        };
        if let Some(c) = creds {
            headers.insert(http::header::AUTHORIZATION, c.basic());
            load.sent = Some(c);
        }
    }

    /// Looks at a response head of a hop to `url`: remembers credentials the
    /// server accepted, and decides what a 401 leads to. `app_authorization`
    /// is whether the application set its own Authorization header, which
    /// the manager never replaces.
    pub(crate) fn on_response(
        &self,
        load: &mut LoadAuth,
        url: &Url,
        status: StatusCode,
        headers: &HeaderMap,
        app_authorization: bool,
    ) -> OnUnauthorized {
        let origin = url.origin();
        if status != StatusCode::UNAUTHORIZED {
            if let Some(c) = load.sent.take() {
                self.accepted().insert(origin, c);
            }
            return OnUnauthorized::Deliver;
        }
        if app_authorization {
            return OnUnauthorized::Deliver;
        }
        let sent = load.sent.take();
        if let Some(rejected) = &sent {
            // Refused now, so not to be sent at once again.
            let mut accepted = self.accepted();
            if accepted.get(&origin) == Some(rejected) {
                accepted.remove(&origin);
            }
        }
        let rejected = || {
            OnUnauthorized::Fail(Error::new(
                ErrorKind::Auth,
                format!(
                    "the server refused the credentials for {}",
                    origin.ascii_serialization()
                ),
            ))
        };
        if load.retried {
            return rejected();
        }
        let Some(realm) = basic_challenge(headers) else {
            // Not a scheme this manager speaks: the application sees the 401.
            return if sent.is_some() {
                rejected()
            } else {
                OnUnauthorized::Deliver
            };
        };
        let from_url = load
            .url_credentials
            .as_ref()
            .filter(|(o, _)| *o == origin)
            .map(|(_, c)| c.clone());
        let fresh = |c: &Credentials| sent.as_ref() != Some(c);
        let mut creds = from_url
            .filter(fresh)
            .or_else(|| self.given.get(&origin).cloned().filter(fresh));
        if creds.is_none() {
            if let Some(ask) = &self.authenticator {
                let challenge = AuthChallenge {
                    url: url.clone(),
                    realm,
                    retry: sent.is_some(),
                };
                creds = ask(&challenge);
            }
        }
        match creds {
            Some(c) => {
                load.retry = Some((origin, c));
                load.retried = true;
                OnUnauthorized::Retry
            }
            None if sent.is_some() => rejected(),
            None => OnUnauthorized::Deliver,
        }
    }
}

/// The realm of the first Basic challenge in the `WWW-Authenticate` fields:
/// `Some(realm)` when Basic is offered (`Some(None)` without a realm).
fn basic_challenge(headers: &HeaderMap) -> Option<Option<String>> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
        .flat_map(challenges)
        .find(|c| c.scheme.eq_ignore_ascii_case("basic"))
        .map(|c| {
            c.params
                .into_iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("realm"))
                .map(|(_, v)| v)
        })
}

#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: Vec<(String, String)>,
}

/// Parses a `WWW-Authenticate` value into challenges (RFC 9110 §11.6.1):
/// `scheme [token68 | #auth-param]`, challenges and parameters both
/// separated by commas. Whatever does not parse ends the list.
fn challenges(value: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut p = Parser {
        s: value.as_bytes(),
        i: 0,
    };
    loop {
        p.skip_list_separators();
        let Some(token) = p.token() else {
            break;
        };
        p.skip_ws();
        if p.peek() == Some(b'=') {
            // `name=value`: a parameter of the current challenge.
            p.i += 1;
            p.skip_ws();
            let Some(value) = p.value() else {
                break;
            };
            match out.last_mut() {
                Some(c) => c.params.push((token, value)),
                None => break,
            }
        } else {
            out.push(Challenge {
                scheme: token,
                params: Vec::new(),
            });
            // A token68 right after the scheme (`Bearer abc==`) is its data.
            let save = p.i;
            if let Some(_t68) = p.token68() {
                p.skip_ws();
                if !matches!(p.peek(), None | Some(b',')) {
                    p.i = save;
                }
            }
        }
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_list_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// `token68`: a run of its characters, then `=` padding, before a comma,
    /// space or the end; a `=` followed by more is a parameter, not padding.
    fn token68(&mut self) -> Option<()> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
        {
            self.i += 1;
        }
        if self.i == start {
            return None;
        }
        while self.peek() == Some(b'=') {
            self.i += 1;
        }
        Some(())
    }

    fn value(&mut self) -> Option<String> {
        if self.peek() != Some(b'"') {
            return self.token();
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
                b'\\' => {
                    self.i += 1;
                    out.push(self.peek()?);
                    self.i += 1;
                }
                b => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn challenge(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(WWW_AUTHENTICATE, v.parse().unwrap());
        h
    }

    #[test]
    fn parses_challenges() {
        let c = challenges(
            r#"Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].params[2], ("title".into(), "Login to \"apps\"".into()));
        assert_eq!(c[1].scheme, "Basic");
        assert_eq!(c[1].params, vec![("realm".into(), "simple".into())]);
        let c = challenges("Bearer abc==, basic realm=x");
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].params, vec![("realm".into(), "x".into())]);
        assert_eq!(basic_challenge(&challenge("Basic")), Some(None));
        assert_eq!(
            basic_challenge(&challenge("BASIC Realm=\"r r\", charset=\"UTF-8\"")),
            Some(Some("r r".into()))
        );
        assert_eq!(
            basic_challenge(&challenge("Digest realm=\"x\", nonce=\"1\"")),
            None
        );
        assert_eq!(basic_challenge(&HeaderMap::new()), None);
        // Broken input ends the list without a panic.
        assert_eq!(challenges("Basic realm=\"open").len(), 1);
        assert!(challenges("=,=").is_empty());
    }

    #[test]
    fn basic_value_and_validation() {
        let c = Credentials::new("Aladdin", "open sesame").unwrap();
        assert_eq!(c.basic(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(!format!("{c:?}").contains("sesame"));
        assert_eq!(
            Credentials::new("a:b", "x").unwrap_err().kind(),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            Credentials::new("a", "x\r\n").unwrap_err().kind(),
            ErrorKind::InvalidRequest
        );
        assert!(parse_origin("ftp://a.test").is_err());
        assert_eq!(
            parse_origin("http://a.test:80/x").unwrap(),
            url("http://a.test/").origin()
        );
    }

    #[test]
    fn url_credentials_are_taken_out() {
        let mut u = url("http://us%40er:p%3Ass+1@a.test:8080/x");
        let (origin, c) = take_url_credentials(&mut u).unwrap();
        assert_eq!((c.user(), c.password()), ("us@er", "p:ss+1"));
        assert_eq!(u.as_str(), "http://a.test:8080/x");
        assert_eq!(origin, u.origin());
        assert!(take_url_credentials(&mut u).is_none());
    }

    fn store() -> AuthStore {
        let mut given = HashMap::new();
        given.insert(
            url("http://a.test/").origin(),
            Credentials::new("u", "p").unwrap(),
        );
        AuthStore::new(given, None)
    }

    #[test]
    fn challenge_then_retry_once_then_remembered() {
        let store = store();
        let u = url("http://a.test/x");
        let mut load = LoadAuth::default();
        let mut h = HeaderMap::new();
        store.authorize(&mut load, &u, &mut h);
        assert!(h.is_empty());
        let d = store.on_response(
            &mut load,
            &u,
            StatusCode::UNAUTHORIZED,
            &challenge("Basic"),
            false,
        );
        assert!(matches!(d, OnUnauthorized::Retry));
        store.authorize(&mut load, &u, &mut h);
        assert_eq!(h["authorization"], "Basic dTpw");
        store.on_response(&mut load, &u, StatusCode::OK, &HeaderMap::new(), false);
        // A later load sends them at once.
        let mut later = LoadAuth::default();
        let mut h = HeaderMap::new();
        store.authorize(&mut later, &url("http://a.test/other"), &mut h);
        assert_eq!(h["authorization"], "Basic dTpw");
        // Never to another origin.
        let mut h = HeaderMap::new();
        store.authorize(&mut later, &url("http://a.test:81/"), &mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn refused_credentials_fail_and_are_forgotten() {
        let store = store();
        let u = url("http://a.test/x");
        let mut load = LoadAuth::default();
        let mut h = HeaderMap::new();
        store.authorize(&mut load, &u, &mut h);
        store.on_response(
            &mut load,
            &u,
            StatusCode::UNAUTHORIZED,
            &challenge("Basic"),
            false,
        );
        store.authorize(&mut load, &u, &mut h);
        match store.on_response(
            &mut load,
            &u,
            StatusCode::UNAUTHORIZED,
            &challenge("Basic"),
            false,
        ) {
            OnUnauthorized::Fail(e) => assert_eq!(e.kind(), ErrorKind::Auth),
            other => panic!("{other:?}"),
        }
        assert!(store.accepted().is_empty());
    }

    #[test]
    fn no_credentials_or_no_basic_delivers() {
        let store = store();
        let other = url("http://b.test/");
        let mut load = LoadAuth::default();
        let d = store.on_response(
            &mut load,
            &other,
            StatusCode::UNAUTHORIZED,
            &challenge("Basic"),
            false,
        );
        assert!(matches!(d, OnUnauthorized::Deliver));
        let a = url("http://a.test/");
        let d = store.on_response(
            &mut load,
            &a,
            StatusCode::UNAUTHORIZED,
            &challenge("Bearer"),
            false,
        );
        assert!(matches!(d, OnUnauthorized::Deliver));
        let d = store.on_response(
            &mut load,
            &a,
            StatusCode::UNAUTHORIZED,
            &challenge("Basic"),
            true,
        );
        assert!(matches!(d, OnUnauthorized::Deliver));
    }

    #[test]
    fn authenticator_sees_the_challenge() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let store = AuthStore::new(
            HashMap::new(),
            Some(Arc::new(move |c: &AuthChallenge| {
                s.lock()
                    .unwrap()
                    .push((c.url.to_string(), c.realm.clone(), c.retry));
                Credentials::new("cb", "pw").ok()
            })),
        );
        let u = url("http://c.test/r");
        let mut load = LoadAuth::default();
        let d = store.on_response(
            &mut load,
            &u,
            StatusCode::UNAUTHORIZED,
            &challenge("Basic realm=\"zone\""),
            false,
        );
        assert!(matches!(d, OnUnauthorized::Retry));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![("http://c.test/r".to_owned(), Some("zone".to_owned()), false)]
        );
    }
}
