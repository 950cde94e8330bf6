//! Making a connection for a [`Key`]: names through the host overrides,
//! TCP, the proxy's handshake, and TLS with ALPN.
//!
//! Failures come out as the contract's errors directly: `dns` and `connect`
//! for the origin, `proxy` for anything about the proxy (its name, its
//! port, its answer), `tls` with the certificate problem.

use std::net::SocketAddr;

use handle_api::{BackendConfig, Error, ErrorKind, HostOverrides, Resolution, Result};
use tokio::net::TcpStream;

use crate::conn::{ConnMeta, Transport, Wire};
use crate::pool::{Hop, Key, Mode, Origin, Via};
use crate::proxy::{self, SocksTarget};
use crate::tls::Tls;

/// A connection ready for hyper's handshake.
pub(crate) struct Established {
    /// The byte stream.
    pub(crate) wire: Wire,
    /// Its counts and address, shared with the pool.
    pub(crate) meta: ConnMeta,
    /// Speak HTTP/2 on it (negotiated, or known beforehand).
    pub(crate) h2: bool,
}

/// Makes connections: the backend's host overrides and TLS client.
pub(crate) struct Connector {
    resolve: HostOverrides,
    tls: Tls,
    max_head_bytes: usize,
}

impl Connector {
    pub(crate) fn new(config: &BackendConfig) -> Connector {
        Connector {
            resolve: config.resolve.clone(),
            tls: Tls::new(&config.tls),
            max_head_bytes: config.max_response_head_bytes,
        }
    }

    /// Opens a connection the way `key` says.
    pub(crate) async fn connect(&self, key: &Key) -> Result<Established> {
        let (tcp, origin) = match &key.via {
            Via::Direct(origin) => (self.tcp(&origin.host, origin.port).await?, origin),
            Via::Forward(hop) => {
                let tcp = self.to_proxy(hop).await?;
                let remote = tcp.peer_addr().ok();
                let meta = ConnMeta::new(remote);
                let wire = Wire::new(
                    Transport::Tcp(tcp),
                    meta.clone(),
                    self.max_head_bytes,
                    false,
                );
                return Ok(Established {
                    wire,
                    meta,
                    h2: false,
                });
            }
            Via::Tunnel(hop, origin) => {
                let mut tcp = self.to_proxy(hop).await?;
                proxy::tunnel(
                    &mut tcp,
                    &origin.host,
                    origin.port,
                    hop.authorization.as_ref(),
                )
                .await?;
                (tcp, origin)
            }
            Via::Socks(hop, origin) => {
                let mut tcp = self.to_proxy(hop).await?;
                let resolved;
                let target = if !hop.scheme.resolves_origin_locally() {
                    SocksTarget::Name(&origin.host, origin.port)
                } else {
                    // socks5://: the name is resolved here, through the
                    // host overrides like any other.
                    resolved = self.resolve(&origin.host, origin.port).await?;
                    SocksTarget::Addr(resolved)
                };
                let credentials = hop
                    .credentials
                    .as_ref()
                    .map(|(u, p)| (u.as_str(), p.as_str()));
                proxy::socks5(&mut tcp, target, credentials).await?;
                (tcp, origin)
            }
        };
        let remote = tcp.peer_addr().ok();
        let meta = ConnMeta::new(remote);
        let (transport, h2) = if origin.tls {
            let done = self
                .tls
                .handshake(tcp, &origin.host, key.mode != Mode::Http1)
                .await?;
            (Transport::Tls(Box::new(done.stream)), done.h2)
        } else {
            (Transport::Tcp(tcp), key.mode == Mode::PriorKnowledge)
        };
        let wire = Wire::new(transport, meta.clone(), self.max_head_bytes, h2);
        Ok(Established { wire, meta, h2 })
    }

    /// TCP to the proxy: any failure, its name's included, is the proxy's.
    async fn to_proxy(&self, hop: &Hop) -> Result<TcpStream> {
        self.tcp(&hop.host, hop.port).await.map_err(|e| {
            Error::new(
                ErrorKind::Proxy,
                format!(
                    "the proxy {} cannot be reached: {}",
                    proxy::authority(&hop.host, hop.port),
                    e.message()
                ),
            )
            .with_source(e)
        })
    }

    /// The addresses of `host:port`, through the overrides, else the system.
    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>> {
        let addrs = match self.resolve.lookup(host, port) {
            Resolution::Addrs(addrs) => addrs,
            Resolution::NoAddress => Vec::new(),
            Resolution::System => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Dns,
                        format!("name resolution of {host} failed: {e}"),
                    )
                    .with_source(e)
                })?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(Error::new(
                ErrorKind::Dns,
                format!("{host}:{port} is mapped to no address"),
            ));
        }
        Ok(addrs)
    }

    /// The first address of `host:port`.
    async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr> {
        let addrs = self.addresses(host, port).await?;
        // `addresses` never returns an empty list.
        addrs.first().copied().ok_or_else(|| {
            Error::new(
                ErrorKind::Dns,
                format!("{host}:{port} is mapped to no address"),
            )
        })
    }

    /// Connects to `host:port`, trying its addresses in order, as curl tries
    /// `--resolve` addresses.
    async fn tcp(&self, host: &str, port: u16) -> Result<TcpStream> {
        let mut last = None;
        for addr in self.addresses(host, port).await? {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    // Requests are written whole; Nagle would only delay them.
                    let _ = tcp.set_nodelay(true);
                    return Ok(tcp);
                }
                Err(e) => last = Some((addr, e)),
            }
        }
        let (addr, e) = last.ok_or_else(|| {
            Error::new(
                ErrorKind::Dns,
                format!("{host}:{port} is mapped to no address"),
            )
        })?;
        Err(Error::new(
            ErrorKind::Connect,
            format!("connecting to {host} ({addr}) failed: {e}"),
        )
        .with_source(e))
    }
}

impl Origin {
    /// The origin of `url` (http or https, with a host).
    pub(crate) fn of(url: &handle_api::Url) -> Option<Origin> {
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        let host = match url.host()? {
            url::Host::Domain(d) => d.to_ascii_lowercase(),
            // The url spells an IPv4 address as `Ipv4Addr` displays it;
            // taking its text spares the formatting machinery per request.
            url::Host::Ipv4(_) => url.host_str()?.to_owned(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        if host.is_empty() {
            return None;
        }
        Some(Origin {
            tls,
            host,
            port: url.port_or_known_default()?,
        })
    }
}
