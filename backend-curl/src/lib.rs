//! The libcurl backend of resource-handle: [`CurlHandleManager`].
//!
//! Each exchange becomes one curl easy handle whose options are set from the
//! request the way WebCore's curl `ResourceHandleManager` sets them
//! (`convert`), and every easy handle runs on one `curl::multi::Multi`
//! driven by a thread of its own (`driver`), as WebCore's curl layer drives
//! one multi handle. libcurl is built from its bundled source, with OpenSSL
//! and nghttp2: HTTP/2 by ALPN or prior knowledge, multiplexed on one
//! connection per origin. TLS trusts exactly the manager's roots
//! (`tls`), and each exchange goes through the proxy the manager chose for
//! it, or none (`proxy`).
//!
//! Policy lives in handle-api; this backend owns only the wire. curl's own
//! policies are off: no redirect following, no cookie engine, no content
//! decoding or `Accept-Encoding`, no proxy from the environment, no
//! `Expect: 100-continue`, no headers of its own beyond Host and the body
//! framing.
//!
//! ```no_run
//! # fn main() -> handle_api::Result<()> {
//! use handle_api::{NetworkAccessManager, ResourceRequest};
//! let nam = NetworkAccessManager::new(backend_curl::factory)?;
//! let mut handle = nam.load(ResourceRequest::get("http://example.test/").build()?);
//! let body = handle.bytes_blocking()?;
//! # let _ = body; Ok(()) }
//! ```
#![deny(missing_docs)]

mod convert;
mod driver;
mod error;
mod proxy;
mod tls;
mod wire;

use std::sync::Arc;

use handle_api::{
    BackendConfig, Capabilities, Capability, Error, ErrorKind, Exchange, ResourceHandleManager,
    Result,
};

use crate::driver::{Msg, Notifier};

/// The libcurl backend: one multi handle on its own thread, shared by every
/// exchange this manager starts.
///
/// Dropping the manager lets the transfers already running finish (their
/// handles may still be read), then the thread exits.
pub struct CurlHandleManager {
    driver: Notifier,
    capabilities: Capabilities,
}

impl CurlHandleManager {
    /// Starts the driver thread with `config`'s host overrides, pool and TLS
    /// settings.
    pub fn new(config: &BackendConfig) -> Result<Self> {
        Ok(CurlHandleManager {
            driver: driver::spawn(config)?,
            capabilities: capabilities(),
        })
    }
}

/// Creates a [`CurlHandleManager`]; usable as a
/// [`BackendFactory`](handle_api::BackendFactory).
pub fn factory(config: &BackendConfig) -> Result<Arc<dyn ResourceHandleManager>> {
    Ok(Arc::new(CurlHandleManager::new(config)?))
}

fn capabilities() -> Capabilities {
    Capabilities::new()
        .with(Capability::Http1)
        .with(Capability::Https)
        .with(Capability::Http2)
        .with(Capability::Proxy)
        .with(Capability::Socks5)
        .with(Capability::ClientCertificate)
}

impl ResourceHandleManager for CurlHandleManager {
    fn name(&self) -> &'static str {
        "curl"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn start(&self, exchange: Exchange) {
        if let Err(Msg::Start(exchange)) = self.driver.send(Msg::Start(Box::new(exchange))) {
            exchange.sink.fail(Error::new(
                ErrorKind::Io,
                "the curl driver thread is not running",
            ));
        }
    }
}

impl Drop for CurlHandleManager {
    fn drop(&mut self) {
        let _ = self.driver.send(Msg::Shutdown);
    }
}

impl std::fmt::Debug for CurlHandleManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurlHandleManager")
            .field("version", &curl::Version::get().version())
            .finish()
    }
}
