//! `ResourceHandleClient`: WebCore-style callbacks over a handle's events.

use crate::error::Error;
use crate::events::Event;
use crate::handle::ResourceHandle;
use crate::response::ResourceResponse;

/// Callbacks for applications that prefer them to pulling events. Each
/// method has an empty default so a client implements only what it needs.
#[allow(unused_variables)]
pub trait ResourceHandleClient {
    /// A redirect is about to be followed.
    fn will_send_request(&mut self, from: &url::Url, to: &url::Url, status: http::StatusCode) {}
    /// Request body bytes were sent.
    fn did_send_data(&mut self, sent: u64, total: Option<u64>) {}
    /// The response head arrived.
    fn did_receive_response(&mut self, response: &ResourceResponse) {}
    /// A body chunk arrived.
    fn did_receive_data(&mut self, data: &[u8]) {}
    /// Body progress.
    fn did_receive_progress(&mut self, received: u64, total: Option<u64>) {}
    /// The load completed.
    fn did_finish_loading(&mut self) {}
    /// The load failed.
    fn did_fail(&mut self, error: &Error) {}
}

fn dispatch(client: &mut dyn ResourceHandleClient, ev: &Event) {
    match ev {
        Event::Redirected { status, from, to } => client.will_send_request(from, to, *status),
        Event::UploadProgress { sent, total } => client.did_send_data(*sent, *total),
        Event::Response(r) => client.did_receive_response(r),
        Event::Data(d) => client.did_receive_data(d),
        Event::DownloadProgress { received, total } => {
            client.did_receive_progress(*received, *total)
        }
        Event::Finished => client.did_finish_loading(),
        Event::Failed(e) => client.did_fail(e),
    }
}

impl ResourceHandle {
    /// Drives the load to its end, calling `client` for each event.
    pub async fn run_client(mut self, client: &mut dyn ResourceHandleClient) {
        while let Some(ev) = self.next_event().await {
            dispatch(client, &ev);
        }
    }

    /// Blocking twin of [`run_client`](Self::run_client).
    pub fn run_client_blocking(self, client: &mut dyn ResourceHandleClient) {
        crate::block_on::block_on(self.run_client(client))
    }
}
