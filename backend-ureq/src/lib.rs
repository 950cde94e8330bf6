//! The resource-handle backend over [ureq] 3: blocking HTTP/1.1 (over TLS
//! for https, through HTTP and SOCKS5 proxies), run on worker threads the
//! backend owns.
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
//! ureq's TLS and SOCKS features stay off as well: TLS (rustls, ring
//! provider) and the proxy handshakes run inside this crate's transport, so
//! that a cancel, the response filter and the timing see every connection
//! the same way (`tls.rs` and `proxy.rs` say more).
//!
//! The files are the same in every backend crate: `convert.rs` (request →
//! ureq), `error.rs` (ureq error → kind), `driver.rs` (the worker threads);
//! `transport.rs` holds the resolver for host overrides and the transport
//! that lets a cancel abort a blocked exchange, `agents.rs` the agent (and
//! connection pool) of each route, `tls.rs` and `proxy.rs` the handshakes.
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

mod agents;
mod convert;
mod driver;
mod error;
mod framing;
mod proxy;
mod tls;
mod transport;

use std::sync::Arc;

use handle_api::{
    BackendConfig, Capabilities, Capability, Error, ErrorKind, Exchange, ResourceHandleManager,
    Result,
};

use crate::agents::Agents;
use crate::driver::Driver;

/// The ureq backend: a `ureq::Agent` per route (direct, or through one
/// proxy), each with the connection pool its loads share, and the worker
/// threads that run exchanges on them.
///
/// `start` only queues the exchange, so it returns at once from any thread,
/// inside or outside an async runtime.
pub struct UreqHandleManager {
    driver: Driver,
    capabilities: Capabilities,
}

impl UreqHandleManager {
    /// Creates the backend for `config`: host overrides, pool size per host,
    /// idle timeout of pooled connections, and TLS settings. A client
    /// identity rustls cannot use is a `tls` error here.
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
        let agents = Agents::new(
            convert::agent_config(config),
            config.resolve.clone(),
            tls::client_config(&config.tls),
        );
        Ok(UreqHandleManager {
            driver: Driver::new(
                agents,
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
        .with(Capability::Https)
        .with(Capability::ClientCertificate)
        .with(Capability::Proxy)
        // socks5 and socks5h, with username/password (RFC 1929).
        .with(Capability::Socks5)
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
