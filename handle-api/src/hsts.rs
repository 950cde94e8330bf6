//! HTTP Strict Transport Security (RFC 6797), Qt's strict transport
//! security: a `Strict-Transport-Security` header received over https makes
//! the host a Known HSTS Host, and from then on every http url for it (and
//! for its subdomains when the header says `includeSubDomains`) is turned
//! into https before anything is sent, on the first hop and on redirect hops
//! alike.
//!
//! A header counts only when the server sent it just now over https with
//! its certificate verified (§8.1): not over http, not while certificate
//! verification is turned off, and not from a response the cache served.
//!
//! The store is the manager's, shared by every backend; it is kept in memory
//! unless it belongs to a [`PersistentCookieJar`](crate::PersistentCookieJar),
//! which writes it to the same file as the cookies.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::HeaderMap;
use serde::{Deserialize, Serialize};
use url::{Host, Url};

/// The most hosts a store remembers; past it new hosts are not noted.
pub const MAX_HSTS_HOSTS: usize = 10_000;

/// The longest max-age honoured (about 100 years); longer ones are cut to it.
const MAX_AGE_CAP: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// One Known HSTS Host, as persisted (Qt's QHstsPolicy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HstsPolicy {
    /// The host name, lower case.
    pub host: String,
    /// Whether the policy covers the host's subdomains too.
    pub include_subdomains: bool,
    /// When the policy ends, in seconds since the Unix epoch.
    pub expires: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    expires: u64,
    include_subdomains: bool,
}

type Listener = Box<dyn Fn() + Send + Sync>;

/// The Known HSTS Hosts of a manager. Cheap to clone; clones share the hosts.
///
/// ```
/// use std::time::Duration;
/// use handle_api::HstsStore;
/// let hsts = HstsStore::new();
/// hsts.add_host("example.test", Duration::from_secs(3600), true);
/// assert!(hsts.is_known_host("www.example.test"));
/// assert!(!hsts.is_known_host("other.test"));
/// ```
#[derive(Clone, Default)]
pub struct HstsStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    hosts: Mutex<HashMap<String, Entry>>,
    /// Told after every change (a persistent jar writes its file).
    listener: OnceLock<Listener>,
}

impl fmt::Debug for HstsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HstsStore")
            .field("hosts", &self.lock().len())
            .finish()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A host name as the store keys it: lower case, without a trailing dot;
/// `None` for addresses, which are never HSTS hosts (RFC 6797 §8.1.1).
fn host_key(host: &str) -> Option<String> {
    let host = host.trim_end_matches('.');
    match Host::parse(host) {
        Ok(Host::Domain(d)) if !d.is_empty() => Some(d.to_ascii_lowercase()),
        _ => None,
    }
}

