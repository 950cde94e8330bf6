//! Cookies (RFC 6265), kept by the manager for every backend alike: the
//! backends' own cookie engines stay off, so a cookie is stored and sent by
//! the same rules whichever library carries the load.
//!
//! The rules come from the `cookie_store` crate (parsing, domain and path
//! matching, host-only, secure, expiry by Max-Age and Expires); this module
//! adds what it leaves to the user agent: public suffixes are refused (the
//! list is compiled in by `psl`, nothing is fetched at run time), a Secure
//! cookie is only accepted from https, the `__Secure-` and `__Host-` name
//! prefixes are enforced, sizes are bounded, and the Cookie header is built
//! in a stable order (longer paths first, then the order the cookies were
//! first stored).
//!
//! [`PersistentCookieJar`] keeps the jar, and the HSTS policies learnt with
//! it, in one file that is loaded at start and rewritten atomically after
//! each change (a temporary file in the same directory, flushed to disk,
//! then renamed over the old one), so a crash leaves either the old file or
//! the new one, never a torn one.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cookie_store::{Cookie as StoredCookie, CookieDomain, CookieStore, RawCookie};
use http::header::HeaderValue;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, ErrorKind, Result};
use crate::hsts::{HstsPolicy, HstsStore};

/// The largest name plus value accepted (RFC 6265bis §5.6, and browsers).
pub const MAX_COOKIE_BYTES: usize = 4096;
/// The most cookies kept for one domain; past it new ones are refused.
pub const MAX_COOKIES_PER_DOMAIN: usize = 50;
/// The most cookies kept in one jar; past it new ones are refused.
pub const MAX_COOKIES_TOTAL: usize = 3000;

/// Where a manager keeps cookies: Qt's QNetworkCookieJar.
///
/// The manager calls [`CookieJar::set_cookies`] with the `Set-Cookie` fields
/// of every response it receives, redirect responses included, and
/// [`CookieJar::cookies`] before every request it sends, each time with the
/// url of that hop; a request whose `allow_cookies` is false calls neither.
/// Both run on the thread that polls the load, so they should return quickly.
pub trait CookieJar: Send + Sync {
    /// Stores the cookies of `set_cookie` (the values of the `Set-Cookie`
    /// fields of one response, in received order) received from `url`.
    /// Cookies the rules refuse are dropped silently, as a browser does.
    fn set_cookies(&self, set_cookie: &mut dyn Iterator<Item = &HeaderValue>, url: &Url);

    /// The `Cookie` header to send with a request to `url`, or `None` when
    /// no cookie applies.
    fn cookies(&self, url: &Url) -> Option<HeaderValue>;

    /// The HSTS store persisted together with this jar, if it keeps one.
    /// A manager given this jar uses that store (unless it was given
    /// another with [`ManagerBuilder::hsts_store`](crate::ManagerBuilder::hsts_store)),
    /// so the HSTS policies it learns survive a restart with the cookies.
    fn hsts_store(&self) -> Option<HstsStore> {
        None
    }
}

/// An in-memory cookie jar; the manager's default.
///
/// ```
/// use handle_api::{CookieJar, MemoryCookieJar, Url};
/// let jar = MemoryCookieJar::new();
/// let url = Url::parse("http://example.test/a/b").unwrap();
/// jar.set_cookies(&mut [&"id=1; Path=/a".parse().unwrap()].into_iter(), &url);
/// assert_eq!(jar.cookies(&url).unwrap(), "id=1");
/// assert!(jar.cookies(&Url::parse("http://example.test/").unwrap()).is_none());
/// ```
#[derive(Default)]
pub struct MemoryCookieJar {
    store: Mutex<CookieStore>,
}

impl fmt::Debug for MemoryCookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCookieJar")
            .field("cookies", &self.len())
            .finish()
    }
}

impl MemoryCookieJar {
    /// An empty jar.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, CookieStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The number of unexpired cookies held.
    pub fn len(&self) -> usize {
        self.lock().iter_unexpired().count()
    }

    /// True when the jar holds no unexpired cookie.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every cookie.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Stores cookies and tells whether the jar changed.
    fn store(&self, set_cookie: &mut dyn Iterator<Item = &HeaderValue>, url: &Url) -> bool {
        let mut store = self.lock();
        let mut changed = false;
        for value in set_cookie {
            if let Some(raw) = accept(&store, value, url) {
                changed |= store.insert_raw(&raw, url).is_ok();
            }
        }
        changed
    }

