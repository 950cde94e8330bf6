//! libcurl used directly: one `curl::multi::Multi` on the calling thread
//! driving as many easy handles as requests in flight, each easy handle
//! reused for the next request (curl's recommended way), with the options the
//! curl backend sets: HTTP/1.1, 256 KiB receive and upload buffers,
//! TCP_NODELAY, no redirects, no decoding, no proxy, no `Expect:`.

use std::io::{Read, Repeat, Take};
use std::time::{Duration, Instant};

use curl::easy::{Easy2, Handler, HttpVersion, List, ReadError, WriteError};
use curl::multi::{Easy2Handle, Multi};

use super::{
    check_length, check_sink_answer, check_status, upload_source, Runner, Sample, STALL, USER_AGENT,
};

/// As the curl backend: larger than curl's 16 KiB default.
const RECEIVE_BUFFER: usize = 256 * 1024;
const UPLOAD_BUFFER: usize = 256 * 1024;

pub(crate) struct CurlDirect {
    multi: Multi,
    in_flight: usize,
}

/// Counts body bytes and keeps a short response (the `/sink` answer).
#[derive(Default)]
struct Collector {
    received: u64,
    keep: Vec<u8>,
    upload: Option<Take<Repeat>>,
}

impl Handler for Collector {
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

fn setup(url: &str) -> Result<Easy2<Collector>, curl::Error> {
    let mut easy = Easy2::new(Collector::default());
    easy.url(url)?;
    easy.http_version(HttpVersion::V11)?;
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
    pub(crate) fn new(in_flight: usize) -> Result<Self, String> {
        let mut multi = Multi::new();
        multi
            .set_max_host_connections(in_flight.max(1))
            .map_err(err)?;
        Ok(CurlDirect {
            multi,
            in_flight: in_flight.max(1),
        })
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
            let mut h = self.multi.add2(setup(url).map_err(err)?).map_err(err)?;
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
                check_status(easy.response_code().map_err(err)? as u16, url)?;
                done += 1;
                if Instant::now() < until {
                    easy.get_mut().received = 0;
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
        let easy = self.run_one(setup(url).map_err(err)?)?;
        check_status(easy.response_code().map_err(err)? as u16, url)?;
        check_length(easy.get_ref().received, expected)
    }

    fn upload(&mut self, url: &str, len: u64) -> Result<Sample, String> {
        let mut easy = setup(url).map_err(err)?;
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
        check_status(easy.response_code().map_err(err)? as u16, url)?;
        check_sink_answer(&easy.get_ref().keep, len).map(Sample::transfer)
    }
}
