//! What curl-rust does not wrap, set through curl-sys: CURLOPT_PREREQFUNCTION
//! (libcurl calls it each time a request is about to go out on an
//! established or reused connection), CURLOPT_FORBID_REUSE set while a
//! transfer runs, a CURLOPT_HTTPHEADER list of raw bytes (curl-rust's
//! `List` takes UTF-8 only, but a field value may carry obs-text),
//! CURLOPT_RESOLVE, CUSTOMREQUEST and the body sizes put back to their
//! defaults on a reused handle, the trust
//! store options (CAINFO and CAPATH cleared, CAINFO_BLOB without a copy),
//! CURLOPT_HEADEROPT, CURLOPT_SUPPRESS_CONNECT_HEADERS, `curl_easy_getinfo`
//! and `curl_easy_pause` on the raw handle (from inside the transfer's own
//! callbacks, which have no `Easy2`), and OpenSSL's verify mode on the
//! `SSL_CTX`.
//! This is the only `unsafe` of the crate.
//!
//! The prereq callback is how the backend knows two things libcurl keeps to
//! itself: when the connection is up (the idle timeout starts there, not
//! during connect), and when libcurl is about to send the request a second
//! time because the reused connection it first went out on died before any
//! response byte (libcurl retries that up to 5 times, for any method). The
//! contract allows one such retry, and only for requests
//! [`WireRequest::may_retry_on_stale_connection`](handle_api::WireRequest::may_retry_on_stale_connection)
//! allows: any other attempt is aborted here.

use std::cell::Cell;
use std::os::raw::{c_char, c_int, c_long, c_void};
use std::sync::Arc;
use std::time::Instant;

/// CURLOPT_PREREQFUNCTION (libcurl 7.80), CURLOPTTYPE_FUNCTIONPOINT + 312.
const CURLOPT_PREREQFUNCTION: curl_sys::CURLoption = curl_sys::CURLOPTTYPE_FUNCTIONPOINT + 312;
/// CURLOPT_PREREQDATA, CURLOPTTYPE_CBPOINT (= OBJECTPOINT) + 313.
const CURLOPT_PREREQDATA: curl_sys::CURLoption = curl_sys::CURLOPTTYPE_OBJECTPOINT + 313;
/// CURLOPT_FORBID_REUSE, CURLOPTTYPE_LONG + 75.
const CURLOPT_FORBID_REUSE: curl_sys::CURLoption = curl_sys::CURLOPTTYPE_LONG + 75;
/// CURLOPT_HEADEROPT, CURLOPTTYPE_VALUES (= LONG) + 229.
const CURLOPT_HEADEROPT: curl_sys::CURLoption = curl_sys::CURLOPTTYPE_LONG + 229;
/// CURLHEADER_SEPARATE: CURLOPT_HTTPHEADER goes to the origin only,
/// CURLOPT_PROXYHEADER to the proxy only.
const CURLHEADER_SEPARATE: c_long = 1;
/// CURLOPT_SUPPRESS_CONNECT_HEADERS, CURLOPTTYPE_LONG + 265.
const CURLOPT_SUPPRESS_CONNECT_HEADERS: curl_sys::CURLoption = curl_sys::CURLOPTTYPE_LONG + 265;
/// CURLINFO_HTTP_CONNECTCODE, CURLINFO_LONG + 22.
pub(crate) const CURLINFO_HTTP_CONNECTCODE: curl_sys::CURLINFO = curl_sys::CURLINFO_LONG + 22;
const CURL_PREREQFUNC_OK: c_int = 0;
const CURL_PREREQFUNC_ABORT: c_int = 1;

/// What the prereq callback shares with the transfer. It lives in a `Box`
/// owned by the transfer's handler, so its address is stable for as long as
/// libcurl may call back; every callback runs on the driver thread, which
/// is why plain `Cell`s suffice.
#[derive(Debug)]
pub(crate) struct Attempts {
    /// Requests libcurl started for this transfer so far.
    sent: Cell<u32>,
    /// Whether one re-send after a dead reused connection is allowed.
    may_retry: bool,
    /// Set when libcurl wanted to send the request again and was stopped.
    refused: Cell<bool>,
    /// When the connection of the current attempt was ready.
    connected: Cell<Option<Instant>>,
}

