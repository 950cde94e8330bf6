//! https: requests over TLS with the test CA, every certificate problem
//! reported as the same `tls` detail, verification turned off on purpose,
//! extra roots from PEM, redirects across schemes and client certificates.

use resource_handle::{Capability, Identity, NetworkAccessManager, ResourceRequest, Trace};

use super::{build, expect_error, expect_status, sha256, CaseResult, Ctx, Fetched, TLS_HOST};
use crate::servers::{body_pattern, pki, CertKind, ClientAuth};

cases!("tls";
    "tls.get-with-test-ca" => get_with_test_ca [Capability::Https],
    "tls.post-body" => post_body [Capability::Https],
    "tls.download-1mib" => download_1mib [Capability::Https],
    "tls.upload-1mib" => upload_1mib [Capability::Https],
    "tls.keep-alive-reuse" => keep_alive [Capability::Https],
    "tls.untrusted-without-test-ca" => without_ca [Capability::Https],
    "tls.expired-certificate" => expired [Capability::Https],
    "tls.wrong-host" => wrong_host [Capability::Https],
    "tls.untrusted-second-ca" => second_ca [Capability::Https],
    "tls.self-signed" => self_signed [Capability::Https],
    "tls.no-verify-accepts-expired" => no_verify_expired [Capability::Https],
    "tls.no-verify-accepts-wrong-host" => no_verify_wrong_host [Capability::Https],
    "tls.no-verify-accepts-untrusted" => no_verify_untrusted [Capability::Https],
    "tls.pem-bundle-two-cas" => pem_bundle [Capability::Https],
    "tls.bad-pem-is-invalid-request" => bad_pem,
    "tls.redirect-to-http-refused" => redirect_to_http [Capability::Https],
    "tls.redirect-from-http-to-https" => redirect_to_https [Capability::Https],
    "tls.client-certificate" => client_certificate [Capability::Https, Capability::ClientCertificate],
    "tls.client-certificate-required-missing" => client_certificate_missing [Capability::Https],
    "tls.client-identity-key-mismatch" => client_identity_key_mismatch [Capability::Https, Capability::ClientCertificate],
);

/// Loads `url` with `manager`.
fn load(ctx: &Ctx, manager: &NetworkAccessManager, url: &str) -> Result<Fetched, String> {
    Ok(ctx.fetch_with(manager, build(ResourceRequest::get(url))?))
}

/// Fails unless the trace ended with a `tls` error whose detail is `detail`.
fn expect_tls(t: &Trace, detail: &str) -> Result<(), String> {
    expect_error(t, "tls")?;
    let got = t.error.as_ref().and_then(|e| e.detail.as_deref());
    ensure!(
        got == Some(detail),
        "expected the TLS problem {detail}, got {got:?} ({})",
        t.error.as_ref().map(|e| e.message.as_str()).unwrap_or("")
    );
    Ok(())
}

/// GETs `/echo` from a TLS origin presenting `kind`'s certificate with a
/// manager that trusts the test CA only, expecting the TLS problem `detail`;
/// the origin must never see a request.
fn refused(ctx: &mut Ctx, kind: CertKind, detail: &str) -> CaseResult {
    let base = ctx.tls_origin(kind)?;
    let m = ctx.tls_manager()?;
    let f = load(ctx, &m, &format!("{base}/echo"))?;
    expect_tls(&f.trace, detail)?;
    // Whether the server sees the handshake fail depends on when the
    // client checks the name (OpenSSL's callers check it after the
    // handshake); what matters is that no request went out.
    ensure_eq!(ctx.tls_server()?.requests().len(), 0);
    Ok(f.trace)
}

/// GETs `/echo` from a TLS origin presenting `kind`'s certificate with
/// verification turned off and no root at all: it must succeed.
fn accepted_unverified(ctx: &mut Ctx, kind: CertKind) -> CaseResult {
    let base = ctx.tls_origin(kind)?;
    let m =
        ctx.manager_with(|b| Ok(b.tls_system_roots(false).danger_accept_invalid_certs(true)))?;
    let f = load(ctx, &m, &format!("{base}/echo"))?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.json()?["target"], "/echo");
    ensure_eq!(ctx.tls_server()?.requests().len(), 1);
    Ok(f.trace)
}

