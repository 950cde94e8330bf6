//! What curl-rust does not wrap, set through curl-sys: CURLOPT_PREREQFUNCTION
//! (libcurl calls it each time a request is about to go out on an
//! established or reused connection), CURLOPT_FORBID_REUSE set while a
//! transfer runs, and a CURLOPT_HTTPHEADER list of raw bytes (curl-rust's
//! `List` takes UTF-8 only, but a field value may carry obs-text). This is
//! the only `unsafe` of the crate.
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
use std::time::Instant;

/// CURLOPT_PREREQFUNCTION (libcurl 7.80), CURLOPTTYPE_FUNCTIONPOINT + 312.
const CURLOPT_PREREQFUNCTION: curl_sys::CURLoption = curl_sys::CURLOPTTYPE_FUNCTIONPOINT + 312;
/// CURLOPT_PREREQDATA, CURLOPTTYPE_CBPOINT (= OBJECTPOINT) + 313.
const CURLOPT_PREREQDATA: curl_sys::CURLoption = curl_sys::CURLOPTTYPE_OBJECTPOINT + 313;
/// CURLOPT_FORBID_REUSE, CURLOPTTYPE_LONG + 75.
const CURLOPT_FORBID_REUSE: curl_sys::CURLoption = curl_sys::CURLOPTTYPE_LONG + 75;
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

/// A `curl_slist` of header lines as bytes, for values curl-rust's `List`
/// cannot hold. It must outlive the transfers of the easy handle it is set
/// on, which is why the transfer's handler owns it.
#[derive(Debug)]
pub(crate) struct RawList(*mut curl_sys::curl_slist);

// SAFETY: the list is owned data, only ever touched by the thread that owns
// the easy handle (and freed by it).
unsafe impl Send for RawList {}

impl RawList {
    /// Builds the list; `None` if a line holds a NUL (never the case for
    /// header lines handle-api validated) or libcurl is out of memory.
    pub(crate) fn new(lines: &[Vec<u8>]) -> Option<RawList> {
        let mut list = RawList(std::ptr::null_mut());
        for line in lines {
            let c = std::ffi::CString::new(line.clone()).ok()?;
            // SAFETY: `c` is a valid C string; libcurl copies it.
            let next = unsafe { curl_sys::curl_slist_append(list.0, c.as_ptr()) };
            if next.is_null() {
                return None;
            }
            list.0 = next;
        }
        Some(list)
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
