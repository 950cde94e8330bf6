//! TLS with rustls (ring provider): the client configurations built once
//! from [`TlsConfig`] (by `handle_api::rustls`, shared with the ureq
//! backend), one per ALPN offer, and the handshake.
//!
//! The roots are exactly [`TlsConfig::roots`], the list every backend
//! trusts, so a certificate curl rejects is rejected here too, for the same
//! reason.

use std::sync::Arc;

pub(crate) use handle_api::rustls::problem;
use handle_api::{Error, Result, TlsConfig, TlsProblem};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The ALPN protocol id of HTTP/2.
const H2: &[u8] = b"h2";
/// The ALPN protocol id of HTTP/1.1.
const HTTP11: &[u8] = b"http/1.1";

/// The backend's TLS client: one rustls configuration per ALPN offer, all
/// built from the same roots, verifier and identity.
#[derive(Clone)]
pub(crate) struct Tls {
    /// Offers `http/1.1` only; `Err` when the client identity is unusable,
    /// which fails every https load the same way curl fails them.
    http1: std::result::Result<Arc<ClientConfig>, Error>,
    /// Offers `h2` and `http/1.1`, the server choosing.
    h2: std::result::Result<Arc<ClientConfig>, Error>,
}

/// A finished handshake.
pub(crate) struct Handshaken {
    /// The encrypted stream.
    pub(crate) stream: TlsStream<TcpStream>,
    /// The server chose `h2` by ALPN.
    pub(crate) h2: bool,
}

impl Tls {
    /// Builds the configurations from `config`.
    pub(crate) fn new(config: &TlsConfig) -> Tls {
        match handle_api::rustls::client_config(config) {
            Ok(base) => {
                let with = |alpn: &[&[u8]]| {
                    let mut c = base.clone();
                    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
                    Ok(Arc::new(c))
                };
                Tls {
                    http1: with(&[HTTP11]),
                    h2: with(&[H2, HTTP11]),
                }
            }
            Err(e) => Tls {
                http1: Err(e.clone()),
                h2: Err(e),
            },
        }
    }

    /// Runs the handshake with `host` (SNI and the name checked against
    /// the certificate) over `tcp`, offering h2 too when `offer_h2`.
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
        offer_h2: bool,
    ) -> Result<Handshaken> {
        let config = if offer_h2 { &self.h2 } else { &self.http1 };
        let config = config.as_ref().map_err(Clone::clone)?.clone();
        let name = ServerName::try_from(host.to_owned()).map_err(|e| {
            Error::tls(
                TlsProblem::Handshake,
                format!("{host:?} cannot be a TLS server name: {e}"),
            )
        })?;
        let stream = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| handshake_error(e, host))?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(H2);
        Ok(Handshaken { stream, h2 })
    }
}

/// A failed handshake with `host`.
fn handshake_error(e: std::io::Error, host: &str) -> Error {
    let problem = rustls_error(&e).map_or(TlsProblem::Handshake, problem);
    Error::tls(
        problem,
        format!("the TLS handshake with {host} failed: {e}"),
    )
    .with_source(e)
}

/// The rustls error inside an `io::Error`, as tokio-rustls reports them.
pub(crate) fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}
