//! The case catalogue: named cases with stable ids, a category and the
//! capabilities they need. Each case runs against one backend, asserts its
//! own expectations and returns the trace the runner compares across backends.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use resource_handle::{
    Backend, Bytes, Capability, Event, HostOverrides, NetworkAccessManager, Recorder,
    ResourceHandle, ResourceRequest, Trace,
};

use crate::servers::{
    pki, CertKind, ClientAuth, H2Server, Origin, ProxyOptions, ProxyServer, RawServer, Step,
    TlsOrigin,
};

/// What a case returns: its trace, or why it failed.
pub type CaseResult = Result<Trace, String>;

/// One conformance case.
#[derive(Clone, Copy)]
pub struct Case {
    /// Stable id, `category.name`.
    pub id: &'static str,
    /// The category shown in the matrix.
    pub category: &'static str,
    /// Capabilities a backend needs to run the case.
    pub needs: &'static [Capability],
    /// The case itself.
    pub run: fn(&mut Ctx) -> CaseResult,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("id", &self.id).finish()
    }
}

/// Every case, in catalogue order.
pub fn catalogue() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(request::cases());
    all.extend(response::cases());
    all.extend(streaming::cases());
    all.extend(connection::cases());
    all.extend(cancel::cases());
    all.extend(timeout::cases());
    all.extend(errors::cases());
    all.extend(scheduling::cases());
    all.extend(redirect::cases());
    all.extend(events::cases());
    all.extend(schemes::cases());
    all.extend(decoding::cases());
    all.extend(metadata::cases());
    all.extend(faults_framing::cases());
    all.extend(faults_head::cases());
    all.extend(faults::cases());
    all.extend(limits::cases());
    all.extend(bad_input::cases());
    all.extend(cookies::cases());
    all.extend(auth::cases());
    all.extend(hsts::cases());
    all.extend(cache::cases());
    all.extend(tls::cases());
    all.extend(http2::cases());
    all.extend(proxy::cases());
    all
}

/// Declares cases of one category: `cases!("request"; "request.x" => fn_x, ...)`.
macro_rules! cases {
    ($category:literal; $($id:literal => $run:path $([$($cap:expr),*])?),* $(,)?) => {
        pub(super) fn cases() -> Vec<super::Case> {
            vec![$(super::Case {
                id: $id,
                category: $category,
                needs: &[resource_handle::Capability::Http1 $($(, $cap)*)?],
                run: $run,
            }),*]
        }
    };
}

/// Fails the case with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// The values of header `name` in an `/echo` answer, in the order received.
pub fn echo_headers<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h[0] == name)
        .filter_map(|h| h[1].as_str())
        .collect()
}

/// Fails the case unless the two values are equal.
macro_rules! ensure_eq {
    ($left:expr, $right:expr $(,)?) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            return Err(format!(
                "{} was {:?}, expected {:?}",
                stringify!($left),
                l,
                r
            ));
        }
    }};
}

// The case modules come after the macros they use.
mod auth;
mod bad_input;
mod cache;
mod cancel;
mod connection;
mod cookies;
mod decoding;
mod errors;
mod events;
mod faults;
mod faults_framing;
mod faults_head;
mod hsts;
mod http2;
mod limits;
mod metadata;
mod proxy;
mod redirect;
mod request;
mod response;
mod scheduling;
mod schemes;
mod streaming;
mod timeout;
mod tls;

/// Host names the cases use; they are mapped to 127.0.0.1 and nothing else
/// ever reaches a resolver.
pub const ORIGIN_HOST: &str = "origin.test";
/// Host name of raw servers.
pub const RAW_HOST: &str = "raw.test";
/// Host name of the second origin (cross-origin cases).
pub const OTHER_HOST: &str = "other.test";
/// Host name of TLS origins (every test certificate but the wrong-host one names it).
pub const TLS_HOST: &str = "tls.test";
/// Host name of HTTP/2 servers.
pub const H2_HOST: &str = "h2.test";

