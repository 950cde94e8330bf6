//! The manager's TLS settings on libcurl's OpenSSL: the roots as one
//! CURLOPT_CAINFO_BLOB (and no CA file or directory besides), verification
//! with CURLOPT_SSL_VERIFYPEER/VERIFYHOST, the client identity with
//! CURLOPT_SSLCERT_BLOB/SSLKEY_BLOB; and the way back, from a failed
//! handshake to the [`TlsProblem`] every backend reports alike.

use std::sync::Arc;

use curl::easy::Easy2;
use handle_api::{Result, TlsConfig, TlsProblem};

use crate::error;
use crate::wire;

/// The TLS options of every transfer of one backend, prepared once: the
/// root bundle may hold the whole system store, which is not worth
/// encoding again for each request.
#[derive(Clone)]
pub(crate) struct TlsSettings {
    /// The trusted roots as one PEM bundle; `None` when there are none, or
    /// when nothing is verified.
    roots_pem: Option<Arc<[u8]>>,
    verify: bool,
    /// The client chain and key, PEM.
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client key never appears in logs.
        f.debug_struct("TlsSettings")
            .field("roots_pem_bytes", &self.roots_pem.as_ref().map(|p| p.len()))
            .field("verify", &self.verify)
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

impl TlsSettings {
    pub(crate) fn new(config: &TlsConfig) -> TlsSettings {
        // An empty blob is an error to libcurl ("error importing CA
        // certificate blob"); an empty store is what "no roots" means, and
        // fails verification as an unknown issuer, as it does with rustls.
        let roots_pem = config
            .verify
            .then(|| config.roots_pem())
            .filter(|pem| !pem.is_empty())
            .map(|pem| Arc::from(pem.into_bytes()));
        TlsSettings {
            roots_pem,
            verify: config.verify,
            identity: config.identity.as_ref().map(|id| {
                (
                    id.cert_pem().as_bytes().to_vec(),
                    id.key_pem().as_bytes().to_vec(),
                )
            }),
        }
    }

    /// Whether the server's chain and host name are verified.
    pub(crate) fn verify(&self) -> bool {
        self.verify
    }

