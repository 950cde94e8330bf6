//! One API for loading resources over the network, with the HTTP stack
//! underneath chosen by a cargo feature or at run time.
//!
//! ```toml
//! [dependencies]
//! resource-handle = { version = "0.1", default-features = false, features = ["curl"] }
//! ```
//!
//! ```no_run
//! use resource_handle::{Backend, NetworkAccessManager, ResourceRequest};
//!
//! # fn main() -> resource_handle::Result<()> {
//! let nam = NetworkAccessManager::new(Backend::default())?;
//! let mut handle = nam.load(ResourceRequest::get("http://example.test/").build()?);
//! println!("{}", handle.response_blocking()?.status());
//! let body = handle.bytes_blocking()?;
//! # let _ = body; Ok(()) }
//! ```
//!
//! Features are additive: enable several backends and pick one per manager
//! with [`Backend`]. Everything else is re-exported from `handle-api`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use handle_api::*;

#[cfg(feature = "curl")]
pub use backend_curl::CurlHandleManager;
#[cfg(feature = "hyper")]
pub use backend_hyper::HyperHandleManager;
#[cfg(feature = "ureq")]
pub use backend_ureq::UreqHandleManager;

/// An HTTP stack. All three names always exist; creating a manager with one
/// whose feature is not compiled in is an `unsupported` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// libcurl, through the `curl` crate (feature `curl`).
    Curl,
    /// hyper 1.x on a tokio runtime the backend owns (feature `hyper`).
    Hyper,
    /// ureq 3 on worker threads (feature `ureq`).
    Ureq,
}

impl Backend {
    /// Every backend, compiled or not.
    pub const ALL: [Backend; 3] = [Backend::Curl, Backend::Hyper, Backend::Ureq];

    /// The backend's name: `curl`, `hyper`, `ureq`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Curl => "curl",
            Backend::Hyper => "hyper",
            Backend::Ureq => "ureq",
        }
    }

    /// True when this backend's feature is compiled in.
    pub fn is_compiled(self) -> bool {
        match self {
            Backend::Curl => cfg!(feature = "curl"),
            Backend::Hyper => cfg!(feature = "hyper"),
            Backend::Ureq => cfg!(feature = "ureq"),
        }
    }

    /// The compiled backends, in name order.
    pub fn compiled() -> Vec<Backend> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }

    /// `RH_BACKEND` when set, else the default.
    pub fn from_env() -> Result<Backend> {
        match std::env::var("RH_BACKEND") {
            Ok(name) if !name.is_empty() => name.parse(),
            _ => Ok(Backend::default()),
        }
    }
}

impl Default for Backend {
    /// The first compiled of hyper, curl, ureq.
    fn default() -> Self {
        [Backend::Hyper, Backend::Curl, Backend::Ureq]
            .into_iter()
            .find(|b| b.is_compiled())
            .unwrap_or(Backend::Hyper)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidRequest,
                    format!("unknown backend {s:?}: expected curl, hyper or ureq"),
                )
            })
    }
}

impl BackendFactory for Backend {
    fn create(&self, config: &BackendConfig) -> Result<Arc<dyn ResourceHandleManager>> {
        let _ = config;
        match self {
            #[cfg(feature = "curl")]
            Backend::Curl => Ok(Arc::new(CurlHandleManager::new(config)?)),
            #[cfg(feature = "hyper")]
            Backend::Hyper => Ok(Arc::new(HyperHandleManager::new(config)?)),
            #[cfg(feature = "ureq")]
            Backend::Ureq => Ok(Arc::new(UreqHandleManager::new(config)?)),
            #[allow(unreachable_patterns)]
            other => Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the {other} backend is not compiled in: enable the `{other}` feature of resource-handle"
                ),
            )),
        }
    }
}
