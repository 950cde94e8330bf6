//! The resource-handle backend over [ureq] 3: blocking HTTP/1.1, run on
//! worker threads the backend owns.
//!
//! **Policy lives once, in handle-api; a backend owns only the wire.** This
//! crate maps each [`WireRequest`](handle_api::WireRequest) onto ureq's
//! `http::Request` and agent configuration, turns ureq's own policies off
//! (redirects, automatic User-Agent / Accept / Accept-Encoding headers,
//! status codes as errors, proxies from the environment), and maps ureq's
//! errors onto handle-api's [`ErrorKind`](handle_api::ErrorKind) set.
//!
//! ureq's optional body decoding and cookie features (`gzip`, `brotli`,
//! `charset`, `cookies`) must stay off in the build: they cannot be turned
//! off at run time, and with them ureq would decode bodies and store cookies
//! on its own. The workspace depends on ureq with default features off.
//!
//! The files are the same in every backend crate: `convert.rs` (request →
//! ureq), `error.rs` (ureq error → kind), `driver.rs` (the worker threads);
//! `transport.rs` holds the resolver for host overrides and the TCP
//! transport that lets a cancel abort a blocked exchange.
//!
//! ```no_run
//! use handle_api::{NetworkAccessManager, ResourceRequest};
//! # fn main() -> handle_api::Result<()> {
//! let nam = NetworkAccessManager::new(backend_ureq::factory)?;
//! let mut handle = nam.load(ResourceRequest::get("http://example.test/").build()?);
//! let status = handle.response_blocking()?.status();
//! let body = handle.bytes_blocking()?;
//! # let _ = (status, body); Ok(()) }
//! ```
//!
//! [ureq]: https://docs.rs/ureq/3
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod convert;
mod driver;
mod error;
mod framing;
mod transport;

use std::sync::Arc;

use handle_api::{
    BackendConfig, Capabilities, Capability, Error, ErrorKind, Exchange, ResourceHandleManager,
    Result,
};
use ureq::Agent;

use crate::driver::Driver;
use crate::transport::{OverrideResolver, WatchedTcpConnector};

/// The ureq backend: one `ureq::Agent` (its connection pool shared by all
/// loads) and the worker threads that run exchanges on it.
///
/// `start` only queues the exchange, so it returns at once from any thread,
/// inside or outside an async runtime.
pub struct UreqHandleManager {
    driver: Driver,
    capabilities: Capabilities,
}

impl UreqHandleManager {
    /// Creates the backend for `config`: host overrides, pool size per host
    /// and idle timeout of pooled connections.
    pub fn new(config: &BackendConfig) -> Result<Self> {
        if config.max_response_headers > convert::MAX_FIELDS {
            // ureq-proto parses at most this many fields, whatever is configured.
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "ureq parses at most {} header fields; a limit of {} cannot be honoured",
                    convert::MAX_FIELDS,
                    config.max_response_headers
                ),
            ));
        }
        let agent = Agent::with_parts(
            convert::agent_config(config),
            WatchedTcpConnector,
            OverrideResolver::new(config.resolve.clone()),
        );
        Ok(UreqHandleManager {
            driver: Driver::new(
                agent,
                (config.max_response_head_bytes, config.max_response_headers),
            ),
            capabilities: capabilities(),
        })
    }
}

/// What the ureq backend can do in this build.
pub fn capabilities() -> Capabilities {
    Capabilities::new()
        .with(Capability::Http1)
        .without(Capability::Http2, "ureq has no HTTP/2")
        .without(Capability::Https, "TLS comes with the rustls provider")
        .without(
            Capability::Proxy,
            "proxies are not wired into the ureq backend yet",
        )
        .without(
            Capability::Socks5,
            "proxies are not wired into the ureq backend yet",
        )
        .without(
            Capability::ClientCertificate,
            "TLS comes with the rustls provider",
        )
}

/// Creates the backend as a [`BackendFactory`](handle_api::BackendFactory)
/// does: `NetworkAccessManager::new(backend_ureq::factory)`.
pub fn factory(config: &BackendConfig) -> Result<Arc<dyn ResourceHandleManager>> {
    Ok(Arc::new(UreqHandleManager::new(config)?))
}

impl ResourceHandleManager for UreqHandleManager {
    fn name(&self) -> &'static str {
        "ureq"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn start(&self, exchange: Exchange) {
        self.driver.submit(exchange);
    }
}

impl std::fmt::Debug for UreqHandleManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UreqHandleManager").finish_non_exhaustive()
    }
}
