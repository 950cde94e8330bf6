//! TLS settings shared by every backend: the roots to trust, whether to
//! verify at all, and the client identity.
//!
//! The roots are decided here once ([`TlsConfig::roots`]): the system's
//! store (unless turned off) plus the extra CA certificates given to the
//! manager. Each backend maps that one list onto its library natively
//! (`CURLOPT_CAINFO_BLOB` for curl, a rustls root store for hyper and ureq),
//! so every backend trusts exactly the same certificates.

use std::fmt;
use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, ErrorKind, Result};

/// One X.509 certificate, DER encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    der: Arc<[u8]>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Certificate({} bytes of DER)", self.der.len())
    }
}

impl Certificate {
    /// A certificate from its DER bytes.
    pub fn from_der(der: impl Into<Vec<u8>>) -> Certificate {
        Certificate {
            der: der.into().into(),
        }
    }

    /// Every `CERTIFICATE` block of a PEM file, in order. A file without one,
    /// or with a damaged one, is an `invalid_request` error.
    pub fn from_pem(pem: &[u8]) -> Result<Vec<Certificate>> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .map(|c| c.map(|c| Certificate::from_der(c.as_ref())))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| {
                Error::new(
                    ErrorKind::InvalidRequest,
                    format!("the PEM certificates could not be read: {e}"),
                )
            })?;
        if certs.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                "the PEM text holds no CERTIFICATE block",
            ));
        }
        Ok(certs)
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certificate as one PEM `CERTIFICATE` block.
    pub fn to_pem(&self) -> String {
        let b64 = STANDARD.encode(&self.der);
        let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            // Base64 output is ASCII.
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
        out
    }
}

/// The format of a client identity's private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFormat {
    /// PKCS#8 (`PRIVATE KEY`).
    Pkcs8,
    /// PKCS#1 RSA (`RSA PRIVATE KEY`).
    Pkcs1,
    /// SEC1 EC (`EC PRIVATE KEY`).
    Sec1,
}

/// A client certificate chain with its private key, presented when a server
/// asks for one.
#[derive(Clone)]
pub struct Identity {
    chain: Vec<Certificate>,
    key_der: Arc<[u8]>,
    key_format: KeyFormat,
    cert_pem: Arc<str>,
    key_pem: Arc<str>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key never appears in logs.
        f.debug_struct("Identity")
            .field("chain", &self.chain)
            .field("key_format", &self.key_format)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// An identity from a PEM certificate chain (leaf first) and a PEM
    /// private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Identity> {
        let chain = Certificate::from_pem(cert_chain_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            Error::new(
                ErrorKind::InvalidRequest,
                format!("the PEM private key could not be read: {e}"),
            )
        })?;
        let key_format = match &key {
            PrivateKeyDer::Pkcs8(_) => KeyFormat::Pkcs8,
            PrivateKeyDer::Pkcs1(_) => KeyFormat::Pkcs1,
            PrivateKeyDer::Sec1(_) => KeyFormat::Sec1,
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidRequest,
                    "the private key is in an unknown format",
                ))
            }
        };
        let cert_pem: String = chain.iter().map(Certificate::to_pem).collect();
        let key_pem = match std::str::from_utf8(key_pem) {
            Ok(s) => s,
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::InvalidRequest,
                    "the PEM private key is not text",
                ))
            }
        };
        Ok(Identity {
            chain,
            key_der: key.secret_der().into(),
            key_format,
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        })
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[Certificate] {
        &self.chain
    }

    /// The private key's DER bytes.
    pub fn key_der(&self) -> &[u8] {
        &self.key_der
    }

    /// The private key's format.
    pub fn key_format(&self) -> KeyFormat {
        self.key_format
    }

    /// The chain as PEM text.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key as the PEM text it was given in.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

/// The manager's TLS settings, handed to the backend in
/// [`BackendConfig::tls`](crate::BackendConfig::tls).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TlsConfig {
    /// Trust the system's certificate store (default: yes).
    pub system_roots: bool,
    /// CA certificates trusted besides (or, without the system's, instead of)
    /// the system's.
    pub extra_roots: Vec<Certificate>,
    /// Verify the server's certificate and host name (default: yes). Turning
    /// this off accepts any certificate from anyone, a man in the middle
    /// included; it exists for test set-ups only.
    pub verify: bool,
    /// The client certificate presented when the server asks for one.
    pub identity: Option<Identity>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            system_roots: true,
            extra_roots: Vec::new(),
            verify: true,
            identity: None,
        }
    }
}

impl TlsConfig {
    /// Every root to trust: the system's (read once per process) and the extra ones.
    pub fn roots(&self) -> Vec<Certificate> {
        let mut roots = if self.system_roots {
            system_roots().to_vec()
        } else {
            Vec::new()
        };
        roots.extend(self.extra_roots.iter().cloned());
        roots
    }

    /// [`TlsConfig::roots`] as one PEM bundle (what `CURLOPT_CAINFO_BLOB` takes).
    pub fn roots_pem(&self) -> String {
        self.roots().iter().map(Certificate::to_pem).collect()
    }
}

/// The system's trusted roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` or the
/// platform store), read once. Unreadable entries are skipped, as OpenSSL
/// skips them.
pub fn system_roots() -> &'static [Certificate] {
    static ROOTS: OnceLock<Vec<Certificate>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        rustls_native_certs::load_native_certs()
            .certs
            .into_iter()
            .map(|c| Certificate::from_der(c.as_ref()))
            .collect()
    })
}

/// What was wrong with a server's certificate (Qt's `QSslError` list),
/// the same on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsProblem {
    /// The chain does not lead to a trusted root (unknown or self-signed issuer).
    UntrustedIssuer,
    /// The certificate has expired (or is not yet valid).
    Expired,
    /// The certificate is not valid for the host name asked for.
    WrongHost,
    /// The client identity was refused or could not be used.
    ClientCertificate,
    /// Anything else in the handshake (protocol version, alert, bad record).
    Handshake,
}

impl TlsProblem {
    /// The stable snake_case name used in traces.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsProblem::UntrustedIssuer => "untrusted_issuer",
            TlsProblem::Expired => "expired",
            TlsProblem::WrongHost => "wrong_host",
            TlsProblem::ClientCertificate => "client_certificate",
            TlsProblem::Handshake => "handshake",
        }
    }
}

impl fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips() {
        let c = Certificate::from_der(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        let pem = c.to_pem();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(Certificate::from_pem(pem.as_bytes()).unwrap(), vec![c]);
    }

    #[test]
    fn bad_pem_is_invalid_request() {
        let e = Certificate::from_pem(b"not a certificate").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
        let e = Identity::from_pem(b"", b"").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    }
}
