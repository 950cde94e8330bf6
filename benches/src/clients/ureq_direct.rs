//! ureq used directly: one agent configured as the ureq backend configures
//! its own (no redirects, no automatic headers, statuses not errors, no
//! proxy, 256 KiB input buffer, TCP_NODELAY, pool sized to the requests in
//! flight), one thread per request in flight, bodies read in 64 KiB pieces.

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use http::header::{HeaderValue, ACCEPT, CONTENT_LENGTH, USER_AGENT as UA};
use http::{Method, Request, Version};
use ureq::config::AutoHeaderValue;
use ureq::{Agent, SendBody};

use super::{
    check_length, check_sink_answer, check_status, check_version, upload_source, Runner, Sample,
    PIECE, USER_AGENT,
};

/// As the ureq backend.
const INPUT_BUFFER: usize = 256 * 1024;
const MAX_IDLE_TOTAL: usize = 256;

pub(crate) struct UreqDirect {
    agent: Agent,
    in_flight: usize,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("ureq: {e}")
}

impl UreqDirect {
    pub(crate) fn new(in_flight: usize) -> Self {
        let per_host = in_flight.max(1);
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .save_redirect_history(false)
            .user_agent(AutoHeaderValue::None)
            .accept(AutoHeaderValue::None)
            .accept_encoding(AutoHeaderValue::None)
            .proxy(None)
            .https_only(false)
            .allow_non_standard_methods(true)
            .max_idle_connections_per_host(per_host)
            .max_idle_connections(MAX_IDLE_TOTAL.max(per_host))
            .max_idle_age(Duration::from_secs(90))
            .input_buffer_size(INPUT_BUFFER)
            .max_response_header_size(INPUT_BUFFER / 2)
            .no_delay(true)
            .build();
        UreqDirect {
            agent: config.new_agent(),
            in_flight: per_host,
        }
    }
}

/// Runs one request and reads the body in [`PIECE`]s; checks the version
/// (ureq speaks HTTP/1.1 only), returns the status, the body length and its
/// first bytes.
fn exchange(
    agent: &Agent,
    req: Request<SendBody<'_>>,
    url: &str,
    buf: &mut [u8],
) -> Result<(u16, u64, Vec<u8>), String> {
    let response = agent.run(req).map_err(err)?;
    check_version(response.version(), Version::HTTP_11, url)?;
    let status = response.status().as_u16();
    let mut reader = response.into_body().into_reader();
    let mut n = 0u64;
    let mut keep = Vec::new();
    loop {
        match reader.read(buf) {
            Ok(0) => return Ok((status, n, keep)),
            Ok(got) => {
                n += got as u64;
                if keep.len() < 256 {
                    keep.extend_from_slice(&buf[..got.min(256)]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
}

fn get(url: &str) -> Result<Request<SendBody<'static>>, String> {
    Request::builder()
        .method(Method::GET)
        .uri(url)
        .header(UA, HeaderValue::from_static(USER_AGENT))
        .header(ACCEPT, HeaderValue::from_static("*/*"))
        .body(SendBody::none())
        .map_err(err)
}

impl Runner for UreqDirect {
    fn requests(&mut self, url: &str, until: Instant) -> Result<Sample, String> {
        let agent = &self.agent;
        let total = thread::scope(|s| {
            let workers: Vec<_> = (0..self.in_flight)
                .map(|_| {
                    s.spawn(move || {
                        let mut buf = vec![0u8; PIECE];
                        let mut done = 0u64;
                        loop {
                            let (status, _, _) = exchange(agent, get(url)?, url, &mut buf)?;
                            check_status(status, url)?;
                            done += 1;
                            if Instant::now() >= until {
                                return Ok::<u64, String>(done);
                            }
                        }
                    })
                })
                .collect();
            let mut total = 0;
            for w in workers {
                total += w
                    .join()
                    .map_err(|_| "ureq: a worker panicked".to_owned())??;
            }
            Ok::<u64, String>(total)
        })?;
        Ok(Sample::requests(total))
    }

    fn download(&mut self, url: &str, expected: u64) -> Result<Sample, String> {
        let mut buf = vec![0u8; PIECE];
        let (status, n, _) = exchange(&self.agent, get(url)?, url, &mut buf)?;
        check_status(status, url)?;
        check_length(n, expected)
    }

    fn upload(&mut self, url: &str, len: u64) -> Result<Sample, String> {
        let req = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(UA, HeaderValue::from_static(USER_AGENT))
            .header(ACCEPT, HeaderValue::from_static("*/*"))
            .header(CONTENT_LENGTH, HeaderValue::from(len))
            .body(SendBody::from_owned_reader(upload_source(len)))
            .map_err(err)?;
        let mut buf = vec![0u8; PIECE];
        let (status, _, keep) = exchange(&self.agent, req, url, &mut buf)?;
        check_status(status, url)?;
        check_sink_answer(&keep, len).map(Sample::transfer)
    }
}