fn get_with_test_ca(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.tls_origin(CertKind::Valid)?;
    let m = ctx.tls_manager()?;
    let f = load(ctx, &m, &format!("{base}/echo?q=1"))?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.version.as_deref(), Some("HTTP/1.1"));
    let e = f.json()?;
    ensure_eq!(e["target"], "/echo?q=1");
    ensure_eq!(e["host"], serde_json::json!([format!("{TLS_HOST}:PORT")]));
    let hs = ctx.tls_server()?.handshakes();
    ensure_eq!(hs.len(), 1);
    // The name asked for went out as SNI.
    ensure_eq!(hs[0].sni.as_deref(), Some(TLS_HOST));
    ensure_eq!(hs[0].client_cert, None);
    Ok(f.trace)
}

fn post_body(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.tls_origin(CertKind::Valid)?;
    let m = ctx.tls_manager()?;
    let body = "name=value&over=tls";
    let f = ctx.fetch_with(
        &m,
        build(ResourceRequest::post(format!("{base}/echo")).body(body))?,
    );
    expect_status(&f.trace, 200)?;
    let e = f.json()?;
    ensure_eq!(e["method"], "POST");
    ensure_eq!(e["framing"], format!("length:{}", body.len()));
    ensure_eq!(e["body"], body);
    Ok(f.trace)
}

fn download_1mib(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.tls_origin(CertKind::Valid)?;
    let m = ctx.tls_manager()?;
    let f = load(ctx, &m, &format!("{base}/bytes/1048576"))?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.body_bytes, 1 << 20);
    ensure_eq!(f.trace.body_sha256, sha256(&body_pattern(1 << 20)));
    Ok(f.trace)
}

fn upload_1mib(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.tls_origin(CertKind::Valid)?;
    let m = ctx.tls_manager()?;
    let body = body_pattern(1 << 20);
    let digest = sha256(&body);
    let f = ctx.fetch_with(
        &m,
        build(ResourceRequest::post(format!("{base}/echo")).body(body))?,
    );
    expect_status(&f.trace, 200)?;
    let e = f.json()?;
    ensure_eq!(e["body_len"], 1 << 20);
    ensure_eq!(e["body_sha256"], digest);
    Ok(f.trace)
}

fn keep_alive(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.tls_origin(CertKind::Valid)?;
    let m = ctx.tls_manager()?;
    let mut last = None;
    for path in ["/bytes/1000", "/echo", "/status/200"] {
        let f = load(ctx, &m, &format!("{base}{path}"))?;
        expect_status(&f.trace, 200)?;
        last = Some(f.trace);
    }
    let server = ctx.tls_server()?;
    ensure_eq!(server.requests().len(), 3);
    ensure_eq!(server.stats().accepted(), 1);
    ensure_eq!(server.handshakes().len(), 1);
    last.ok_or_else(|| "no load ran".into())
}

fn without_ca(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.tls_origin(CertKind::Valid)?;
    // Neither the system's roots nor the test CA: nothing is trusted.
    let m = ctx.manager_with(|b| Ok(b.tls_system_roots(false)))?;
    let f = load(ctx, &m, &format!("{base}/echo"))?;
    expect_tls(&f.trace, "untrusted_issuer")?;
    ensure_eq!(ctx.tls_server()?.requests().len(), 0);
    Ok(f.trace)
}

fn expired(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, CertKind::Expired, "expired")
}

fn wrong_host(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, CertKind::WrongHost, "wrong_host")
}

fn second_ca(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, CertKind::Untrusted, "untrusted_issuer")
}

fn self_signed(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, CertKind::SelfSigned, "untrusted_issuer")
}

fn no_verify_expired(ctx: &mut Ctx) -> CaseResult {
    accepted_unverified(ctx, CertKind::Expired)
}

fn no_verify_wrong_host(ctx: &mut Ctx) -> CaseResult {
    accepted_unverified(ctx, CertKind::WrongHost)
}

fn no_verify_untrusted(ctx: &mut Ctx) -> CaseResult {
    accepted_unverified(ctx, CertKind::Untrusted)
}

fn pem_bundle(ctx: &mut Ctx) -> CaseResult {
    // Two servers: one issued by the bundle's first CA, one by its second.
    let first = ctx.tls_origin(CertKind::BundleIssued)?;
    let second = ctx.tls_origin(CertKind::Valid)?;
    let bundle = pki()?.bundle_pem();
    let m = ctx.manager_with(|b| {
        b.tls_system_roots(false)
            .add_root_certificates_pem(bundle.as_bytes())
    })?;
    let f = load(ctx, &m, &format!("{first}/echo"))?;
    expect_status(&f.trace, 200)?;
    let g = load(ctx, &m, &format!("{second}/echo"))?;
    expect_status(&g.trace, 200)?;
    for s in ctx.tls_servers() {
        ensure_eq!(s.requests().len(), 1);
    }
    Ok(g.trace)
}