impl Attempts {
    pub(crate) fn new(may_retry: bool) -> Box<Attempts> {
        Box::new(Attempts {
            sent: Cell::new(0),
            may_retry,
            refused: Cell::new(false),
            connected: Cell::new(None),
        })
    }

    /// True when libcurl wanted to re-send the request and was not allowed to.
    pub(crate) fn refused(&self) -> bool {
        self.refused.get()
    }

    /// Records that a re-send was refused elsewhere (the body could not be rewound).
    pub(crate) fn refuse(&self) {
        self.refused.set(true);
    }

    /// When the current attempt's connection was ready; `None` while connecting.
    pub(crate) fn connected(&self) -> Option<Instant> {
        self.connected.get()
    }

    fn on_prereq(&self) -> c_int {
        let n = self.sent.get() + 1;
        self.sent.set(n);
        let allowed = n == 1 || (n == 2 && self.may_retry);
        if !allowed {
            self.refused.set(true);
            return CURL_PREREQFUNC_ABORT;
        }
        self.connected.set(Some(Instant::now()));
        CURL_PREREQFUNC_OK
    }
}

extern "C" fn prereq(
    clientp: *mut c_void,
    _primary_ip: *mut c_char,
    _local_ip: *mut c_char,
    _primary_port: c_int,
    _local_port: c_int,
) -> c_int {
    if clientp.is_null() {
        return CURL_PREREQFUNC_OK;
    }
    // SAFETY: clientp is the `Attempts` installed below, which outlives the
    // easy handle's transfers (see `Attempts`); it is only read through `&`.
    let attempts = unsafe { &*(clientp as *const Attempts) };
    // A panic must not unwind into C.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| attempts.on_prereq()))
        .unwrap_or(CURL_PREREQFUNC_ABORT)
}

/// Installs the prereq callback on the easy handle `raw`, reporting to
/// `attempts`, which must stay where it is until the easy handle is dropped.
pub(crate) fn install_prereq(
    raw: *mut curl_sys::CURL,
    attempts: &Attempts,
) -> Result<(), curl::Error> {
    let cb: extern "C" fn(*mut c_void, *mut c_char, *mut c_char, c_int, c_int) -> c_int = prereq;
    // SAFETY: the option takes a function pointer of exactly this signature
    // and a data pointer handed back to it untouched.
    unsafe {
        let rc = curl_sys::curl_easy_setopt(raw, CURLOPT_PREREQFUNCTION, cb);
        if rc != curl_sys::CURLE_OK {
            return Err(curl::Error::new(rc));
        }
        let data = attempts as *const Attempts as *mut c_void;
        let rc = curl_sys::curl_easy_setopt(raw, CURLOPT_PREREQDATA, data);
        if rc != curl_sys::CURLE_OK {
            return Err(curl::Error::new(rc));
        }
    }
    Ok(())
}

/// Makes libcurl close the transfer's connection when the transfer ends
/// instead of keeping it for reuse. libcurl reads the option when it is
/// done with the transfer, so setting it once the head is known is in time.
pub(crate) fn forbid_reuse(raw: *mut curl_sys::CURL) {
    // SAFETY: `raw` is a live easy handle owned by the driver thread, and
    // CURLOPT_FORBID_REUSE takes a long.
    unsafe {
        let _ = curl_sys::curl_easy_setopt(raw, CURLOPT_FORBID_REUSE, 1 as c_long);
    }
}

/// A `curl_slist` of header lines as bytes: curl-rust's `List` takes UTF-8
/// only (a field value may carry obs-text) and copies each line twice on
/// the way. It must outlive the transfers of the easy handle it is set
/// on, which is why the transfer's handler owns it.
#[derive(Debug)]
pub(crate) struct RawList(*mut curl_sys::curl_slist);

// SAFETY: the list is owned data, only ever touched by the thread that owns
// the easy handle (and freed by it).
unsafe impl Send for RawList {}

impl RawList {
    /// A list with no lines yet.
    pub(crate) fn empty() -> RawList {
        RawList(std::ptr::null_mut())
    }