    /// The unexpired cookies to persist.
    fn snapshot(&self, session_too: bool) -> Vec<StoredCookie<'static>> {
        self.lock()
            .iter_unexpired()
            .filter(|c| session_too || c.is_persistent())
            .cloned()
            .collect()
    }

    fn from_cookies(cookies: Vec<StoredCookie<'static>>) -> Self {
        let store = CookieStore::from_cookies(
            cookies.into_iter().map(Ok::<_, std::convert::Infallible>),
            false,
        )
        .unwrap_or_default();
        MemoryCookieJar {
            store: Mutex::new(store),
        }
    }
}

impl CookieJar for MemoryCookieJar {
    fn set_cookies(&self, set_cookie: &mut dyn Iterator<Item = &HeaderValue>, url: &Url) {
        self.store(set_cookie, url);
    }

    fn cookies(&self, url: &Url) -> Option<HeaderValue> {
        let store = self.lock();
        let mut matching = store.matches(url);
        // RFC 6265 §5.4: longer paths first; the sort is stable, so equal
        // paths keep the order in which they were first stored.
        matching.sort_by_key(|c| std::cmp::Reverse(String::from(&c.path).len()));
        let pairs: Vec<String> = matching
            .iter()
            .map(|c| {
                let (name, value) = c.name_value();
                if name.is_empty() {
                    value.to_owned()
                } else {
                    format!("{name}={value}")
                }
            })
            .collect();
        if pairs.is_empty() {
            return None;
        }
        HeaderValue::from_str(&pairs.join("; ")).ok()
    }
}

/// Parses one Set-Cookie value and applies the rules `cookie_store` leaves
/// to the user agent; `None` when the cookie is refused.
fn accept(store: &CookieStore, value: &HeaderValue, url: &Url) -> Option<RawCookie<'static>> {
    let text = std::str::from_utf8(value.as_bytes()).ok()?;
    let mut raw = RawCookie::parse(text.to_owned()).ok()?;
    let (name, val) = raw.name_value();
    if name.len() + val.len() > MAX_COOKIE_BYTES {
        return None;
    }
    let host = url.host_str()?;
    let secure_origin = url.scheme() == "https";
    if let Some(domain) = raw.domain() {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        // RFC 6265 §5.3 step 5: a public suffix may only name the host itself.
        if !domain.is_empty() && is_public_suffix(&domain) {
            if domain == host {
                raw.unset_domain();
            } else {
                return None;
            }
        }
    }
    // RFC 6265bis §5.7: a Secure cookie is only set from a secure origin.
    let secure = raw.secure() == Some(true);
    if secure && !secure_origin {
        return None;
    }
    // The name prefixes of RFC 6265bis §4.1.3.
    let name = raw.name();
    if starts_with_ignore_case(name, "__Secure-") && !(secure && secure_origin) {
        return None;
    }
    if starts_with_ignore_case(name, "__Host-")
        && !(secure && secure_origin && raw.domain().is_none() && raw.path() == Some("/"))
    {
        return None;
    }
    // RFC 6265bis §5.7 step 16: an insecure origin may not overwrite a
    // secure cookie (leave secure cookies alone).
    if !secure_origin && shadows_secure(store, &raw, url) {
        return None;
    }
    if !fits(store, &raw, url) {
        return None;
    }
    Some(raw.into_owned())
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// True when `domain` (lower case, no trailing dot) is a public suffix such
/// as `com` or `co.uk`. Unknown top-level names count as suffixes too (the
/// list's `*` rule), as in browsers.
pub(crate) fn is_public_suffix(domain: &str) -> bool {
    // The list holds ASCII (punycode) names; turn a Unicode name into one.
    let ascii = match url::Host::parse(domain) {
        Ok(url::Host::Domain(d)) => d,
        // An address is no suffix, and a name that does not parse matches nothing.
        _ => return false,
    };
    psl::suffix_str(&ascii) == Some(ascii.as_str())
}

/// True when a secure cookie of the same name covers the new cookie's
/// domain and path.
fn shadows_secure(store: &CookieStore, raw: &RawCookie<'_>, url: &Url) -> bool {
    let Ok(new) = StoredCookie::try_from_raw_cookie(raw, url) else {
        return false;
    };
    let new_domain = domain_name(&new.domain);
    let new_path = String::from(&new.path);
    store.iter_unexpired().any(|old| {
        old.secure() == Some(true)
            && old.name() == raw.name()
            && domains_overlap(&domain_name(&old.domain), &new_domain)
            && path_matches(&new_path, &String::from(&old.path))
    })
}

fn domain_name(d: &CookieDomain) -> String {
    match d {
        CookieDomain::HostOnly(h) | CookieDomain::Suffix(h) => h.clone(),
        CookieDomain::NotPresent | CookieDomain::Empty => String::new(),
    }
}

