//! The resource-handle backend over hyper 1.x.
//!
//! [`HyperHandleManager`] puts each exchange on the wire with hyper's
//! HTTP/1.1 and HTTP/2 connections from a pool of its own, on a multi-thread
//! tokio runtime the backend owns, so it works the same from plain
//! `fn main` and from inside any async runtime. https is rustls (ring);
//! proxies are HTTP (forwarding and CONNECT tunnels) and SOCKS5.
//!
//! **The rule that keeps backends the same: policy lives once, in
//! handle-api; a backend owns only the wire.** This backend sends the
//! headers it is given plus Host (over HTTP/1.1), the framing header
//! handle-api chose and, to a forwarding proxy, Proxy-Authorization, and
//! nothing else: no redirects, cookies, decoding or default headers.
//!
//! ```no_run
//! # fn demo() -> handle_api::Result<()> {
//! use handle_api::{NetworkAccessManager, ResourceRequest};
//! let nam = NetworkAccessManager::new(backend_hyper::factory)?;
//! let mut handle = nam.load(ResourceRequest::get("http://example.test/").build()?);
//! let body = handle.bytes_blocking()?;
//! # let _ = body; Ok(()) }
//! ```
//!
//! Files, as in every backend crate: `convert.rs` builds hyper's request,
//! `error.rs` maps hyper's errors, `driver.rs` runs the runtime and the
//! exchange task. Besides: `pool.rs` keeps the connections, `connect.rs`
//! makes them, `conn.rs` watches their bytes, `tls.rs` and `proxy.rs` do
//! the TLS and proxy handshakes.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod conn;
mod connect;
mod convert;
mod driver;
mod error;
mod pool;
mod proxy;
mod tls;

use std::fmt;
use std::sync::Arc;

use handle_api::{
    BackendConfig, Capabilities, Capability, Error, ErrorKind, Exchange, ResourceHandleManager,
    Result,
};
use tokio::runtime::{Handle, Runtime};

/// The hyper backend: one tokio runtime and one connection pool, shared by
/// every exchange.
pub struct HyperHandleManager {
    /// `Option` so that `Drop` can take it and shut it down without blocking.
    runtime: Option<Runtime>,
    handle: Handle,
    pool: Arc<pool::Pool>,
    limits: driver::HeadLimits,
    capabilities: Capabilities,
}

impl HyperHandleManager {
    /// Creates the backend: starts its runtime and configures its pool from
    /// `config` (host overrides, connections per host, idle timeout, head
    /// limits) and its TLS client (roots, verification, identity).
    pub fn new(config: &BackendConfig) -> Result<Self> {
        let runtime = driver::runtime().map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot start the hyper backend's runtime: {e}"),
            )
            .with_source(e)
        })?;
        let handle = runtime.handle().clone();
        let pool = pool::Pool::new(config, handle.clone());
        Ok(HyperHandleManager {
            runtime: Some(runtime),
            handle,
            pool,
            limits: driver::HeadLimits {
                bytes: config.max_response_head_bytes,
                fields: config.max_response_headers,
            },
            capabilities: capabilities(),
        })
    }
}

/// What this build of the backend can do.
fn capabilities() -> Capabilities {
    Capabilities::new()
        .with(Capability::Http1)
        .with(Capability::Https)
        .with(Capability::Http2)
        .with(Capability::Proxy)
        .with(Capability::Socks5)
        .with(Capability::ClientCertificate)
}

/// Creates a [`HyperHandleManager`] as a shared backend; usable directly as
/// a [`handle_api::BackendFactory`].
pub fn factory(config: &BackendConfig) -> Result<Arc<dyn ResourceHandleManager>> {
    Ok(Arc::new(HyperHandleManager::new(config)?))
}

impl ResourceHandleManager for HyperHandleManager {
    fn name(&self) -> &'static str {
        "hyper"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn start(&self, exchange: Exchange) {
        let Exchange { request, sink, .. } = exchange;
        match convert::prepare(request, &self.handle) {
            // `Handle::spawn` neither blocks nor needs the caller to be in
            // any runtime, which is what makes `start` safe from anywhere.
            // Boxed, so that tokio moves a pointer where it would otherwise
            // copy the whole exchange in and out of the task each time.
            Ok(prepared) => {
                self.handle.spawn(Box::pin(driver::run(
                    self.pool.clone(),
                    self.limits,
                    prepared,
                    sink,
                )));
            }
            Err(e) => sink.fail(e),
        }
    }
}

impl Drop for HyperHandleManager {
    fn drop(&mut self) {
        // A plain drop of a runtime blocks, and panics inside another async
        // runtime; shutting down in the background does neither. Exchanges
        // still running end with an error from their dropped sinks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl fmt::Debug for HyperHandleManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperHandleManager")
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}
