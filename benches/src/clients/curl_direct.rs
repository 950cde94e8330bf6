//! libcurl used directly: one `curl::multi::Multi` on the calling thread
//! driving as many easy handles as requests in flight, each easy handle
//! reused for the next request (curl's recommended way), with the options the
//! curl backend sets: HTTP/1.1, 256 KiB receive and upload buffers,
//! TCP_NODELAY, no redirects, no decoding, no proxy, no `Expect:`.
//!
//! In the HTTP/2 workload the easy handles ask for
//! `CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE` with `CURLOPT_PIPEWAIT` (wait for
//! the connection being opened rather than open another), and the multi
//! handle multiplexes (`CURLMOPT_PIPELINING` = `CURLPIPE_MULTIPLEX`): every
//! transfer is a stream of one connection.

use std::io::{Read, Repeat, Take};
use std::time::{Duration, Instant};

use curl::easy::{Easy2, Handler, HttpVersion, List, ReadError, WriteError};
use curl::multi::{Easy2Handle, Multi};
use http::Version;

use super::{
    check_length, check_sink_answer, check_status, check_version, upload_source, Protocol, Runner,
    Sample, STALL, USER_AGENT,
};

/// As the curl backend: larger than curl's 16 KiB default.
const RECEIVE_BUFFER: usize = 256 * 1024;
const UPLOAD_BUFFER: usize = 256 * 1024;

pub(crate) struct CurlDirect {
    multi: Multi,
    in_flight: usize,
    protocol: Protocol,
}

/// Counts body bytes, keeps a short response (the `/sink` answer) and the
/// version of the response's status line.
#[derive(Default)]
struct Collector {
    received: u64,
    keep: Vec<u8>,
    upload: Option<Take<Repeat>>,
    version: Option<Version>,
}

impl Collector {
    /// Ready for the next transfer of a reused handle.
    fn reset(&mut self) {
        self.received = 0;
        self.version = None;
    }
}

/// The version of a status line as curl hands it to the header callback
/// (`HTTP/1.1 200 OK`, `HTTP/2 200`); `None` for any other header line.
fn status_line_version(line: &[u8]) -> Option<Version> {
    let rest = line.strip_prefix(b"HTTP/")?;
    let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    Some(match &rest[..end] {
        b"1.0" => Version::HTTP_10,
        b"1.1" => Version::HTTP_11,
        b"2" | b"2.0" => Version::HTTP_2,
        b"3" => Version::HTTP_3,
        _ => Version::HTTP_09,
    })
}

impl Handler for Collector {
    fn header(&mut self, data: &[u8]) -> bool {
        // The last status line wins: a 1xx interim response comes first.
        if let Some(v) = status_line_version(data) {
            self.version = Some(v);
        }
        true
    }

    fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        self.received += data.len() as u64;
        if self.keep.len() < 256 {
            self.keep.extend_from_slice(&data[..data.len().min(256)]);
        }
        Ok(data.len())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        match self.upload.as_mut() {
            Some(src) => src.read(buf).map_err(|_| ReadError::Abort),
            None => Ok(0),
        }
    }
}

fn setup(url: &str, protocol: Protocol) -> Result<Easy2<Collector>, curl::Error> {
    let mut easy = Easy2::new(Collector::default());
    easy.url(url)?;
    match protocol {
        Protocol::Http1 => easy.http_version(HttpVersion::V11)?,
        Protocol::Http2PriorKnowledge => {
            easy.http_version(HttpVersion::V2PriorKnowledge)?;
            easy.pipewait(true)?;
        }
    }
    easy.path_as_is(true)?;
    easy.get(true)?;
    let mut headers = List::new();
    headers.append(&format!("User-Agent: {USER_AGENT}"))?;
    headers.append("Accept: */*")?;
    headers.append("Expect:")?;
    easy.http_headers(headers)?;
    easy.follow_location(false)?;
    easy.http_content_decoding(false)?;
    easy.proxy("")?;
    easy.buffer_size(RECEIVE_BUFFER)?;
    easy.upload_buffer_size(UPLOAD_BUFFER)?;
    easy.tcp_nodelay(true)?;
    easy.maxage_conn(Duration::from_secs(90))?;
    Ok(easy)
}

fn err(e: impl std::fmt::Display) -> String {
    format!("curl: {e}")
}

impl CurlDirect {
    pub(crate) fn new(in_flight: usize, protocol: Protocol) -> Result<Self, String> {
        let mut multi = Multi::new();
        multi
            .set_max_host_connections(in_flight.max(1))
            .map_err(err)?;
        if protocol == Protocol::Http2PriorKnowledge {
            // libcurl's default since 7.62, set all the same: the workload is about it.
            multi.pipelining(false, true).map_err(err)?;
        }
        Ok(CurlDirect {
            multi,
            in_flight: in_flight.max(1),
            protocol,
        })
    }