/// The environment of one case run on one backend.
pub struct Ctx {
    backend: Backend,
    overrides: HostOverrides,
    origin: Option<Origin>,
    raws: Vec<RawServer>,
    ports: Vec<u16>,
    manager: Option<NetworkAccessManager>,
    other: Option<Origin>,
    tls_origins: Vec<TlsOrigin>,
    h2_servers: Vec<H2Server>,
    proxies: Vec<ProxyServer>,
}

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A load's trace together with its body.
#[derive(Debug)]
pub struct Fetched {
    /// The trace.
    pub trace: Trace,
    /// The body delivered (kept only up to 64 MiB).
    pub body: Vec<u8>,
}

impl Fetched {
    /// The body parsed as JSON (for `/echo`).
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )
        })
    }
}

impl Ctx {
    /// A context for `backend`.
    pub fn new(backend: Backend) -> Ctx {
        let mut overrides = HostOverrides::default();
        // Names that are not mapped fail with `dns` instead of reaching the system resolver.
        overrides.only(true);
        Ctx {
            backend,
            overrides,
            origin: None,
            raws: Vec::new(),
            ports: Vec::new(),
            manager: None,
            other: None,
            tls_origins: Vec::new(),
            h2_servers: Vec::new(),
            proxies: Vec::new(),
        }
    }