impl HstsStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        if let Some(f) = self.inner.listener.get() {
            f();
        }
    }

    /// Notes `host` as a Known HSTS Host for `max_age` (Qt's
    /// addStrictTransportSecurityHosts); a zero `max_age` forgets it. Ignored
    /// for an address or a name that does not parse.
    pub fn add_host(&self, host: &str, max_age: Duration, include_subdomains: bool) {
        let Some(key) = host_key(host) else {
            return;
        };
        self.note(key, max_age, include_subdomains);
    }

    fn note(&self, key: String, max_age: Duration, include_subdomains: bool) {
        {
            let mut hosts = self.lock();
            if max_age.is_zero() {
                if hosts.remove(&key).is_none() {
                    return;
                }
            } else {
                let now = now();
                hosts.retain(|_, e| e.expires > now);
                if hosts.len() >= MAX_HSTS_HOSTS && !hosts.contains_key(&key) {
                    return;
                }
                let expires = now.saturating_add(max_age.min(MAX_AGE_CAP).as_secs());
                hosts.insert(
                    key,
                    Entry {
                        expires,
                        include_subdomains,
                    },
                );
            }
        }
        self.changed();
    }

    /// True when loads of `host` are turned into https: it, or a superdomain
    /// noted with `includeSubDomains`, is a Known HSTS Host that has not expired.
    pub fn is_known_host(&self, host: &str) -> bool {
        let Some(key) = host_key(host) else {
            return false;
        };
        let now = now();
        let hosts = self.lock();
        let live = |name: &str| hosts.get(name).filter(|e| e.expires > now);
        // A policy for the host itself wins over its superdomains' (§8.2).
        if live(&key).is_some() {
            return true;
        }
        let mut rest = key.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if live(parent).is_some_and(|e| e.include_subdomains) {
                return true;
            }
            rest = parent;
        }
        false
    }

    /// The unexpired policies, sorted by host.
    pub fn policies(&self) -> Vec<HstsPolicy> {
        let now = now();
        let mut v: Vec<HstsPolicy> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.expires > now)
            .map(|(host, e)| HstsPolicy {
                host: host.clone(),
                include_subdomains: e.include_subdomains,
                expires: e.expires,
            })
            .collect();
        v.sort_by(|a, b| a.host.cmp(&b.host));
        v
    }

    /// Forgets every host.
    pub fn clear(&self) {
        let had = {
            let mut hosts = self.lock();
            let had = !hosts.is_empty();
            hosts.clear();
            had
        };
        if had {
            self.changed();
        }
    }

    /// Adds persisted policies, dropping expired ones and names that do not parse.
    pub(crate) fn load(&self, policies: Vec<HstsPolicy>) {
        let now = now();
        let mut hosts = self.lock();
        for p in policies {
            if p.expires <= now || hosts.len() >= MAX_HSTS_HOSTS {
                continue;
            }
            if let Some(key) = host_key(&p.host) {
                hosts.insert(
                    key,
                    Entry {
                        expires: p.expires,
                        include_subdomains: p.include_subdomains,
                    },
                );
            }
        }
    }

    /// Calls `f` after every change; set once, by the jar that persists the store.
    pub(crate) fn on_change(&self, f: impl Fn() + Send + Sync + 'static) {
        let _ = self.inner.listener.set(Box::new(f));
    }

    /// Notes the `Strict-Transport-Security` header of a response from
    /// `url`. Only a response over https counts (§8.1): over http the header
    /// is ignored, as is a header that breaks the grammar.
    pub(crate) fn observe(&self, url: &Url, headers: &HeaderMap) {
        if url.scheme() != "https" {
            return;
        }
        // Only the first field counts (§8.1).
        let Some(value) = headers.get("strict-transport-security") else {
            return;
        };
        let Some(directives) = parse(value.as_bytes()) else {
            return;
        };
        let Some(key) = url.host_str().and_then(host_key) else {
            return;
        };
        self.note(key, directives.max_age, directives.include_subdomains);
    }

    /// The https url an http url for a Known HSTS Host becomes (§8.3): the
    /// scheme is changed, an explicit port other than 80 is kept, and port
    /// 80 becomes https' default. `None` when the url stays as it is.
    pub(crate) fn upgrade(&self, url: &Url) -> Option<Url> {
        if url.scheme() != "http" {
            return None;
        }
        let host = match url.host()? {
            Host::Domain(d) => d,
            _ => return None,
        };
        if !self.is_known_host(host) {
            return None;
        }
        // The url crate stores http's port 80 as no port, so it becomes 443.
        let mut upgraded = url.clone();
        upgraded.set_scheme("https").ok()?;
        Some(upgraded)
    }
}

/// The directives of a valid `Strict-Transport-Security` value.
#[derive(Debug, PartialEq, Eq)]
struct Directives {
    max_age: Duration,
    include_subdomains: bool,
}

/// Parses a header value by RFC 6797 §6.1: `;`-separated directives,
/// names case-insensitive, values a token or a quoted string, no directive
/// twice, `max-age` required. Unknown directives are ignored.
fn parse(value: &[u8]) -> Option<Directives> {
    let text = std::str::from_utf8(value).ok()?;
    let mut max_age = None;
    let mut include_subdomains = false;
    let mut seen: Vec<String> = Vec::new();
    for directive in split_directives(text)? {
        let directive = directive.trim_matches([' ', '\t']);
        if directive.is_empty() {
            continue;
        }
        let (name, value) = match directive.split_once('=') {
            Some((n, v)) => (
                n.trim_matches([' ', '\t']),
                Some(v.trim_matches([' ', '\t'])),
            ),
            None => (directive, None),
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return None;
        }
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        seen.push(name.clone());
        match name.as_str() {
            "max-age" => {
                let v = unquote(value?)?;
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                // Too many digits for u64 is still a valid, very long max-age.
                let secs = v.parse::<u64>().unwrap_or(u64::MAX);
                max_age = Some(Duration::from_secs(secs));
            }
            "includesubdomains" => {
                if value.is_some() {
                    return None;
                }
                include_subdomains = true;
            }
            _ => {
                if let Some(v) = value {
                    unquote(v)?;
                }
            }
        }
    }
    Some(Directives {
        max_age: max_age?,
        include_subdomains,
    })
}

