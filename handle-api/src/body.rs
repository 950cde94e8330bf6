//! Request bodies: what the application gives, and the counted reader a backend pulls from.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use bytes::Bytes;

use std::sync::Arc;

use crate::exchange::Shared;

/// The body of a request.
///
/// Streams and files are read as the backend sends them, never loaded whole,
/// so an upload of any size keeps memory bounded.
#[derive(Default)]
pub enum RequestBody {
    /// No body.
    #[default]
    Empty,
    /// Bytes held in memory.
    Bytes(Bytes),
    /// A file, read as it is sent; its length is taken when the load starts.
    File(PathBuf),
    /// A reader of known (`Some`) or unknown (`None`) length. A known length is
    /// sent as Content-Length; an unknown one as chunked transfer coding.
    Stream {
        /// Where the bytes come from.
        reader: Box<dyn Read + Send>,
        /// The number of bytes the reader will yield, when known.
        len: Option<u64>,
    },
}

impl RequestBody {
    /// A streamed body of known length.
    pub fn sized(reader: impl Read + Send + 'static, len: u64) -> Self {
        RequestBody::Stream {
            reader: Box::new(reader),
            len: Some(len),
        }
    }

    /// A streamed body of unknown length (sent chunked).
    pub fn chunked(reader: impl Read + Send + 'static) -> Self {
        RequestBody::Stream {
            reader: Box::new(reader),
            len: None,
        }
    }

    /// True for [`RequestBody::Empty`].
    pub fn is_empty(&self) -> bool {
        matches!(self, RequestBody::Empty)
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestBody::Empty => f.write_str("Empty"),
            RequestBody::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            RequestBody::File(p) => write!(f, "File({})", p.display()),
            RequestBody::Stream { len, .. } => write!(f, "Stream(len: {len:?})"),
        }
    }
}

impl From<Bytes> for RequestBody {
    fn from(b: Bytes) -> Self {
        RequestBody::Bytes(b)
    }
}

impl From<Vec<u8>> for RequestBody {
    fn from(b: Vec<u8>) -> Self {
        RequestBody::Bytes(Bytes::from(b))
    }
}

impl From<&'static str> for RequestBody {
    fn from(s: &'static str) -> Self {
        RequestBody::Bytes(Bytes::from_static(s.as_bytes()))
    }
}

impl From<String> for RequestBody {
    fn from(s: String) -> Self {
        RequestBody::Bytes(Bytes::from(s))
    }
}

/// The request body as a backend sees it: its length and a reader that
/// reports upload progress and enforces the declared length.
///
/// A reader that yields fewer or more bytes than declared makes `read` fail,
/// so an upload is never silently cut or padded.
pub struct UploadBody {
    source: Source,
    len: Option<u64>,
    sent: u64,
    progress: Option<Arc<Shared>>,
}

enum Source {
    Empty,
    Bytes(Bytes, usize),
    Reader(Box<dyn Read + Send>),
}

impl UploadBody {
    pub(crate) fn open(body: RequestBody) -> io::Result<Self> {
        let (source, len) = match body {
            RequestBody::Empty => (Source::Empty, Some(0)),
            RequestBody::Bytes(b) => {
                let n = b.len() as u64;
                (Source::Bytes(b, 0), Some(n))
            }
            RequestBody::File(path) => {
                let file = File::open(&path).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
                })?;
                let len = file.metadata()?.len();
                (Source::Reader(Box::new(file)), Some(len))
            }
            RequestBody::Stream { reader, len } => (Source::Reader(reader), len),
        };
        Ok(UploadBody {
            source,
            len,
            sent: 0,
            progress: None,
        })
    }

    pub(crate) fn attach(&mut self, progress: Arc<Shared>) {
        self.progress = Some(progress);
    }

    /// True when the request has no body at all.
    pub fn is_empty(&self) -> bool {
        matches!(self.source, Source::Empty)
    }

    /// The length to send as Content-Length, or `None` for chunked.
    pub fn len(&self) -> Option<u64> {
        self.len
    }

    /// The whole body when it is held in memory and nothing has been read yet,
    /// so a backend can hand it to its library without copying.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match &self.source {
            Source::Bytes(b, 0) => Some(b),
            _ => None,
        }
    }

    /// Bytes handed to the backend so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Marks an in-memory body as sent whole by the backend (after [`Self::as_bytes`]).
    pub fn mark_sent(&mut self) {
        if let Source::Bytes(b, pos) = &mut self.source {
            let n = b.len() - *pos;
            *pos = b.len();
            self.advance(n);
        }
    }

    fn advance(&mut self, n: usize) {
        self.sent += n as u64;
        if let Some(p) = &self.progress {
            p.upload_progress(self.sent, self.len);
        }
    }
}

impl Read for UploadBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = match &mut self.source {
            Source::Empty => 0,
            Source::Bytes(b, pos) => {
                let n = (b.len() - *pos).min(buf.len());
                buf[..n].copy_from_slice(&b[*pos..*pos + n]);
                *pos += n;
                n
            }
            Source::Reader(r) => {
                // Never read past the declared length: a longer stream is an error, not extra bytes.
                let want = match self.len {
                    Some(len) => {
                        let left = len - self.sent;
                        if left == 0 {
                            let mut probe = [0u8; 1];
                            return match r.read(&mut probe)? {
                                0 => Ok(0),
                                _ => Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    format!("request body stream yields more than its declared {len} bytes"),
                                )),
                            };
                        }
                        buf.len().min(usize::try_from(left).unwrap_or(usize::MAX))
                    }
                    None => buf.len(),
                };
                let n = r.read(&mut buf[..want])?;
                if let Some(len) = self.len {
                    if n > 0 && self.sent + n as u64 == len {
                        // These bytes complete the declared length: a stream
                        // that has more must fail before they are handed over,
                        // or the peer would see a complete request.
                        let mut probe = [0u8; 1];
                        if r.read(&mut probe)? != 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!(
                                    "request body stream yields more than its declared {len} bytes"
                                ),
                            ));
                        }
                    }
                }
                n
            }
        };
        if n == 0 {
            if let Some(len) = self.len {
                if self.sent < len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "request body stream ended after {} of its declared {len} bytes",
                            self.sent
                        ),
                    ));
                }
            }
            return Ok(0);
        }
        self.advance(n);
        Ok(n)
    }
}

impl fmt::Debug for UploadBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadBody")
            .field("len", &self.len)
            .field("sent", &self.sent)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(mut b: UploadBody) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        b.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn stream_shorter_than_declared_fails() {
        let b = UploadBody::open(RequestBody::sized(&b"abc"[..], 5)).unwrap();
        let err = read_all(b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn stream_longer_than_declared_fails() {
        let b = UploadBody::open(RequestBody::sized(&b"abcdef"[..], 3)).unwrap();
        let err = read_all(b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn exact_and_chunked_streams_read_whole() {
        let b = UploadBody::open(RequestBody::sized(&b"abc"[..], 3)).unwrap();
        assert_eq!(read_all(b).unwrap(), b"abc");
        let b = UploadBody::open(RequestBody::chunked(&b"xyz"[..])).unwrap();
        assert_eq!(b.len(), None);
        assert_eq!(read_all(b).unwrap(), b"xyz");
        let b = UploadBody::open(RequestBody::from("hello")).unwrap();
        assert_eq!(b.as_bytes().unwrap().as_ref(), b"hello");
        assert_eq!(read_all(b).unwrap(), b"hello");
    }
}
