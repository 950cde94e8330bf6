//! The resource-handle backend over hyper 1.x.
//!
//! [`HyperHandleManager`] puts each exchange on the wire with hyper-util's
//! pooled client, on a multi-thread tokio runtime the backend owns, so it
//! works the same from plain `fn main` and from inside any async runtime.
//!
//! **The rule that keeps backends the same: policy lives once, in
//! handle-api; a backend owns only the wire.** This backend sends the
//! headers it is given plus Host and the framing header handle-api chose,
//! and nothing else: no redirects, cookies, decoding or default headers.
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
//! `error.rs` maps hyper's errors, `driver.rs` runs the runtime, the
//! connector and the exchange task.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod conn;
mod convert;
mod driver;
mod error;

use std::fmt;
use std::sync::Arc;

use handle_api::{
    BackendConfig, Capabilities, Capability, Error, ErrorKind, Exchange, ResourceHandleManager,
    Result,
};
use tokio::runtime::{Handle, Runtime};

/// The hyper backend: one tokio runtime and one pooled hyper client, shared
/// by every exchange.
pub struct HyperHandleManager {
    /// `Option` so that `Drop` can take it and shut it down without blocking.
    runtime: Option<Runtime>,
    handle: Handle,
    client: driver::HttpClient,
    slots: std::sync::Arc<driver::HostSlots>,
    capabilities: Capabilities,
}

impl HyperHandleManager {
    /// Creates the backend: starts its runtime and configures its pool from
    /// `config` (host overrides, connections kept per host, idle timeout).
    pub fn new(config: &BackendConfig) -> Result<Self> {
        let runtime = driver::runtime().map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot start the hyper backend's runtime: {e}"),
            )
            .with_source(e)
        })?;
        let handle = runtime.handle().clone();
        let (client, slots) = driver::client(config, handle.clone());
        Ok(HyperHandleManager {
            runtime: Some(runtime),
            handle,
            client,
            slots,
            capabilities: capabilities(),
        })
    }
}

/// What this build of the backend can do.
fn capabilities() -> Capabilities {
    Capabilities::new()
        .with(Capability::Http1)
        .without(Capability::Https, "TLS comes with the rustls connector")
        .without(
            Capability::Http2,
            "HTTP/2 is not enabled in the hyper backend yet",
        )
        .without(
            Capability::Proxy,
            "proxies are not wired into the hyper backend yet",
        )
        .without(
            Capability::Socks5,
            "SOCKS5 proxies are not wired into the hyper backend yet",
        )
        .without(
            Capability::ClientCertificate,
            "TLS comes with the rustls connector",
        )
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
            Ok(prepared) => {
                self.handle.spawn(driver::run(
                    self.client.clone(),
                    self.slots.clone(),
                    prepared,
                    sink,
                ));
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