    /// The backend under test.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Ports of the servers this run started (the runner blanks them in traces).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    fn map(&mut self, host: &str, port: u16) {
        self.overrides.insert(host, port, vec![LOOPBACK]);
        self.ports.push(port);
        // Servers started after the manager need a manager that knows them.
        self.manager = None;
        // Proxies reach names through the same table.
        for p in &self.proxies {
            p.set_hosts(self.overrides.clone());
        }
    }

    /// The origin server, started on first use and mapped as `origin.test`.
    pub fn origin(&mut self) -> Result<&Origin, String> {
        if self.origin.is_none() {
            let o = Origin::start().map_err(|e| format!("origin did not start: {e}"))?;
            self.map(ORIGIN_HOST, o.port());
            self.origin = Some(o);
        }
        Ok(self.origin.as_ref().expect("started above"))
    }

    /// A url on the origin, e.g. `origin_url("/echo")`.
    pub fn origin_url(&mut self, path: &str) -> Result<String, String> {
        let port = self.origin()?.port();
        Ok(format!("http://{ORIGIN_HOST}:{port}{path}"))
    }

    /// Starts a raw server with `script` and returns its base url (`http://raw.test:PORT`).
    pub fn raw(&mut self, script: Vec<Step>) -> Result<String, String> {
        let s = RawServer::start(script).map_err(|e| format!("raw server did not start: {e}"))?;
        let port = s.port();
        self.map(RAW_HOST, port);
        self.raws.push(s);
        Ok(format!("http://{RAW_HOST}:{port}"))
    }

    /// Maps an extra host name (for dns and connect cases).
    pub fn map_host(&mut self, host: &str, port: u16, addrs: Vec<IpAddr>) {
        self.overrides.insert(host, port, addrs);
        self.ports.push(port);
        self.manager = None;
        for p in &self.proxies {
            p.set_hosts(self.overrides.clone());
        }
    }

    /// Registers a port the runner blanks in traces (a port a case closed
    /// on purpose, say).
    pub fn register_port(&mut self, port: u16) {
        self.ports.push(port);
    }

    /// The test CA's certificate as PEM (see [`crate::servers::pki`]).
    pub fn test_ca_pem(&self) -> Result<String, String> {
        Ok(pki()?.ca_pem().to_owned())
    }

    /// Starts a TLS origin presenting `kind`'s certificate, maps it as
    /// `tls.test`, and returns its base url (`https://tls.test:PORT`). The
    /// same port answers plain HTTP (`http://tls.test:PORT`).
    pub fn tls_origin(&mut self, kind: CertKind) -> Result<String, String> {
        self.tls_origin_with(kind, ClientAuth::None)
    }

    /// [`Ctx::tls_origin`] asking for a client certificate as `client_auth` says.
    pub fn tls_origin_with(
        &mut self,
        kind: CertKind,
        client_auth: ClientAuth,
    ) -> Result<String, String> {
        let o = TlsOrigin::start(kind, client_auth)?;
        let port = o.port();
        self.map(TLS_HOST, port);
        self.tls_origins.push(o);
        Ok(format!("https://{TLS_HOST}:{port}"))
    }

    /// The TLS origin started last.
    pub fn tls_server(&self) -> Result<&TlsOrigin, String> {
        self.tls_origins
            .last()
            .ok_or_else(|| "no TLS origin was started".to_owned())
    }

    /// Every TLS origin started, in order.
    pub fn tls_servers(&self) -> &[TlsOrigin] {
        &self.tls_origins
    }

    /// Starts an HTTP/2 server over TLS (ALPN `h2` and `http/1.1`, the valid
    /// certificate), maps it as `h2.test`, and returns `https://h2.test:PORT`.
    pub fn h2_tls(&mut self) -> Result<String, String> {
        let s = H2Server::start_tls(CertKind::Valid)?;
        let port = s.port();
        self.map(H2_HOST, port);
        self.h2_servers.push(s);
        Ok(format!("https://{H2_HOST}:{port}"))
    }

    /// Starts a cleartext HTTP/2 server (HTTP/1.1 and prior knowledge), maps
    /// it as `h2.test`, and returns `http://h2.test:PORT`.
    pub fn h2_cleartext(&mut self) -> Result<String, String> {
        let s = H2Server::start_cleartext()?;
        let port = s.port();
        self.map(H2_HOST, port);
        self.h2_servers.push(s);
        Ok(format!("http://{H2_HOST}:{port}"))
    }

    /// The HTTP/2 server started last.
    pub fn h2_server(&self) -> Result<&H2Server, String> {
        self.h2_servers
            .last()
            .ok_or_else(|| "no HTTP/2 server was started".to_owned())
    }

    /// Starts a test proxy that reaches every name this context maps (now
    /// and later) and returns its address, `127.0.0.1:PORT` (an IP, so no
    /// backend needs to resolve the proxy's name).
    pub fn proxy(&mut self, options: ProxyOptions) -> Result<String, String> {
        let p = ProxyServer::start(options, self.overrides.clone())
            .map_err(|e| format!("proxy did not start: {e}"))?;
        let port = p.port();
        self.ports.push(port);
        self.proxies.push(p);
        Ok(format!("127.0.0.1:{port}"))
    }

    /// The proxy started last.
    pub fn proxy_server(&self) -> Result<&ProxyServer, String> {
        self.proxies
            .last()
            .ok_or_else(|| "no proxy was started".to_owned())
    }

    /// A manager that trusts the test CA and nothing else (no system
    /// roots), further configured by `configure`; like
    /// [`Ctx::manager_with`], start the servers first.
    pub fn tls_manager_with(
        &mut self,
        configure: impl FnOnce(
            resource_handle::ManagerBuilder,
        ) -> resource_handle::Result<resource_handle::ManagerBuilder>,
    ) -> Result<NetworkAccessManager, String> {
        let pem = self.test_ca_pem()?;
        self.manager_with(|b| {
            let b = b
                .tls_system_roots(false)
                .add_root_certificates_pem(pem.as_bytes())?;
            configure(b)
        })
    }

    /// [`Ctx::tls_manager_with`] with nothing more.
    pub fn tls_manager(&mut self) -> Result<NetworkAccessManager, String> {
        self.tls_manager_with(Ok)
    }

    /// Runs `req` on `manager` to its end, keeping the body.
    pub fn fetch_with(&self, manager: &NetworkAccessManager, req: ResourceRequest) -> Fetched {
        self.drain(manager.load(req))
    }

    /// The manager for this backend, with every server's name mapped.
    pub fn manager(&mut self) -> Result<NetworkAccessManager, String> {
        if let Some(m) = &self.manager {
            return Ok(m.clone());
        }
        let m = NetworkAccessManager::builder()
            .host_overrides(self.overrides.clone())
            .build(self.backend)
            .map_err(|e| format!("manager for {} did not start: {e}", self.backend))?;
        self.manager = Some(m.clone());
        Ok(m)
    }

    /// A second origin, started on first use and mapped as `other.test`: a
    /// different origin from `origin.test` for cross-origin cases.
    pub fn other_origin(&mut self) -> Result<&Origin, String> {
        if self.other.is_none() {
            let o = Origin::start().map_err(|e| format!("second origin did not start: {e}"))?;
            self.map(OTHER_HOST, o.port());
            self.other = Some(o);
        }
        Ok(self.other.as_ref().expect("started above"))
    }

    /// A url on the second origin, e.g. `other_url("/echo")`.
    pub fn other_url(&mut self, path: &str) -> Result<String, String> {
        let port = self.other_origin()?.port();
        Ok(format!("http://{OTHER_HOST}:{port}{path}"))
    }

    /// A manager for this backend configured by `configure`, with every
    /// server started so far mapped. It is not cached: start the servers first.
    pub fn manager_with(
        &mut self,
        configure: impl FnOnce(
            resource_handle::ManagerBuilder,
        ) -> resource_handle::Result<resource_handle::ManagerBuilder>,
    ) -> Result<NetworkAccessManager, String> {
        let builder = NetworkAccessManager::builder().host_overrides(self.overrides.clone());
        configure(builder)
            .and_then(|b| b.build(self.backend))
            .map_err(|e| format!("manager for {} did not start: {e}", self.backend))
    }

    /// Starts `req` and returns its handle.
    pub fn start(&mut self, req: ResourceRequest) -> Result<ResourceHandle, String> {
        Ok(self.manager()?.load(req))
    }

    /// Runs `req` to its end, keeping the body.
    pub fn fetch(&mut self, req: ResourceRequest) -> Result<Fetched, String> {
        let handle = self.start(req)?;
        Ok(self.drain(handle))
    }

    /// Runs a started handle to its end, keeping the body.
    pub fn drain(&self, mut handle: ResourceHandle) -> Fetched {
        let mut rec = Recorder::new(self.backend.name(), &handle);
        let mut body = Vec::new();
        while let Some(ev) = handle.next_event_blocking() {
            if let Event::Data(d) = &ev {
                if body.len() < 64 << 20 {
                    body.extend_from_slice(d);
                }
            }
            rec.observe(&ev);
        }
        Fetched {
            trace: rec.finish(),
            body,
        }
    }

    /// GETs `path` on the origin.
    pub fn get(&mut self, path: &str) -> Result<Fetched, String> {
        let url = self.origin_url(path)?;
        self.fetch(build(ResourceRequest::get(url))?)
    }
}

