//! Test servers, started in-process on 127.0.0.1 with port 0.
//!
//! Each runs on threads of its own, records what it received, and stops when
//! dropped. A case starts its own servers, so cases never share state.

mod h2;
mod listener;
mod origin;
mod proxy;
mod raw;
mod tls;

pub use h2::{H2Request, H2Server};
pub use listener::Stats;
pub use origin::{
    body_pattern, encode, encoded_body, max_overlap, Origin, RecordedRequest, BOMB_DECODED_BYTES,
};
pub use proxy::{ProxyOptions, ProxyServer, Seen, SocksAddress};
pub use raw::{RawRequest, RawServer, Step};
pub use tls::{
    pki, CertKind, ClientAuth, Handshake, Pki, TlsOrigin, ALPN_H2, ALPN_HTTP11, CERT_NAMES,
    WRONG_HOST_NAME,
};