    /// Appends `line` (without NUL); false if it holds a NUL (never the
    /// case for header lines handle-api validated) or libcurl is out of
    /// memory.
    pub(crate) fn push(&mut self, line: &[u8]) -> bool {
        // Most lines fit on the stack; libcurl copies the line anyway.
        let mut small = [0u8; 256];
        let mut large = Vec::new();
        let buf: &mut [u8] = if line.len() < small.len() {
            &mut small[..=line.len()]
        } else {
            large.resize(line.len() + 1, 0);
            &mut large
        };
        buf[..line.len()].copy_from_slice(line);
        buf[line.len()] = 0;
        let Ok(c) = std::ffi::CStr::from_bytes_with_nul(buf) else {
            return false;
        };
        // SAFETY: `c` is a valid C string; libcurl copies it.
        let next = unsafe { curl_sys::curl_slist_append(self.0, c.as_ptr()) };
        if next.is_null() {
            return false;
        }
        self.0 = next;
        true
    }

    /// Sets the list as CURLOPT_HTTPHEADER of the easy handle `raw`.
    pub(crate) fn install(&self, raw: *mut curl_sys::CURL) -> Result<(), curl::Error> {
        // SAFETY: the list stays alive as long as the handler that owns it,
        // which outlives every transfer of the easy handle.
        let rc = unsafe { curl_sys::curl_easy_setopt(raw, curl_sys::CURLOPT_HTTPHEADER, self.0) };
        if rc != curl_sys::CURLE_OK {
            return Err(curl::Error::new(rc));
        }
        Ok(())
    }
}

impl Drop for RawList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: built by curl_slist_append above, freed once.
            unsafe { curl_sys::curl_slist_free_all(self.0) };
        }
    }
}

/// Clears CURLOPT_CAINFO and CURLOPT_CAPATH, which curl-rust sets on every
/// new easy handle to the files `openssl-probe` found: the roots a transfer
/// trusts are the backend's blob and nothing else.
pub(crate) fn clear_ca_locations(raw: *mut curl_sys::CURL) -> Result<(), curl::Error> {
    for option in [curl_sys::CURLOPT_CAINFO, curl_sys::CURLOPT_CAPATH] {
        // SAFETY: both options take a C string; NULL restores libcurl's
        // built-in default, which the bundled build leaves empty.
        let rc = unsafe { curl_sys::curl_easy_setopt(raw, option, std::ptr::null::<c_char>()) };
        if rc != curl_sys::CURLE_OK {
            return Err(curl::Error::new(rc));
        }
    }
    Ok(())
}

/// Sets CURLOPT_CAINFO_BLOB to `pem` without libcurl copying it: the bundle
/// is built once per backend and may hold the whole system store. The
/// caller keeps a clone of `pem` for as long as the easy handle lives
/// (libcurl duplicates the blob into each connection it opens).
pub(crate) fn set_ca_blob(raw: *mut curl_sys::CURL, pem: &Arc<[u8]>) -> Result<(), curl::Error> {
    let mut blob = curl_sys::curl_blob {
        data: pem.as_ptr() as *mut c_void,
        len: pem.len(),
        flags: curl_sys::CURL_BLOB_NOCOPY,
    };
    // SAFETY: libcurl copies the `curl_blob` struct itself; the bytes it
    // points at outlive the easy handle (see above) and are never written.
    let rc = unsafe {
        curl_sys::curl_easy_setopt(
            raw,
            curl_sys::CURLOPT_CAINFO_BLOB,
            &mut blob as *mut curl_sys::curl_blob,
        )
    };
    if rc != curl_sys::CURLE_OK {
        return Err(curl::Error::new(rc));
    }
    Ok(())
}

/// CURLOPT_HEADEROPT = CURLHEADER_SEPARATE and
/// CURLOPT_SUPPRESS_CONNECT_HEADERS = 1: the origin's headers never go into
/// a CONNECT, and the proxy's answer to the CONNECT never reaches the header
/// callback (it is not the origin's response).
pub(crate) fn separate_proxy_headers(raw: *mut curl_sys::CURL) -> Result<(), curl::Error> {
    for (option, value) in [
        (CURLOPT_HEADEROPT, CURLHEADER_SEPARATE),
        (CURLOPT_SUPPRESS_CONNECT_HEADERS, 1),
    ] {
        // SAFETY: both options take a long.
        let rc = unsafe { curl_sys::curl_easy_setopt(raw, option, value) };
        if rc != curl_sys::CURLE_OK {
            return Err(curl::Error::new(rc));
        }
    }
    Ok(())
}