fn domains_overlap(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| x == y || x.ends_with(&format!(".{y}"));
    under(a, b) || under(b, a)
}

/// RFC 6265 §5.1.4 path-match of `request` against `cookie`.
fn path_matches(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie)
            && (cookie.ends_with('/') || request[cookie.len()..].starts_with('/')))
}

/// True when storing `raw` keeps the jar within its bounds (replacing a
/// cookie of the same name, domain and path always does).
fn fits(store: &CookieStore, raw: &RawCookie<'_>, url: &Url) -> bool {
    let Ok(new) = StoredCookie::try_from_raw_cookie(raw, url) else {
        return true;
    };
    let domain = domain_name(&new.domain);
    let path = String::from(&new.path);
    if store.contains(&domain, &path, raw.name()) {
        return true;
    }
    let mut total = 0;
    let mut same_domain = 0;
    for c in store.iter_unexpired() {
        total += 1;
        if domain_name(&c.domain) == domain {
            same_domain += 1;
        }
    }
    total < MAX_COOKIES_TOTAL && same_domain < MAX_COOKIES_PER_DOMAIN
}

/// The file a [`PersistentCookieJar`] writes: its cookies and HSTS policies.
#[derive(Serialize, Deserialize)]
struct JarFile {
    format: String,
    cookies: Vec<StoredCookie<'static>>,
    #[serde(default)]
    hsts: Vec<HstsPolicy>,
}

const FORMAT: &str = "resource-handle-jar/1";

/// A cookie jar kept in a file, with the HSTS policies the manager learns:
/// loaded when opened, and written atomically after every change, so it
/// survives a restart and a crash never leaves a torn file.
///
/// Cookies without Max-Age or Expires end with the session (RFC 6265 §5.3)
/// and are not written, unless [`PersistentCookieJar::keep_session_cookies`]
/// asks for them (as a command-line tool that is one session per run does).
///
/// ```no_run
/// # fn demo(factory: impl handle_api::BackendFactory) -> handle_api::Result<()> {
/// use std::sync::Arc;
/// use handle_api::{NetworkAccessManager, PersistentCookieJar};
/// let jar = Arc::new(PersistentCookieJar::open("cookies.json")?);
/// let nam = NetworkAccessManager::builder().cookie_jar(jar).build(factory)?;
/// # let _ = nam; Ok(()) }
/// ```
pub struct PersistentCookieJar {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    jar: MemoryCookieJar,
    hsts: HstsStore,
    keep_session: std::sync::atomic::AtomicBool,
    /// Serializes writers, so two saves never race on the rename.
    writing: Mutex<Option<Error>>,
}

impl fmt::Debug for PersistentCookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistentCookieJar")
            .field("path", &self.shared.path)
            .field("cookies", &self.shared.jar.len())
            .finish()
    }
}

impl PersistentCookieJar {
    /// Opens the jar kept in `path`: an absent file is an empty jar; a file
    /// that is not a jar is an `io` error (it is never overwritten by an
    /// empty one). Expired cookies and HSTS policies are dropped on load.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = match fs::read(&path) {
            Ok(bytes) => Some(serde_json::from_slice::<JarFile>(&bytes).map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("{} is not a cookie jar file: {e}", path.display()),
                )
                .with_source(e)
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("cannot read the cookie jar {}: {e}", path.display()),
                )
                .with_source(e))
            }
        };
        let (cookies, policies) = match file {
            Some(f) if f.format == FORMAT => (f.cookies, f.hsts),
            Some(f) => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "{} has the unknown jar format {:?}",
                        path.display(),
                        f.format
                    ),
                ))
            }
            None => (Vec::new(), Vec::new()),
        };
        let hsts = HstsStore::new();
        hsts.load(policies);
        let shared = Arc::new(Shared {
            path,
            jar: MemoryCookieJar::from_cookies(cookies),
            hsts: hsts.clone(),
            keep_session: std::sync::atomic::AtomicBool::new(false),
            writing: Mutex::new(None),
        });
        // The store holds only a weak link back, so dropping the jar frees both.
        let weak = Arc::downgrade(&shared);
        hsts.on_change(move || {
            if let Some(shared) = weak.upgrade() {
                shared.save_quietly();
            }
        });
        Ok(PersistentCookieJar { shared })
    }

    /// Also writes session cookies (those without Max-Age or Expires), so
    /// the next process that opens the file continues the session, as curl's
    /// cookie jar does. Off by default.
    pub fn keep_session_cookies(self, keep: bool) -> Self {
        self.shared.keep_session.store(keep, Ordering::SeqCst);
        self
    }

    /// The file the jar is kept in.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The cookies in memory.
    pub fn jar(&self) -> &MemoryCookieJar {
        &self.shared.jar
    }

    /// The HSTS store kept in the same file.
    pub fn hsts(&self) -> &HstsStore {
        &self.shared.hsts
    }

    /// Writes the file now. The jar also writes it after every change; a
    /// failure there is kept and returned by the next call of this method.
    pub fn save(&self) -> Result<()> {
        let mut last = self.shared.lock_writer();
        if let Some(e) = last.take() {
            // Try again: the failure may have passed (a full disk freed).
            if self.shared.write().is_err() {
                return Err(e);
            }
            return Ok(());
        }
        self.shared.write()
    }
}