/// Builds a request, turning a build error into a case failure.
pub fn build(b: resource_handle::RequestBuilder) -> Result<ResourceRequest, String> {
    b.build().map_err(|e| format!("request did not build: {e}"))
}

/// Fails unless the trace has a response with `status`.
pub fn expect_status(t: &Trace, status: u16) -> Result<(), String> {
    if let Some(e) = &t.error {
        return Err(format!(
            "expected status {status}, got error {}: {}",
            e.kind, e.message
        ));
    }
    ensure_eq!(t.status, Some(status));
    ensure!(
        t.events.last().map(String::as_str) == Some("finished"),
        "load did not finish: events {:?}",
        t.events
    );
    Ok(())
}

/// Fails unless the trace ended with an error of `kind`.
pub fn expect_error(t: &Trace, kind: &str) -> Result<(), String> {
    match &t.error {
        Some(e) if e.kind == kind => {}
        Some(e) => {
            return Err(format!(
                "expected a {kind} error, got {}: {}",
                e.kind, e.message
            ))
        }
        None => {
            return Err(format!(
                "expected a {kind} error, got status {:?} and {} body bytes",
                t.status, t.body_bytes
            ))
        }
    }
    ensure!(
        t.events.last().map(String::as_str) == Some("failed"),
        "events do not end with failed: {:?}",
        t.events
    );
    Ok(())
}

/// Hex SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Waits up to `limit` for `cond`, polling.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Reads a chunk, turning errors into case failures.
pub fn next_chunk(h: &mut ResourceHandle) -> Result<Option<Bytes>, String> {
    h.chunk_blocking().map_err(|e| format!("chunk failed: {e}"))
}
