//! The workloads of DESIGN.md §7 and the clients that run them.

use std::fmt;
use std::str::FromStr;

use resource_handle::{Backend, Capability, NetworkAccessManager};

/// One workload on loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    /// Small GETs one after the other on one keep-alive connection (latency).
    GetSequential,
    /// Small GETs with 6 in flight (throughput at the per-host default).
    Get6,
    /// Small GETs with 64 in flight (throughput under load).
    Get64,
    /// A large body with Content-Length, streamed to a sink.
    DownloadLength,
    /// A large body with chunked transfer coding, streamed to a sink.
    DownloadChunked,
    /// A large request body with Content-Length, streamed from a generator.
    Upload,
    /// Small GETs with 64 in flight as streams of one cleartext HTTP/2
    /// connection (prior knowledge).
    H2Multiplex,
}

/// What a workload's figure counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Completed requests per second.
    RequestsPerSecond,
    /// Body bytes per second.
    BytesPerSecond,
}

impl Unit {
    /// The unit as the JSON report names it: `req/s` or `bytes/s`.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::RequestsPerSecond => "req/s",
            Unit::BytesPerSecond => "bytes/s",
        }
    }
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 7] = [
        Workload::GetSequential,
        Workload::Get6,
        Workload::Get64,
        Workload::DownloadLength,
        Workload::DownloadChunked,
        Workload::Upload,
        Workload::H2Multiplex,
    ];

    /// The stable name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::GetSequential => "get-sequential",
            Workload::Get6 => "get-6",
            Workload::Get64 => "get-64",
            Workload::DownloadLength => "download-length",
            Workload::DownloadChunked => "download-chunked",
            Workload::Upload => "upload",
            Workload::H2Multiplex => "h2-multiplex",
        }
    }

    /// One line saying what it measures.
    pub fn description(self) -> &'static str {
        match self {
            Workload::GetSequential => "small GETs one at a time on one keep-alive connection",
            Workload::Get6 => "small GETs, 6 in flight on 6 connections",
            Workload::Get64 => "small GETs, 64 in flight on 64 connections",
            Workload::DownloadLength => "a large body with Content-Length streamed to a sink",
            Workload::DownloadChunked => "a large chunked body streamed to a sink",
            Workload::Upload => "a large streamed upload with Content-Length",
            Workload::H2Multiplex => {
                "small GETs, 64 in flight as HTTP/2 streams on one connection (prior knowledge)"
            }
        }
    }

    /// The unit of its figure.
    pub fn unit(self) -> Unit {
        match self {
            Workload::GetSequential | Workload::Get6 | Workload::Get64 | Workload::H2Multiplex => {
                Unit::RequestsPerSecond
            }
            _ => Unit::BytesPerSecond,
        }
    }

    /// Requests kept in flight (and connections per host allowed).
    pub fn in_flight(self) -> usize {
        match self {
            Workload::Get6 => 6,
            Workload::Get64 => 64,
            Workload::H2Multiplex => 64,
            _ => 1,
        }
    }

    /// True for the workloads counted in requests.
    pub fn is_requests(self) -> bool {
        self.unit() == Unit::RequestsPerSecond
    }

    /// True for the workloads spoken in cleartext HTTP/2 with prior
    /// knowledge. Every response must then be HTTP/2, and all of a client's
    /// requests must share one connection: the harness checks both against
    /// the embedded server's counts.
    pub fn is_http2(self) -> bool {
        matches!(self, Workload::H2Multiplex)
    }

    /// `Err(reason)` when the workload cannot run in this build. Every
    /// workload runs now; which clients run it is [`ClientKind::supports`].
    pub fn availability(self) -> Result<(), &'static str> {
        Ok(())
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|w| w.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|w| w.name()).collect();
                format!(
                    "unknown workload {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Who runs a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKind {
    /// A backend through the abstraction (`NetworkAccessManager`).
    Abstraction(Backend),
    /// libcurl used directly: one multi handle driving as many easy handles as requests in flight.
    CurlDirect,
    /// hyper-util's pooled client used directly on a tokio runtime.
    HyperDirect,
    /// A ureq agent used directly, one thread per request in flight.
    UreqDirect,
    /// reqwest's async client on a tokio runtime of its own.
    Reqwest,
    /// wrk, the HTTP load generator (external; small GETs only).
    Wrk,
    /// The curl command-line tool (external).
    CurlCli,
}

impl ClientKind {
    /// Every client, in report order.
    pub const ALL: [ClientKind; 9] = [
        ClientKind::Abstraction(Backend::Curl),
        ClientKind::Abstraction(Backend::Hyper),
        ClientKind::Abstraction(Backend::Ureq),
        ClientKind::CurlDirect,
        ClientKind::HyperDirect,
        ClientKind::UreqDirect,
        ClientKind::Reqwest,
        ClientKind::Wrk,
        ClientKind::CurlCli,
    ];