/// Splits on `;` outside quoted strings; `None` for an unterminated quote.
fn split_directives(text: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == ';' && !quoted {
            parts.push(&text[start..i]);
            start = i + 1;
        }
    }
    if quoted {
        return None;
    }
    parts.push(&text[start..]);
    Some(parts)
}

/// A token as is, or a quoted string without its quotes and escapes.
fn unquote(v: &str) -> Option<String> {
    match v.strip_prefix('"') {
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.push(chars.next()?),
                    '"' => return None,
                    c => out.push(c),
                }
            }
            Some(out)
        }
        None if !v.is_empty() && v.bytes().all(is_tchar) => Some(v.to_owned()),
        None => None,
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn sts(v: &str) -> Option<Directives> {
        parse(v.as_bytes())
    }

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("strict-transport-security", v.parse().unwrap());
        h
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn grammar() {
        let d = |s, i| Directives {
            max_age: Duration::from_secs(s),
            include_subdomains: i,
        };
        assert_eq!(sts("max-age=31536000"), Some(d(31536000, false)));
        assert_eq!(sts("Max-Age=\"60\"; includeSubDomains"), Some(d(60, true)));
        assert_eq!(sts(" includesubdomains ; max-age=0 ;"), Some(d(0, true)));
        assert_eq!(sts("max-age=5; preload; x=\"a;b\""), Some(d(5, false)));
        assert_eq!(
            sts("max-age=99999999999999999999999"),
            Some(d(u64::MAX, false))
        );
        for bad in [
            "",
            "includeSubDomains",
            "max-age=",
            "max-age=-1",
            "max-age=1.5",
            "max-age=1; max-age=2",
            "max-age=1; includeSubDomains; includesubdomains",
            "max-age=1; includeSubDomains=yes",
            "max-age=\"1",
            "max age=1",
        ] {
            assert_eq!(sts(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_https_responses_count() {
        let store = HstsStore::new();
        store.observe(&url("http://a.test/"), &headers("max-age=60"));
        assert!(!store.is_known_host("a.test"));
        store.observe(&url("https://127.0.0.1/"), &headers("max-age=60"));
        assert!(store.policies().is_empty());
        store.observe(&url("https://A.test./"), &headers("max-age=60"));
        assert!(store.is_known_host("a.test"));
        assert!(!store.is_known_host("sub.a.test"));
        store.observe(&url("https://a.test/"), &headers("max-age=0"));
        assert!(!store.is_known_host("a.test"));
    }

    #[test]
    fn subdomains_and_precedence() {
        let store = HstsStore::new();
        store.add_host("site.test", Duration::from_secs(60), true);
        assert!(store.is_known_host("a.b.site.test"));
        assert!(!store.is_known_host("othersite.test"));
        store.add_host("x.test", Duration::from_secs(60), false);
        assert!(!store.is_known_host("y.x.test"));
    }

    #[test]
    fn upgrades_keep_other_ports() {
        let store = HstsStore::new();
        store.add_host("a.test", Duration::from_secs(60), false);
        let up = |s: &str| store.upgrade(&url(s)).map(|u| u.to_string());
        assert_eq!(
            up("http://a.test/p?q#f").as_deref(),
            Some("https://a.test/p?q#f")
        );
        assert_eq!(up("http://a.test:80/").as_deref(), Some("https://a.test/"));
        assert_eq!(
            up("http://a.test:8080/").as_deref(),
            Some("https://a.test:8080/")
        );
        assert_eq!(up("https://a.test/"), None);
        assert_eq!(up("http://b.test/"), None);
    }

    #[test]
    fn expiry_and_listener() {
        let store = HstsStore::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        store.on_change(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        store.add_host("a.test", Duration::from_secs(1), false);
        assert!(store.is_known_host("a.test"));
        store.add_host("gone.test", Duration::ZERO, false);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        store.load(vec![
            HstsPolicy {
                host: "old.test".into(),
                include_subdomains: false,
                expires: 1,
            },
            HstsPolicy {
                host: "new.test".into(),
                include_subdomains: true,
                expires: now() + 60,
            },
        ]);
        assert!(!store.is_known_host("old.test"));
        assert!(store.is_known_host("x.new.test"));
        std::thread::sleep(Duration::from_millis(2100));
        assert!(!store.is_known_host("a.test"));
        assert_eq!(store.policies().len(), 1);
    }
}