/// CURLOPT_RESOLVE back to no list (curl-rust only sets lists). Entries an
/// earlier list added stay in the multi's DNS cache, as they would with a
/// new handle.
pub(crate) fn clear_resolve(raw: *mut curl_sys::CURL) -> Result<(), curl::Error> {
    // SAFETY: CURLOPT_RESOLVE takes a `curl_slist *`; NULL means none.
    let rc = unsafe {
        curl_sys::curl_easy_setopt(
            raw,
            curl_sys::CURLOPT_RESOLVE,
            std::ptr::null_mut::<curl_sys::curl_slist>(),
        )
    };
    if rc != curl_sys::CURLE_OK {
        return Err(curl::Error::new(rc));
    }
    Ok(())
}

/// Puts CURLOPT_CUSTOMREQUEST (to none), CURLOPT_POSTFIELDSIZE_LARGE and
/// CURLOPT_INFILESIZE_LARGE (to -1, unknown) back to libcurl's defaults,
/// which curl-rust cannot express, before a reused handle gets its method.
pub(crate) fn clear_method_options(raw: *mut curl_sys::CURL) -> Result<(), curl::Error> {
    // SAFETY: CUSTOMREQUEST takes a C string (NULL: none); the two sizes
    // take a curl_off_t, for which -1 is the documented default.
    unsafe {
        let rc = curl_sys::curl_easy_setopt(
            raw,
            curl_sys::CURLOPT_CUSTOMREQUEST,
            std::ptr::null::<c_char>(),
        );
        if rc != curl_sys::CURLE_OK {
            return Err(curl::Error::new(rc));
        }
        for option in [
            curl_sys::CURLOPT_POSTFIELDSIZE_LARGE,
            curl_sys::CURLOPT_INFILESIZE_LARGE,
        ] {
            let rc = curl_sys::curl_easy_setopt(raw, option, -1 as curl_sys::curl_off_t);
            if rc != curl_sys::CURLE_OK {
                return Err(curl::Error::new(rc));
            }
        }
    }
    Ok(())
}

/// Detaches CURLOPT_HTTPHEADER from the easy handle (NULL list), so the
/// list an exchange lent libcurl can be freed while the handle waits for
/// its next exchange.
pub(crate) fn clear_http_headers(raw: *mut curl_sys::CURL) {
    // SAFETY: CURLOPT_HTTPHEADER takes a `curl_slist *`; NULL means none.
    unsafe {
        let _ = curl_sys::curl_easy_setopt(
            raw,
            curl_sys::CURLOPT_HTTPHEADER,
            std::ptr::null_mut::<curl_sys::curl_slist>(),
        );
    }
}

/// A long-valued `curl_easy_getinfo` item; `None` if libcurl has none.
pub(crate) fn long_info(raw: *mut curl_sys::CURL, info: curl_sys::CURLINFO) -> Option<i64> {
    let mut value: c_long = 0;
    // SAFETY: `raw` is a live easy handle and `info` a CURLINFO_LONG item,
    // which writes one long.
    let rc = unsafe { curl_sys::curl_easy_getinfo(raw, info, &mut value as *mut c_long) };
    // c_long is 32 bits on some platforms, 64 here.
    #[allow(clippy::useless_conversion)]
    let value = i64::from(value);
    (rc == curl_sys::CURLE_OK).then_some(value)
}

/// A double-valued `curl_easy_getinfo` item (the transfer's phase times,
/// in seconds); `None` if libcurl has none.
pub(crate) fn double_info(raw: *mut curl_sys::CURL, info: curl_sys::CURLINFO) -> Option<f64> {
    let mut value: f64 = 0.0;
    // SAFETY: `raw` is a live easy handle and `info` a CURLINFO_DOUBLE item,
    // which writes one double.
    let rc = unsafe { curl_sys::curl_easy_getinfo(raw, info, &mut value as *mut f64) };
    (rc == curl_sys::CURLE_OK).then_some(value)
}

