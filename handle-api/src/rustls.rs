//! The rustls side of [`TlsConfig`], for the backends built on rustls (hyper
//! and ureq; feature `rustls`).
//!
//! Both need the same client configuration from the same settings and the
//! same reading of rustls' errors, so both come from here: a certificate one
//! rustls backend refuses, the other refuses for the same [`TlsProblem`]; and
//! curl, on OpenSSL, maps its verify results onto the same problems.

use std::sync::Arc;

use ::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use ::rustls::client::WebPkiServerVerifier;
use ::rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use ::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    ServerName, UnixTime,
};
use ::rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};

use crate::error::{Error, ErrorKind, Result};
use crate::tls::{KeyFormat, TlsConfig, TlsProblem};

/// The ring provider: pure Rust and C, nothing to install.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(::rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `config`, without ALPN (the backend
/// sets what it speaks): exactly [`TlsConfig::roots`], or no verification
/// when `verify` is off (handshake signatures are still checked), and the
/// client identity.
///
/// An identity rustls cannot use is a `tls` error with
/// [`TlsProblem::ClientCertificate`]. Backends report it on each https load
/// rather than when they are created, as libcurl can only report it then.
pub fn client_config(config: &TlsConfig) -> Result<ClientConfig> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = if config.verify {
        let mut roots = RootCertStore::empty();
        // Certificates webpki cannot use are skipped, as OpenSSL skips
        // unreadable entries of a CA bundle.
        let _ = roots.add_parsable_certificates(
            config
                .roots()
                .iter()
                .map(|c| CertificateDer::from(c.der().to_vec())),
        );
        if roots.is_empty() {
            // webpki builds no verifier without roots; with none, every
            // chain is untrusted.
            Arc::new(Verifier::NoRoots(algorithms))
        } else {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidRequest,
                        format!("the trusted roots cannot be used: {e}"),
                    )
                })?
        }
    } else {
        Arc::new(Verifier::AcceptAny(algorithms))
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            Error::tls(
                TlsProblem::Handshake,
                format!("no TLS version is available: {e}"),
            )
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let Some(identity) = &config.identity else {
        return Ok(builder.with_no_client_auth());
    };
    let bad = |why: String| {
        Error::tls(
            TlsProblem::ClientCertificate,
            format!("the client certificate cannot be used: {why}"),
        )
    };
    let chain = identity
        .chain()
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    let der = identity.key_der().to_vec();
    let key = match identity.key_format() {
        KeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
        KeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
        KeyFormat::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
    };
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad(e.to_string()))
}

/// The server certificate check when webpki's cannot be used: no roots at
/// all, or verification turned off. Handshake signatures are checked either
/// way, so the peer still proves it holds the certificate's key.
#[derive(Debug)]
enum Verifier {
    /// Nothing is trusted.
    NoRoots(WebPkiSupportedAlgorithms),
    /// Any certificate is accepted (`danger_accept_invalid_certs`).
    AcceptAny(WebPkiSupportedAlgorithms),
}

impl Verifier {
    fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        match self {
            Verifier::NoRoots(a) | Verifier::AcceptAny(a) => a,
        }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, ::rustls::Error> {
        match self {
            Verifier::NoRoots(_) => Err(::rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
            Verifier::AcceptAny(_) => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, ::rustls::Error> {
        ::rustls::crypto::verify_tls12_signature(message, cert, dss, self.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, ::rustls::Error> {
        ::rustls::crypto::verify_tls13_signature(message, cert, dss, self.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms().supported_schemes()
    }
}

/// What a rustls error says was wrong, in the terms every backend uses.
pub fn problem(e: &::rustls::Error) -> TlsProblem {
    match e {
        ::rustls::Error::InvalidCertificate(c) => certificate_problem(c),
        ::rustls::Error::AlertReceived(alert) => alert_problem(*alert),
        // The server presented no certificate at all: nothing vouches for it.
        ::rustls::Error::NoCertificatesPresented => TlsProblem::UntrustedIssuer,
        _ => TlsProblem::Handshake,
    }
}

fn certificate_problem(e: &CertificateError) -> TlsProblem {
    use CertificateError as C;
    match e {
        // No chain to a trusted root, or a chain that cannot vouch for a TLS
        // server: OpenSSL reports these as an unverifiable issuer.
        C::UnknownIssuer
        | C::BadSignature
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. }
        | C::InvalidPurpose
        | C::InvalidPurposeContext { .. } => TlsProblem::UntrustedIssuer,
        C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
            TlsProblem::Expired
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => TlsProblem::WrongHost,
        _ => TlsProblem::Handshake,
    }
}

/// An alert from the server: the ones about certificates are about ours,
/// since the server's certificate is checked here, not there.
fn alert_problem(alert: AlertDescription) -> TlsProblem {
    use AlertDescription as A;
    match alert {
        A::CertificateRequired
        | A::BadCertificate
        | A::UnsupportedCertificate
        | A::CertificateRevoked
        | A::CertificateExpired
        | A::CertificateUnknown
        | A::UnknownCA
        | A::AccessDenied => TlsProblem::ClientCertificate,
        _ => TlsProblem::Handshake,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_map_to_the_shared_problems() {
        let cert = |c| problem(&::rustls::Error::InvalidCertificate(c));
        assert_eq!(
            cert(CertificateError::UnknownIssuer),
            TlsProblem::UntrustedIssuer
        );
        assert_eq!(
            cert(CertificateError::BadSignature),
            TlsProblem::UntrustedIssuer
        );
        assert_eq!(cert(CertificateError::Expired), TlsProblem::Expired);
        assert_eq!(cert(CertificateError::NotValidYet), TlsProblem::Expired);
        assert_eq!(
            cert(CertificateError::NotValidForName),
            TlsProblem::WrongHost
        );
        assert_eq!(cert(CertificateError::BadEncoding), TlsProblem::Handshake);
        let alert = |a| problem(&::rustls::Error::AlertReceived(a));
        assert_eq!(
            alert(AlertDescription::CertificateRequired),
            TlsProblem::ClientCertificate
        );
        assert_eq!(
            alert(AlertDescription::UnknownCA),
            TlsProblem::ClientCertificate
        );
        assert_eq!(
            alert(AlertDescription::ProtocolVersion),
            TlsProblem::Handshake
        );
    }

    #[test]
    fn a_config_is_built_with_and_without_verification() {
        let mut c = TlsConfig {
            system_roots: false,
            ..TlsConfig::default()
        };
        assert!(client_config(&c).unwrap().alpn_protocols.is_empty());
        c.verify = false;
        assert!(client_config(&c).is_ok());
    }
}