fn bad_pem(ctx: &mut Ctx) -> CaseResult {
    let url = format!("https://{TLS_HOST}/");
    let built = ctx.manager_with(|b| {
        b.add_root_certificates_pem(
            b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
    });
    ensure!(
        built.is_err(),
        "a manager with a damaged PEM certificate was built"
    );
    // The same check, for the error itself: it is the builder's, before any backend.
    let err = match NetworkAccessManager::builder().add_root_certificates_pem(b"no pem here") {
        Ok(_) => return Err("PEM text without a certificate was accepted".into()),
        Err(e) => e,
    };
    let t = Trace::for_error(ctx.backend().name(), &url, &err);
    expect_error(&t, "invalid_request")?;
    Ok(t)
}

fn redirect_to_http(ctx: &mut Ctx) -> CaseResult {
    let target = ctx.origin_url("/echo")?;
    let base = ctx.tls_origin(CertKind::Valid)?;
    let m = ctx.tls_manager()?;
    let url = format!("{base}/redirect-to?url={}", target);
    let f = load(ctx, &m, &url)?;
    expect_error(&f.trace, "redirect_refused")?;
    ensure_eq!(ctx.tls_server()?.requests().len(), 1);
    ensure_eq!(ctx.origin()?.requests().len(), 0);
    Ok(f.trace)
}

fn redirect_to_https(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.tls_origin(CertKind::Valid)?;
    let target = format!("{base}/echo");
    let url = ctx.origin_url(&format!("/redirect-to?url={}", target))?;
    let m = ctx.tls_manager()?;
    let f = load(ctx, &m, &url)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.url, target);
    ensure_eq!(f.trace.redirects.len(), 1);
    ensure_eq!(f.json()?["target"], "/echo");
    ensure_eq!(ctx.tls_server()?.requests().len(), 1);
    Ok(f.trace)
}

fn client_identity() -> Result<Identity, String> {
    let pki = pki()?;
    Identity::from_pem(
        pki.client_cert_pem().as_bytes(),
        pki.client_key_pem().as_bytes(),
    )
    .map_err(|e| format!("the client identity did not load: {e}"))
}

fn client_certificate(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.tls_origin_with(CertKind::Valid, ClientAuth::Required)?;
    let identity = client_identity()?;
    let m = ctx.tls_manager_with(|b| Ok(b.identity(identity)))?;
    let f = load(ctx, &m, &format!("{base}/echo"))?;
    expect_status(&f.trace, 200)?;
    let hs = ctx.tls_server()?.handshakes();
    let presented: Vec<Option<&[u8]>> = hs.iter().map(|h| h.client_cert.as_deref()).collect();
    ensure!(
        presented.contains(&Some(pki()?.client_cert_der())),
        "the server never saw the client certificate: {hs:?}"
    );
    Ok(f.trace)
}

/// A client certificate with a key that is not its own: the https load
/// fails with `tls`/`client_certificate` on every backend (libcurl can only
/// tell at the handshake, so the rustls backends report it there too rather
/// than when the manager is built), and the server receives nothing.
fn client_identity_key_mismatch(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.tls_origin_with(CertKind::Valid, ClientAuth::Required)?;
    let other_key = rcgen::KeyPair::generate().map_err(|e| format!("no key: {e}"))?;
    let identity = Identity::from_pem(
        pki()?.client_cert_pem().as_bytes(),
        other_key.serialize_pem().as_bytes(),
    )
    .map_err(|e| format!("the identity did not load: {e}"))?;
    let m = ctx.tls_manager_with(|b| Ok(b.identity(identity)))?;
    let f = load(ctx, &m, &format!("{base}/echo"))?;
    expect_error(&f.trace, "tls")?;
    let detail = f.trace.error.as_ref().and_then(|e| e.detail.as_deref());
    ensure_eq!(detail, Some("client_certificate"));
    ensure_eq!(ctx.tls_server()?.requests().len(), 0);
    Ok(f.trace)
}

fn client_certificate_missing(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.tls_origin_with(CertKind::Valid, ClientAuth::Required)?;
    let m = ctx.tls_manager()?;
    let f = load(ctx, &m, &format!("{base}/echo"))?;
    expect_error(&f.trace, "tls")?;
    ensure_eq!(ctx.tls_server()?.requests().len(), 0);
    Ok(f.trace)
}