/// A string-valued `curl_easy_getinfo` item, copied; `None` if libcurl has
/// none or it is not UTF-8.
pub(crate) fn string_info(raw: *mut curl_sys::CURL, info: curl_sys::CURLINFO) -> Option<String> {
    let mut value: *const c_char = std::ptr::null();
    // SAFETY: `raw` is a live easy handle and `info` a CURLINFO_STRING item,
    // which writes a pointer to a C string libcurl owns (or NULL).
    let rc = unsafe { curl_sys::curl_easy_getinfo(raw, info, &mut value as *mut *const c_char) };
    if rc != curl_sys::CURLE_OK || value.is_null() {
        return None;
    }
    // SAFETY: non-NULL, NUL-terminated, valid until the next transfer of
    // the handle; copied out at once.
    let text = unsafe { std::ffi::CStr::from_ptr(value) };
    text.to_str().ok().map(str::to_owned)
}

/// Pauses receiving on the easy handle `raw` (`curl_easy_pause` with
/// CURLPAUSE_RECV), from inside its own write callback: the bytes of the
/// current call were taken, and libcurl calls the write callback again only
/// after `unpause_write`. Unlike returning CURL_WRITEFUNC_PAUSE, nothing is
/// handed back for libcurl to buffer and replay. Sending is left running
/// (the upload reader never pauses). False if libcurl refused.
pub(crate) fn pause_receive(raw: *mut curl_sys::CURL) -> bool {
    // SAFETY: `raw` is the live easy handle whose callback is running;
    // libcurl allows curl_easy_pause from within its callbacks.
    let rc = unsafe { curl_sys::curl_easy_pause(raw, curl_sys::CURLPAUSE_RECV) };
    rc == curl_sys::CURLE_OK
}

/// An easy handle's raw pointer, kept by its own handler so the callbacks
/// can query and pause the transfer they run for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawEasy(pub(crate) *mut curl_sys::CURL);

// SAFETY: only a handle to the easy handle that owns the handler holding
// it; dereferenced (by libcurl) only on the driver thread that owns both.
unsafe impl Send for RawEasy {}

impl Default for RawEasy {
    fn default() -> Self {
        RawEasy(std::ptr::null_mut())
    }
}

/// Makes OpenSSL fail the handshake itself when the server's chain does not
/// verify (`SSL_VERIFY_PEER`), instead of libcurl's default of finishing
/// the handshake and checking the host name before the chain. That puts the
/// chain's problems (issuer, validity) ahead of the host name's, in the
/// order rustls reports them, so a certificate with several problems gets
/// the same [`TlsProblem`](handle_api::TlsProblem) on every backend.
pub(crate) fn verify_peer_in_handshake(ssl_ctx: *mut c_void) {
    if ssl_ctx.is_null() {
        return;
    }
    // SAFETY: libcurl hands CURLOPT_SSL_CTX_FUNCTION the `SSL_CTX *` of the
    // connection being set up, built by the same OpenSSL openssl-sys links.
    unsafe {
        openssl_sys::SSL_CTX_set_verify(
            ssl_ctx as *mut openssl_sys::SSL_CTX,
            openssl_sys::SSL_VERIFY_PEER,
            Some(verify_callback),
        );
    }
}

/// OpenSSL's verdict on each certificate of the chain, kept as it is. On a
/// failure the thread's error queue is emptied first: a failed signature
/// check leaves low-level errors (`asn1 encoding routines::EVP lib`) that
/// would come before OpenSSL's CERTIFICATE_VERIFY_FAILED, and libcurl only
/// records the verify result (CURLINFO_SSL_VERIFYRESULT) when the earliest
/// error of the queue is that one.
extern "C" fn verify_callback(
    preverify_ok: c_int,
    _store: *mut openssl_sys::X509_STORE_CTX,
) -> c_int {
    if preverify_ok == 0 {
        // SAFETY: clears this thread's OpenSSL error queue; no pointers involved.
        unsafe { openssl_sys::ERR_clear_error() };
    }
    preverify_ok
}