impl Shared {
    fn lock_writer(&self) -> MutexGuard<'_, Option<Error>> {
        self.writing.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save_quietly(&self) {
        let mut last = self.lock_writer();
        if let Err(e) = self.write() {
            *last = Some(e);
        }
    }

    /// Writes the jar to a temporary file beside the target, flushes it to
    /// disk and renames it over the target. Callers hold `writing`.
    fn write(&self) -> Result<()> {
        let file = JarFile {
            format: FORMAT.to_owned(),
            cookies: self.jar.snapshot(self.keep_session.load(Ordering::SeqCst)),
            hsts: self.hsts.policies(),
        };
        let io_err = |what: &str, e: std::io::Error| {
            Error::new(
                ErrorKind::Io,
                format!("cannot {what} the cookie jar {}: {e}", self.path.display()),
            )
            .with_source(e)
        };
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode the jar: {e}")))?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "jar".into());
        let tmp = dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("write", e));
        }
        // The rename itself is durable once the directory is flushed; not
        // every platform can open a directory for that, so it is best effort.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl CookieJar for PersistentCookieJar {
    fn set_cookies(&self, set_cookie: &mut dyn Iterator<Item = &HeaderValue>, url: &Url) {
        if self.shared.jar.store(set_cookie, url) {
            self.shared.save_quietly();
        }
    }

    fn cookies(&self, url: &Url) -> Option<HeaderValue> {
        self.shared.jar.cookies(url)
    }

    fn hsts_store(&self) -> Option<HstsStore> {
        Some(self.shared.hsts.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn set(jar: &dyn CookieJar, from: &str, values: &[&str]) {
        let values: Vec<HeaderValue> = values.iter().map(|v| v.parse().unwrap()).collect();
        jar.set_cookies(&mut values.iter(), &url(from));
    }

    fn sent(jar: &dyn CookieJar, to: &str) -> Option<String> {
        jar.cookies(&url(to))
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn host_only_and_domain_cookies() {
        let jar = MemoryCookieJar::new();
        set(
            &jar,
            "http://a.site.test/",
            &["h=1", "d=2; Domain=site.test"],
        );
        assert_eq!(
            sent(&jar, "http://a.site.test/").as_deref(),
            Some("h=1; d=2")
        );
        assert_eq!(sent(&jar, "http://b.site.test/").as_deref(), Some("d=2"));
        assert_eq!(sent(&jar, "http://site.test/").as_deref(), Some("d=2"));
        assert_eq!(sent(&jar, "http://other.test/"), None);
        // A Domain the host is not under is refused.
        set(&jar, "http://a.site.test/", &["x=1; Domain=other.test"]);
        assert_eq!(sent(&jar, "http://other.test/"), None);
    }

    #[test]
    fn public_suffixes_are_refused() {
        let jar = MemoryCookieJar::new();
        set(
            &jar,
            "http://www.example.co.uk/",
            &[
                "a=1; Domain=co.uk",
                "b=2; Domain=example.co.uk",
                "c=3; Domain=.UK",
            ],
        );
        assert_eq!(sent(&jar, "http://other.co.uk/"), None);
        assert_eq!(
            sent(&jar, "http://x.example.co.uk/").as_deref(),
            Some("b=2")
        );
        // A Domain equal to the host is host-only, even when it is a suffix.
        set(&jar, "http://github.io/", &["s=1; Domain=github.io"]);
        assert_eq!(sent(&jar, "http://github.io/").as_deref(), Some("s=1"));
        assert_eq!(sent(&jar, "http://x.github.io/"), None);
        assert!(is_public_suffix("com") && is_public_suffix("test"));
        assert!(!is_public_suffix("example.com") && !is_public_suffix("127.0.0.1"));
    }

    #[test]
    fn paths_order_and_replacement() {
        let jar = MemoryCookieJar::new();
        set(
            &jar,
            "http://a.test/dir/page",
            &["short=1; Path=/", "long=2; Path=/dir/sub", "default=3"],
        );
        // default-path of /dir/page is /dir.
        assert_eq!(
            sent(&jar, "http://a.test/dir/sub/x").as_deref(),
            Some("long=2; default=3; short=1")
        );
        assert_eq!(sent(&jar, "http://a.test/dirt").as_deref(), Some("short=1"));
        set(&jar, "http://a.test/", &["short=9; Path=/"]);
        assert_eq!(sent(&jar, "http://a.test/").as_deref(), Some("short=9"));
    }

    #[test]
    fn secure_rules() {
        let jar = MemoryCookieJar::new();
        set(
            &jar,
            "http://a.test/",
            &["s=1; Secure", "__Secure-x=1; Secure"],
        );
        assert_eq!(sent(&jar, "https://a.test/"), None);
        set(
            &jar,
            "https://a.test/",
            &[
                "s=1; Secure",
                "__Host-ok=1; Secure; Path=/",
                "__Host-bad=1; Secure; Path=/; Domain=a.test",
                "__Secure-no=1",
            ],
        );
        assert_eq!(
            sent(&jar, "https://a.test/").as_deref(),
            Some("s=1; __Host-ok=1")
        );
        assert_eq!(sent(&jar, "http://a.test/"), None);
        // http may not overwrite the secure cookie.
        set(&jar, "http://a.test/", &["s=plain"]);
        assert_eq!(sent(&jar, "http://a.test/"), None);
    }

    #[test]
    fn expiry_and_deletion() {
        let jar = MemoryCookieJar::new();
        set(
            &jar,
            "http://a.test/",
            &[
                "a=1",
                "b=2; Max-Age=1",
                "old=1; Expires=Thu, 01 Jan 1970 00:00:01 GMT",
            ],
        );
        assert_eq!(sent(&jar, "http://a.test/").as_deref(), Some("a=1; b=2"));
        set(&jar, "http://a.test/", &["a=; Max-Age=0"]);
        assert_eq!(sent(&jar, "http://a.test/").as_deref(), Some("b=2"));
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(sent(&jar, "http://a.test/"), None);
    }

    #[test]
    fn garbage_and_oversized_are_dropped() {
        let jar = MemoryCookieJar::new();
        let big = format!("big={}", "x".repeat(MAX_COOKIE_BYTES));
        set(&jar, "http://a.test/", &["=", ";;", &big, "ok=1"]);
        assert_eq!(sent(&jar, "http://a.test/").as_deref(), Some("ok=1"));
        for i in 0..MAX_COOKIES_PER_DOMAIN + 5 {
            set(&jar, "http://a.test/", &[&format!("n{i}=1")]);
        }
        assert_eq!(jar.len(), MAX_COOKIES_PER_DOMAIN);
    }

    fn temp_path(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("handle-api-cookies-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir.join("jar.json")
    }

    #[test]
    fn persists_across_open() {
        let path = temp_path("persist");
        {
            let jar = PersistentCookieJar::open(&path).unwrap();
            set(&jar, "http://a.test/", &["p=1; Max-Age=3600", "session=1"]);
            jar.hsts()
                .add_host("a.test", Duration::from_secs(3600), true);
            jar.save().unwrap();
        }
        let jar = PersistentCookieJar::open(&path).unwrap();
        assert_eq!(sent(&jar, "http://a.test/").as_deref(), Some("p=1"));
        assert!(jar.hsts_store().unwrap().is_known_host("sub.a.test"));
        // No temporary file is left behind.
        let dir = path.parent().unwrap();
        assert_eq!(fs::read_dir(dir).unwrap().count(), 1);

        let jar = jar.keep_session_cookies(true);
        set(&jar, "http://a.test/", &["session=2"]);
        let jar = PersistentCookieJar::open(&path).unwrap();
        assert_eq!(
            sent(&jar, "http://a.test/").as_deref(),
            Some("p=1; session=2")
        );
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_file_that_is_not_a_jar_is_an_error() {
        let path = temp_path("corrupt");
        fs::write(&path, b"{\"format\": \"resource-handle-jar/1\", \"cook").unwrap();
        let e = PersistentCookieJar::open(&path).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
        // The bad file is left as it was.
        assert!(fs::read(&path).unwrap().ends_with(b"cook"));
        fs::write(&path, b"{\"format\": \"other/9\", \"cookies\": []}").unwrap();
        assert_eq!(
            PersistentCookieJar::open(&path).unwrap_err().kind(),
            ErrorKind::Io
        );
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }
}