    /// The stable name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Abstraction(b) => b.name(),
            ClientKind::CurlDirect => "curl-direct",
            ClientKind::HyperDirect => "hyper-direct",
            ClientKind::UreqDirect => "ureq-direct",
            ClientKind::Reqwest => "reqwest",
            ClientKind::Wrk => "wrk",
            ClientKind::CurlCli => "curl-cli",
        }
    }

    /// The direct-library baseline of a backend.
    pub fn direct_of(backend: Backend) -> ClientKind {
        match backend {
            Backend::Curl => ClientKind::CurlDirect,
            Backend::Hyper => ClientKind::HyperDirect,
            Backend::Ureq => ClientKind::UreqDirect,
        }
    }

    /// True for the tools run as other programs.
    pub fn is_external(self) -> bool {
        matches!(self, ClientKind::Wrk | ClientKind::CurlCli)
    }

    /// The program an external client runs.
    pub fn program(self) -> Option<&'static str> {
        match self {
            ClientKind::Wrk => Some("wrk"),
            ClientKind::CurlCli => Some("curl"),
            _ => None,
        }
    }

    /// `Err(reason)` when this client does not run `workload`.
    ///
    /// For an HTTP/2 workload a backend's answer comes from its own
    /// capabilities (a manager is built to ask it), so a backend runs the
    /// workload as soon as it declares HTTP/2.
    pub fn supports(self, workload: Workload) -> Result<(), String> {
        workload.availability().map_err(str::to_owned)?;
        match (self, workload) {
            (ClientKind::Abstraction(backend), w) if w.is_http2() => speaks_http2(backend),
            (ClientKind::UreqDirect, w) if w.is_http2() => Err("ureq has no HTTP/2".into()),
            (ClientKind::Wrk, w) if w.is_http2() => {
                Err("wrk speaks HTTP/1.1 only (h2load is HTTP/2's wrk)".into())
            }
            (ClientKind::CurlCli, w) if w.is_http2() => Err(
                "the curl tool is a new process, so a new connection, every run; the workload \
                 measures streams on one connection kept open across runs (curl-direct is \
                 libcurl's HTTP/2)"
                    .into(),
            ),
            (ClientKind::Wrk, w) if !w.is_requests() => Err("wrk only sends small GETs".into()),
            (ClientKind::Wrk, Workload::GetSequential) => Err(
                "wrk measures throughput; the sequential latency run is left to the libraries"
                    .into(),
            ),
            _ => Ok(()),
        }
    }
}

/// `Ok` when `backend` declares [`Capability::Http2`], else its reason.
fn speaks_http2(backend: Backend) -> Result<(), String> {
    let nam = NetworkAccessManager::builder()
        .build(backend)
        .map_err(|e| format!("cannot start the {backend} backend: {e}"))?;
    nam.capabilities().check(Capability::Http2)
}

impl fmt::Display for ClientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ClientKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|c| c.name()).collect();
                format!("unknown client {s:?}: expected one of {}", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(w.name().parse::<Workload>().unwrap(), w);
        }
        for c in ClientKind::ALL {
            assert_eq!(c.name().parse::<ClientKind>().unwrap(), c);
        }
        assert!("nope".parse::<Workload>().is_err());
        assert!("nope".parse::<ClientKind>().is_err());
    }

    #[test]
    fn wrk_only_sends_small_gets() {
        assert!(ClientKind::Wrk.supports(Workload::Get6).is_ok());
        assert!(ClientKind::Wrk.supports(Workload::DownloadLength).is_err());
    }

    #[test]
    fn who_speaks_http2() {
        for c in [
            ClientKind::CurlDirect,
            ClientKind::HyperDirect,
            ClientKind::Reqwest,
        ] {
            assert_eq!(c.supports(Workload::H2Multiplex), Ok(()), "{c}");
        }
        for c in [ClientKind::UreqDirect, ClientKind::Wrk, ClientKind::CurlCli] {
            let why = c.supports(Workload::H2Multiplex).unwrap_err();
            assert!(!why.is_empty(), "{c}");
        }
        // The abstraction answers with the backend's own capability.
        assert!(ClientKind::Abstraction(Backend::Ureq)
            .supports(Workload::H2Multiplex)
            .is_err());
        for b in Backend::compiled() {
            let nam = NetworkAccessManager::builder().build(b).unwrap();
            let declared = nam.capabilities().check(Capability::Http2);
            let client = ClientKind::Abstraction(b);
            assert_eq!(client.supports(Workload::H2Multiplex), declared, "{b}");
            assert_eq!(client.supports(Workload::Get6), Ok(()), "{b}");
        }
    }
}
