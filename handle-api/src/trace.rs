//! The trace: one JSON object per load, the same one `rh get --json` prints
//! and the conformance runner compares across backends.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::events::Event;
use crate::handle::ResourceHandle;

/// A redirect hop in a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRedirect {
    /// Status of the redirect response.
    pub status: u16,
    /// Where it pointed.
    pub location: String,
}

/// The error part of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceError {
    /// The stable error kind (`body_truncated`, `timeout`, …).
    pub kind: String,
    /// The message; it may differ between backends and is not compared.
    pub message: String,
    /// What went wrong besides the kind, compared like it: for `tls`, the
    /// certificate problem (`untrusted_issuer`, `expired`, `wrong_host`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What a load did, as observed by the application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// The backend that carried the load.
    pub backend: String,
    /// The final url.
    pub url: String,
    /// Status code, when a response arrived.
    pub status: Option<u16>,
    /// Reason phrase.
    pub reason: Option<String>,
    /// Protocol version (`HTTP/1.1`).
    pub version: Option<String>,
    /// Response headers `[name, value]` in received order.
    pub headers: Vec<(String, String)>,
    /// Body bytes delivered.
    pub body_bytes: u64,
    /// SHA-256 of the delivered body, hex.
    pub body_sha256: String,
    /// Where the response came from: network, cache, revalidated, or the
    /// scheme of a local response (data, file, …).
    pub source: Option<String>,
    /// Event names in order, consecutive data and progress events collapsed.
    pub events: Vec<String>,
    /// Redirect hops.
    pub redirects: Vec<TraceRedirect>,
    /// The error the load ended with.
    pub error: Option<TraceError>,
}

impl Trace {
    /// Runs `handle` to its end, recording everything.
    pub async fn record(backend: &str, mut handle: ResourceHandle) -> Trace {
        let mut rec = Recorder::new(backend, &handle);
        while let Some(ev) = handle.next_event().await {
            rec.observe(&ev);
        }
        rec.finish()
    }

    /// Blocking twin of [`Trace::record`].
    pub fn record_blocking(backend: &str, handle: ResourceHandle) -> Trace {
        crate::block_on::block_on(Self::record(backend, handle))
    }

    /// The trace of a load that failed before it started (a request that did not build).
    pub fn for_error(backend: &str, url: &str, error: &crate::Error) -> Trace {
        let mut rec = Recorder::empty(backend, url);
        rec.observe(&Event::Failed(error.clone()));
        rec.finish()
    }

    /// The trace with the fields that may legitimately differ between
    /// backends blanked: the backend's name and the error message.
    pub fn comparable(&self) -> Trace {
        let mut t = self.clone();
        t.backend = String::new();
        if let Some(e) = &mut t.error {
            e.message = String::new();
        }
        t
    }

    /// The trace as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Builds a [`Trace`] from events as they are observed.
#[derive(Debug)]
pub struct Recorder {
    trace: Trace,
    hasher: Sha256,
}

/// Events whose runs are collapsed, as their count depends on chunking.
fn collapsible(name: &str) -> bool {
    matches!(name, "data" | "download_progress" | "upload_progress")
}

impl Recorder {
    /// A recorder for a load on `backend`.
    pub fn new(backend: &str, handle: &ResourceHandle) -> Self {
        Self::empty(backend, handle.url().as_str())
    }

    fn empty(backend: &str, url: &str) -> Self {
        Recorder {
            trace: Trace {
                backend: backend.to_owned(),
                url: url.to_owned(),
                status: None,
                reason: None,
                version: None,
                headers: Vec::new(),
                body_bytes: 0,
                body_sha256: String::new(),
                source: None,
                events: Vec::new(),
                redirects: Vec::new(),
                error: None,
            },
            hasher: Sha256::new(),
        }
    }

    /// Records one event.
    pub fn observe(&mut self, ev: &Event) {
        let name = ev.name();
        let t = &mut self.trace;
        // A run of data and progress events is recorded as the distinct names it holds.
        let run_start = t
            .events
            .iter()
            .rposition(|e| !collapsible(e))
            .map_or(0, |i| i + 1);
        if !(collapsible(name) && t.events[run_start..].iter().any(|e| e == name)) {
            t.events.push(name.to_owned());
        }
        match ev {
            Event::Redirected { status, to, .. } => {
                t.redirects.push(TraceRedirect {
                    status: status.as_u16(),
                    location: to.to_string(),
                });
            }
            Event::Response(r) => {
                t.url = r.url().to_string();
                t.status = Some(r.status().as_u16());
                t.reason = Some(r.reason().to_owned());
                t.version = Some(r.version_str().to_owned());
                // A local response names its scheme (`data`, `file`, …).
                t.source = Some(match r.source() {
                    crate::ResponseSource::Local => r.url().scheme().to_owned(),
                    other => other.as_str().to_owned(),
                });
                t.headers = r
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
            }
            Event::Data(d) => {
                t.body_bytes += d.len() as u64;
                self.hasher.update(d);
            }
            Event::Failed(e) => {
                t.error = Some(TraceError {
                    kind: e.kind().as_str().to_owned(),
                    message: e.to_string(),
                    detail: e.detail().map(str::to_owned),
                });
            }
            _ => {}
        }
    }

    /// The finished trace.
    pub fn finish(mut self) -> Trace {
        let digest = self.hasher.finalize();
        self.trace.body_sha256 = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.trace
    }
}