    /// The status and the version of the response `easy` received.
    fn check_response(&self, easy: &Easy2<Collector>, url: &str) -> Result<(), String> {
        check_status(easy.response_code().map_err(err)? as u16, url)?;
        match easy.get_ref().version {
            Some(v) => check_version(v, self.protocol.version(), url),
            None => Err(format!("curl: no status line from {url}")),
        }
    }

    /// Runs `easy` alone to its end and hands it back.
    fn run_one(&mut self, easy: Easy2<Collector>) -> Result<Easy2<Collector>, String> {
        let handle = self.multi.add2(easy).map_err(err)?;
        let stall_at = Instant::now() + STALL;
        loop {
            let running = self.multi.perform().map_err(err)?;
            let mut result = None;
            self.multi.messages(|m| {
                if let Some(r) = m.result_for2(&handle) {
                    result = Some(r);
                }
            });
            if let Some(r) = result {
                r.map_err(err)?;
                return self.multi.remove2(handle).map_err(err);
            }
            if running == 0 || Instant::now() > stall_at {
                return Err("curl: the transfer stalled".into());
            }
            self.multi
                .wait(&mut [], Duration::from_millis(100))
                .map_err(err)?;
        }
    }
}

impl Runner for CurlDirect {
    fn requests(&mut self, url: &str, until: Instant) -> Result<Sample, String> {
        let mut handles: Vec<Option<Easy2Handle<Collector>>> = Vec::with_capacity(self.in_flight);
        for i in 0..self.in_flight {
            let easy = setup(url, self.protocol).map_err(err)?;
            let mut h = self.multi.add2(easy).map_err(err)?;
            h.set_token(i).map_err(err)?;
            handles.push(Some(h));
        }
        let stall_at = until + STALL;
        let mut live = self.in_flight;
        let mut done = 0u64;
        while live > 0 {
            self.multi.perform().map_err(err)?;
            let mut finished = Vec::new();
            self.multi.messages(|m| {
                if let Ok(i) = m.token() {
                    if let Some(Some(h)) = handles.get(i) {
                        if let Some(r) = m.result_for2(h) {
                            finished.push((i, r));
                        }
                    }
                }
            });
            for (i, result) in finished {
                result.map_err(err)?;
                let Some(h) = handles[i].take() else { continue };
                let mut easy = self.multi.remove2(h).map_err(err)?;
                self.check_response(&easy, url)?;
                done += 1;
                if Instant::now() < until {
                    easy.get_mut().reset();
                    // Re-adding a finished easy handle repeats its transfer,
                    // on a pooled connection.
                    let mut h = self.multi.add2(easy).map_err(err)?;
                    h.set_token(i).map_err(err)?;
                    handles[i] = Some(h);
                } else {
                    live -= 1;
                }
            }
            if live > 0 {
                if Instant::now() > stall_at {
                    return Err(format!("curl: {live} transfers stalled"));
                }
                self.multi
                    .wait(&mut [], Duration::from_millis(100))
                    .map_err(err)?;
            }
        }
        Ok(Sample::requests(done))
    }

    fn download(&mut self, url: &str, expected: u64) -> Result<Sample, String> {
        let easy = self.run_one(setup(url, self.protocol).map_err(err)?)?;
        self.check_response(&easy, url)?;
        check_length(easy.get_ref().received, expected)
    }

    fn upload(&mut self, url: &str, len: u64) -> Result<Sample, String> {
        let mut easy = setup(url, self.protocol).map_err(err)?;
        easy.post(true).map_err(err)?;
        easy.post_field_size(len).map_err(err)?;
        let mut headers = List::new();
        for line in [
            format!("User-Agent: {USER_AGENT}"),
            "Accept: */*".into(),
            "Expect:".into(),
            // CURLOPT_POST would add a form Content-Type, as the backend also removes.
            "Content-Type:".into(),
        ] {
            headers.append(&line).map_err(err)?;
        }
        easy.http_headers(headers).map_err(err)?;
        easy.get_mut().upload = Some(upload_source(len));
        let easy = self.run_one(easy)?;
        self.check_response(&easy, url)?;
        check_sink_answer(&easy.get_ref().keep, len).map(Sample::transfer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_line_version() {
        let v = |l: &[u8]| status_line_version(l);
        assert_eq!(v(b"HTTP/1.1 200 OK\r\n"), Some(Version::HTTP_11));
        assert_eq!(v(b"HTTP/2 200 \r\n"), Some(Version::HTTP_2));
        assert_eq!(v(b"HTTP/1.0 200 OK\r\n"), Some(Version::HTTP_10));
        assert_eq!(v(b"content-length: 13\r\n"), None);
        assert_eq!(v(b"\r\n"), None);
    }
}
