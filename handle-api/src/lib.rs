//! The contract shared by every resource-handle backend.
//!
//! An application builds a [`ResourceRequest`], gives it to its one
//! [`NetworkAccessManager`], and gets back a [`ResourceHandle`] that delivers
//! the [`ResourceResponse`], the body and the [`Event`]s of the load.
//! Underneath, a [`ResourceHandleManager`] backend puts each exchange on the
//! wire with its HTTP library (libcurl, hyper or ureq).
//!
//! **The rule that keeps backends the same: policy lives once, here; a backend
//! owns only the wire.** Request validation, default headers, body framing,
//! progress, the event order and the trace are decided in this crate. A
//! backend maps the exchange onto its library's native options, turns the
//! library's own policies (redirects, cookies, decoding) off, and maps its
//! errors onto one [`ErrorKind`] set.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod auth;
mod backend;
mod block_on;
mod body;
mod cache;
mod client;
mod cookies;
mod disposition;
mod error;
mod events;
mod exchange;
mod handle;
mod hsts;
mod manager;
mod proxy;
mod request;
mod response;
#[cfg(feature = "rustls")]
pub mod rustls;
mod tls;
mod trace;

pub use auth::{AuthChallenge, Credentials};
pub use backend::{
    BackendConfig, BackendFactory, BodyFraming, Capabilities, Capability, Exchange, HostOverrides,
    Resolution, ResourceHandleManager, WireRequest, DEFAULT_MAX_RESPONSE_HEADERS,
    DEFAULT_MAX_RESPONSE_HEAD_BYTES,
};
pub use block_on::block_on;
pub use body::{RequestBody, UploadBody};
pub use cache::{
    CacheEntry, CacheMetadata, CacheWriter, CachedBody, DiskCache, MemoryCache, NetworkCache,
};
pub use client::ResourceHandleClient;
pub use cookies::{
    CookieJar, MemoryCookieJar, PersistentCookieJar, MAX_COOKIES_PER_DOMAIN, MAX_COOKIES_TOTAL,
    MAX_COOKIE_BYTES,
};
pub use error::{Error, ErrorKind, Result, TimeoutPhase, Truncation};
pub use events::Event;
pub use exchange::{ExchangeSink, TryData, BODY_BUFFER_BYTES};
pub use handle::{BodyReader, EventStream, ResourceHandle};
pub use hsts::{HstsPolicy, HstsStore, MAX_HSTS_HOSTS};
pub use manager::redirect::{RedirectAction, RedirectHop, RedirectPolicy, DEFAULT_MAX_REDIRECTS};
pub use manager::schemes::SchemeHandler;
pub use manager::{
    ManagerBuilder, NetworkAccessManager, DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_LOADS_TOTAL,
    DEFAULT_USER_AGENT,
};
pub use proxy::{connect_request, NoProxy, Proxy, ProxyConfig, ProxyCredentials, ProxyScheme};
pub use request::{
    CachePolicy, HttpVersionPref, Priority, RequestBuilder, ResourceRequest, TargetType,
};
pub use response::{version_str, LoadTiming, ResourceResponse, ResponseHead, ResponseSource};
pub use tls::{system_roots, Certificate, Identity, KeyFormat, TlsConfig, TlsProblem};
pub use trace::{Recorder, Trace, TraceError, TraceRedirect};

pub use bytes::Bytes;
pub use http;
pub use url::Url;
