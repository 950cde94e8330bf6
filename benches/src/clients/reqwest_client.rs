//! reqwest, what users would pick instead: the async client (HTTP/1.1, no
//! TLS, no proxy, TCP_NODELAY, pool sized to the requests in flight) on a
//! two-worker tokio runtime of its own, one task per request in flight.
//! In the HTTP/2 workload the client is built with `http2_prior_knowledge()`
//! and its pool keeps the one connection every stream shares.

use std::time::Instant;

use http::header::{HeaderValue, CONTENT_LENGTH};
use http::Version;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use super::hyper_direct::ReadBody;
use super::{
    check_length, check_sink_answer, check_status, check_version, Protocol, Runner, Sample, STALL,
    USER_AGENT,
};

pub(crate) struct Reqwest {
    runtime: Runtime,
    client: reqwest::Client,
    in_flight: usize,
    want: Version,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("reqwest: {e}")
}

impl Reqwest {
    pub(crate) fn new(in_flight: usize, protocol: Protocol) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("reqwest")
            .build()
            .map_err(err)?;
        let client = {
            // The client spawns nothing until used, but build it inside the
            // runtime all the same, as an application would.
            let _guard = runtime.enter();
            let builder = reqwest::Client::builder()
                .no_proxy()
                .user_agent(USER_AGENT)
                .pool_max_idle_per_host(in_flight.max(1))
                .tcp_nodelay(true);
            match protocol {
                Protocol::Http1 => builder.http1_only(),
                Protocol::Http2PriorKnowledge => builder.http2_prior_knowledge(),
            }
            .build()
            .map_err(err)?
        };
        Ok(Reqwest {
            runtime,
            client,
            in_flight: in_flight.max(1),
            want: protocol.version(),
        })
    }
}

/// Sends the request and drains the body; checks the version, returns the
/// status, the length and its first bytes.
async fn exchange(
    req: reqwest::RequestBuilder,
    (want, url): (Version, &str),
) -> Result<(u16, u64, Vec<u8>), String> {
    let mut response = req.send().await.map_err(err)?;
    check_version(response.version(), want, url)?;
    let status = response.status().as_u16();
    let mut n = 0u64;
    let mut keep = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(err)? {
        n += chunk.len() as u64;
        if keep.len() < 256 {
            keep.extend_from_slice(&chunk[..chunk.len().min(256)]);
        }
    }
    Ok((status, n, keep))
}

impl Runner for Reqwest {
    fn requests(&mut self, url: &str, until: Instant) -> Result<Sample, String> {
        let parsed = reqwest::Url::parse(url).map_err(err)?;
        let client = self.client.clone();
        let n = self.in_flight;
        let want = self.want;
        let url = url.to_owned();
        self.runtime.block_on(async move {
            let mut tasks = JoinSet::new();
            for _ in 0..n {
                let (client, parsed, url) = (client.clone(), parsed.clone(), url.clone());
                tasks.spawn(async move {
                    let mut done = 0u64;
                    loop {
                        let (status, _, _) =
                            exchange(client.get(parsed.clone()), (want, &url)).await?;
                        check_status(status, &url)?;
                        done += 1;
                        if Instant::now() >= until {
                            return Ok::<u64, String>(done);
                        }
                    }
                });
            }
            let mut total = 0;
            let limit = until.saturating_duration_since(Instant::now()) + STALL;
            tokio::time::timeout(limit, async {
                while let Some(r) = tasks.join_next().await {
                    total += r.map_err(err)??;
                }
                Ok::<(), String>(())
            })
            .await
            .map_err(|_| "reqwest: requests stalled".to_owned())??;
            Ok(Sample::requests(total))
        })
    }

    fn download(&mut self, url: &str, expected: u64) -> Result<Sample, String> {
        let client = self.client.clone();
        let want = self.want;
        let url = url.to_owned();
        self.runtime.block_on(async move {
            let (status, n, _) = exchange(client.get(&url), (want, &url)).await?;
            check_status(status, &url)?;
            check_length(n, expected)
        })
    }

    fn upload(&mut self, url: &str, len: u64) -> Result<Sample, String> {
        let client = self.client.clone();
        let want = self.want;
        let url = url.to_owned();
        self.runtime.block_on(async move {
            let req = client
                .post(&url)
                .header(CONTENT_LENGTH, HeaderValue::from(len))
                .body(reqwest::Body::wrap(ReadBody::generated(len)));
            let (status, _, keep) = exchange(req, (want, &url)).await?;
            check_status(status, &url)?;
            check_sink_answer(&keep, len).map(Sample::transfer)
        })
    }
}
