//! The events of a load, in the order every backend delivers them:
//! `Redirected`* → `UploadProgress`* → `Response` → (`Data` | `DownloadProgress`)* →
//! exactly one of `Finished` or `Failed`.

use bytes::Bytes;
use http::StatusCode;
use url::Url;

use crate::error::Error;
use crate::response::ResourceResponse;

/// One step of a load (WebCore's ResourceHandleClient calls, Qt's reply signals).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The load is being redirected (WebCore's willSendRequest).
    Redirected {
        /// The status of the redirect response.
        status: StatusCode,
        /// The url that answered with the redirect.
        from: Url,
        /// Where the load goes next.
        to: Url,
    },
    /// Bytes of the request body were sent.
    UploadProgress {
        /// Bytes sent so far.
        sent: u64,
        /// The body's length, when known.
        total: Option<u64>,
    },
    /// The response head arrived (didReceiveResponse).
    Response(ResourceResponse),
    /// A chunk of the body (didReceiveData / readyRead).
    Data(Bytes),
    /// Body bytes delivered so far.
    DownloadProgress {
        /// Bytes delivered so far.
        received: u64,
        /// The declared length, when known.
        total: Option<u64>,
    },
    /// The load completed (didFinishLoading).
    Finished,
    /// The load failed (didFail).
    Failed(Error),
}

impl Event {
    /// The stable snake_case name used in traces.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Redirected { .. } => "redirected",
            Event::UploadProgress { .. } => "upload_progress",
            Event::Response(_) => "response",
            Event::Data(_) => "data",
            Event::DownloadProgress { .. } => "download_progress",
            Event::Finished => "finished",
            Event::Failed(_) => "failed",
        }
    }

    /// True for `Finished` and `Failed`.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Event::Finished | Event::Failed(_))
    }
}