    /// Sets the TLS options on `easy`. Returns the root bundle, which the
    /// caller keeps alive as long as the easy handle (libcurl reads it in
    /// place).
    pub(crate) fn apply<H>(&self, easy: &mut Easy2<H>) -> Result<Option<Arc<[u8]>>> {
        let set = |what: &'static str| move |e| error::setup(what, e);
        wire::clear_ca_locations(easy.raw()).map_err(set("clearing CAINFO and CAPATH"))?;
        if let Some(pem) = &self.roots_pem {
            wire::set_ca_blob(easy.raw(), pem).map_err(set("CAINFO_BLOB"))?;
        }
        easy.ssl_verify_peer(self.verify)
            .map_err(set("SSL_VERIFYPEER"))?;
        easy.ssl_verify_host(self.verify)
            .map_err(set("SSL_VERIFYHOST"))?;
        if let Some((cert, key)) = &self.identity {
            easy.ssl_cert_blob(cert).map_err(set("SSLCERT_BLOB"))?;
            easy.ssl_cert_type("PEM").map_err(set("SSLCERTTYPE"))?;
            easy.ssl_key_blob(key).map_err(set("SSLKEY_BLOB"))?;
            easy.ssl_key_type("PEM").map_err(set("SSLKEYTYPE"))?;
        }
        Ok(self.roots_pem.clone())
    }
}

// OpenSSL's X509_V_ERR codes, as CURLINFO_SSL_VERIFYRESULT reports them.
const X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT: i64 = 2;
const X509_V_ERR_CERT_SIGNATURE_FAILURE: i64 = 7;
const X509_V_ERR_CERT_NOT_YET_VALID: i64 = 9;
const X509_V_ERR_CERT_HAS_EXPIRED: i64 = 10;
const X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT: i64 = 18;
const X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN: i64 = 19;
const X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: i64 = 20;
const X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE: i64 = 21;
const X509_V_ERR_CERT_UNTRUSTED: i64 = 27;
const X509_V_ERR_HOSTNAME_MISMATCH: i64 = 62;
const X509_V_ERR_IP_ADDRESS_MISMATCH: i64 = 64;

// The CURLcodes of TLS failures (curl.h).
const CURLE_PEER_FAILED_VERIFICATION: i64 = 60;
const CURLE_SSL_CERTPROBLEM: i64 = 58;
const CURLE_SSL_CLIENTCERT: i64 = 98;
const CURLE_RECV_ERROR: i64 = 56;
const CURLE_BAD_FUNCTION_ARGUMENT: i64 = 43;
const CURLE_SEND_ERROR: i64 = 55;

/// What was wrong, for a TLS failure: curl's code, OpenSSL's verify result
/// (CURLINFO_SSL_VERIFYRESULT) and curl's message.
///
/// A chain problem fails the handshake inside OpenSSL (see
/// [`wire::verify_peer_in_handshake`]) with the X509_V_ERR code as the
/// verify result. A host name mismatch is libcurl's own check after the
/// handshake: CURLE_PEER_FAILED_VERIFICATION with no chain error recorded
/// (0, or libcurl's placeholder 1 while nothing was verified yet).
pub(crate) fn problem(code: i64, verify_result: Option<i64>, message: &str) -> TlsProblem {
    match code {
        CURLE_PEER_FAILED_VERIFICATION => match verify_result.unwrap_or(0) {
            X509_V_ERR_CERT_HAS_EXPIRED | X509_V_ERR_CERT_NOT_YET_VALID => TlsProblem::Expired,
            // A signature that does not verify: the issuer found by name is
            // not the one that signed, so nothing trusted vouches for it.
            X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
            | X509_V_ERR_CERT_SIGNATURE_FAILURE
            | X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
            | X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
            | X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
            | X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
            | X509_V_ERR_CERT_UNTRUSTED => TlsProblem::UntrustedIssuer,
            X509_V_ERR_HOSTNAME_MISMATCH | X509_V_ERR_IP_ADDRESS_MISMATCH | 0 | 1 => {
                TlsProblem::WrongHost
            }
            // The server refused the client certificate as expired
            // (SSLV3_ALERT_CERTIFICATE_EXPIRED lands here, with no chain error).
            _ if is_alert_about_our_certificate(message) => TlsProblem::ClientCertificate,
            _ => TlsProblem::Handshake,
        },
        CURLE_SSL_CERTPROBLEM | CURLE_SSL_CLIENTCERT => TlsProblem::ClientCertificate,
        _ if is_client_identity_refused(code, message) => TlsProblem::ClientCertificate,
        _ if is_alert_about_our_certificate(message) => TlsProblem::ClientCertificate,
        _ => TlsProblem::Handshake,
    }
}

/// True for a failure that is a TLS one even though its code is a plain
/// send or receive error: with TLS 1.3 the server judges the client's
/// certificate after the client's handshake is done, so its refusal (an
/// alert) arrives on the first read or write of the request.
pub(crate) fn is_late_certificate_alert(code: i64, message: &str) -> bool {
    matches!(code, CURLE_RECV_ERROR | CURLE_SEND_ERROR) && is_alert_about_our_certificate(message)
}

/// True when OpenSSL would not take the client identity (a key that is not
/// the certificate's): libcurl reports that as a bad argument, not as a
/// certificate problem.
pub(crate) fn is_client_identity_refused(code: i64, message: &str) -> bool {
    code == CURLE_BAD_FUNCTION_ARGUMENT
        && (message.contains("private key") || message.contains("certificate"))
}

/// An alert the server sent about a certificate: the server never objects
/// to its own, so it is about the client's (absent, unknown, expired or
/// refused). OpenSSL words received alerts `sslv3 alert …`, `tlsv1 alert …`
/// and `tlsv13 alert …`.
fn is_alert_about_our_certificate(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    let received =
        m.contains("sslv3 alert") || m.contains("tlsv1 alert") || m.contains("tlsv13 alert");
    received
        && [
            "certificate required",
            "bad certificate",
            "unknown ca",
            "certificate unknown",
            "certificate expired",
            "certificate revoked",
            "unsupported certificate",
            "access denied",
            // The server could not verify the client's CertificateVerify.
            "decrypt error",
        ]
        .iter()
        .any(|a| m.contains(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_results_name_the_problem() {
        use TlsProblem::*;
        let v = |result, msg: &str| problem(CURLE_PEER_FAILED_VERIFICATION, Some(result), msg);
        assert_eq!(
            v(10, "SSL certificate problem: certificate has expired"),
            Expired
        );
        assert_eq!(
            v(9, "SSL certificate problem: certificate is not yet valid"),
            Expired
        );
        for untrusted in [2, 18, 19, 20, 21, 27] {
            assert_eq!(
                v(untrusted, "SSL certificate problem"),
                UntrustedIssuer,
                "{untrusted}"
            );
        }
        // libcurl's own host check, after a chain that verified.
        let host = "SSL: no alternative certificate subject name matches target hostname 'a.test'";
        assert_eq!(v(0, host), WrongHost);
        assert_eq!(v(1, host), WrongHost);
        assert_eq!(v(62, "hostname mismatch"), WrongHost);
        assert_eq!(
            problem(CURLE_PEER_FAILED_VERIFICATION, None, host),
            WrongHost
        );
        assert_eq!(v(7, "certificate signature failure"), UntrustedIssuer);
        assert_eq!(v(26, "unsupported certificate purpose"), Handshake);
    }

    #[test]
    fn client_certificate_problems() {
        use TlsProblem::*;
        assert_eq!(
            problem(
                CURLE_SSL_CERTPROBLEM,
                None,
                "unable to set private key file"
            ),
            ClientCertificate
        );
        assert_eq!(
            problem(CURLE_SSL_CLIENTCERT, None, "TLS cert problem"),
            ClientCertificate
        );
        let alert = "OpenSSL SSL_read: error:0A00045C:SSL routines::tlsv13 alert certificate required, errno 0";
        assert!(is_late_certificate_alert(CURLE_RECV_ERROR, alert));
        assert_eq!(problem(CURLE_RECV_ERROR, None, alert), ClientCertificate);
        let unknown = "error:0A000418:SSL routines::tlsv1 alert unknown ca";
        assert_eq!(problem(35, None, unknown), ClientCertificate);
        // A plain reset is not a TLS failure, and other handshake errors are `handshake`.
        assert!(!is_late_certificate_alert(
            CURLE_RECV_ERROR,
            "Connection reset by peer"
        ));
        assert_eq!(
            problem(
                35,
                None,
                "error:0A00010B:SSL routines::wrong version number"
            ),
            Handshake
        );
        assert_eq!(problem(35, None, "tlsv1 alert protocol version"), Handshake);
    }

    #[test]
    fn no_roots_set_no_blob() {
        let mut config = TlsConfig::default();
        config.system_roots = false;
        assert!(TlsSettings::new(&config).roots_pem.is_none());
        config.extra_roots = vec![handle_api::Certificate::from_der(vec![0x30, 0x00])];
        let s = TlsSettings::new(&config);
        assert!(s
            .roots_pem
            .as_deref()
            .is_some_and(|p| p.starts_with(b"-----BEGIN")));
        config.verify = false;
        let s = TlsSettings::new(&config);
        assert!(s.roots_pem.is_none() && !s.verify());
    }
}
