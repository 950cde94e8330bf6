//! Content decoding (RFC 9110 §8.4): `gzip`, `deflate`, `br` and `zstd`,
//! undone here once for every backend (the backends' own decoding stays off).
//!
//! Memory stays bounded whatever the compression ratio. Each coding is undone
//! into a fixed 64 KiB buffer, a step at a time, and a step runs only when the
//! caller asks for more output; a chain of codings pulls from the stage before
//! it the same way. A decompression bomb therefore costs CPU up to the
//! configured limit, never memory: what is held is the queued encoded input,
//! 64 KiB per stage, and each library's window (32 KiB for deflate, at most
//! 16 MiB for brotli and 8 MiB for zstd).

use std::collections::VecDeque;
use std::fmt;
use std::io::Read;

use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
use bytes::{Buf, Bytes};
use flate2::{Decompress, FlushDecompress, Status};
use http::header::CONTENT_ENCODING;
use http::HeaderMap;
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

use crate::error::{Error, ErrorKind};

/// The Accept-Encoding sent when the request sets none and decoding is on.
pub(crate) const ACCEPT_ENCODING: &str = "gzip, deflate, br, zstd";

/// The most decoded bytes one [`Decoder::next_output`] returns.
pub(crate) const OUTPUT_CHUNK: usize = 64 * 1024;

/// Codings one response may stack. Each stage holds buffers and a window, so
/// an endless `gzip, gzip, …` must not buy unbounded memory; curl allows 5 too.
const MAX_CODINGS: usize = 5;

/// RFC 9659 §3: zstd encoders for HTTP must not need a window over 8 MB, and
/// browsers refuse larger ones; refusing them here bounds the decoder's memory.
const ZSTD_MAX_WINDOW: u64 = 8 << 20;

/// One content coding this module can undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    fn parse(token: &str) -> Option<Coding> {
        let is = |name: &str| token.eq_ignore_ascii_case(name);
        if is("gzip") || is("x-gzip") {
            // RFC 9110 §8.4.1.3: x-gzip is to be treated as gzip.
            Some(Coding::Gzip)
        } else if is("deflate") {
            Some(Coding::Deflate)
        } else if is("br") {
            Some(Coding::Brotli)
        } else if is("zstd") {
            Some(Coding::Zstd)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }

    fn codec(self) -> Box<dyn Codec> {
        match self {
            Coding::Gzip => Box::new(Gzip::new()),
            Coding::Deflate => Box::new(Deflate::new()),
            Coding::Brotli => Box::new(Brotli::new()),
            Coding::Zstd => Box::new(Zstd::new()),
        }
    }
}

fn corrupt(coding: Coding, detail: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("corrupt {} body: {detail}", coding.name()),
    )
}

fn corrupt_from<E>(coding: Coding, source: E) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    corrupt(coding, &source).with_source(source)
}

fn truncated(coding: Coding) -> Error {
    corrupt(
        coding,
        "truncated: the body ended before the end of the compressed stream",
    )
}

fn trailing(coding: Coding) -> Error {
    corrupt(coding, "data follows the end of the compressed stream")
}

/// One coding's decompressor, driven a step at a time.
trait Codec: Send {
    /// Undoes the coding from `input` into `out` (never empty) and returns the
    /// bytes consumed and produced. `(0, 0)` with empty `input` means nothing
    /// more can come out until more input arrives; with non-empty `input` it
    /// would mean the codec is stuck, which the caller reports as an error.
    fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), Error>;

    /// At the end of the input: `Ok` only when the stream was complete.
    fn end(&self) -> Result<(), Error>;

    /// Bytes buffered by this code (not the library's window), for tests.
    #[cfg(test)]
    fn held(&self) -> usize {
        0
    }
}

/// Output of one stage waiting for the next stage of a chain.
struct Carry {
    buf: Vec<u8>,
    pos: usize,
    len: usize,
}

impl Carry {
    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..self.len]
    }
}

struct Stage {
    coding: Coding,
    codec: Box<dyn Codec>,
    /// Bytes this stage has produced; each stage is held to the limit, so an
    /// inner stream of empty blocks cannot grow without bound either.
    produced: u64,
    consumed_any: bool,
    ended: bool,
    carry: Carry,
}

/// Undoes a response's content codings as the body streams through.
///
/// Feed encoded bytes with [`push`](Self::push), take decoded bytes with
/// [`next_output`](Self::next_output) until it returns `Ok(None)`, and at the
/// end of the body call [`finish`](Self::finish) until it returns `Ok(None)`.
/// The first error is sticky: every later call returns it again.
pub(crate) struct Decoder {
    input: VecDeque<Bytes>,
    /// The codings in decoding order (the reverse of Content-Encoding).
    stages: Vec<Stage>,
    limit: u64,
    decoded: u64,
    input_ended: bool,
    failed: Option<Error>,
    /// A limit error held back for one call, so the bytes up to the limit
    /// are delivered first: the same count whatever the input's chunking.
    deferred: Option<Error>,
    scratch: Vec<u8>,
}

impl Decoder {
    /// From the response's Content-Encoding header(s) (a list, applied in
    /// order, e.g. `gzip` or `deflate, br`, decoded in reverse). `Ok(None)`
    /// for no coding or `identity`; an unknown coding is a protocol error,
    /// since passing its bytes on as the body would be silently wrong.
    /// `limit` is the maximum decoded size in bytes (the bomb guard).
    pub(crate) fn for_headers(headers: &HeaderMap, limit: u64) -> Result<Option<Decoder>, Error> {
        let mut applied = Vec::new();
        for value in headers.get_all(CONTENT_ENCODING) {
            let text = value.to_str().map_err(|_| {
                Error::new(
                    ErrorKind::Protocol,
                    "Content-Encoding holds a byte that is not visible ASCII",
                )
            })?;
            for token in text.split(',').map(str::trim) {
                // RFC 9110 §5.6.1: empty list elements are ignored; identity
                // is no coding at all.
                if token.is_empty() || token.eq_ignore_ascii_case("identity") {
                    continue;
                }
                let coding = Coding::parse(token).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Protocol,
                        format!("unsupported content coding {token}"),
                    )
                })?;
                applied.push(coding);
            }
        }
        if applied.is_empty() {
            return Ok(None);
        }
        if applied.len() > MAX_CODINGS {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "Content-Encoding stacks {} codings; at most {MAX_CODINGS} are decoded",
                    applied.len()
                ),
            ));
        }
        applied.reverse();
        Ok(Some(Decoder::new(&applied, limit)))
    }

    fn new(decoding_order: &[Coding], limit: u64) -> Decoder {
        let stages = decoding_order
            .iter()
            .map(|&coding| Stage {
                coding,
                codec: coding.codec(),
                produced: 0,
                consumed_any: false,
                ended: false,
                carry: Carry {
                    buf: Vec::new(),
                    pos: 0,
                    len: 0,
                },
            })
            .collect();
        Decoder {
            input: VecDeque::new(),
            stages,
            limit,
            decoded: 0,
            input_ended: false,
            failed: None,
            deferred: None,
            scratch: vec![0; OUTPUT_CHUNK],
        }
    }

    /// Queues encoded input; nothing is decoded yet.
    pub(crate) fn push(&mut self, input: bytes::Bytes) {
        debug_assert!(!self.input_ended, "input pushed after finish");
        if !input.is_empty() && !self.input_ended {
            self.input.push_back(input);
        }
    }

    /// Decodes some of the queued input and returns at most
    /// [`OUTPUT_CHUNK`] decoded bytes, or `Ok(None)` when the queued input is
    /// consumed and nothing more can come out of it yet.
    pub(crate) fn next_output(&mut self) -> Result<Option<Bytes>, Error> {
        self.run()
    }

    /// Called at the end of the encoded body: returns the remaining decoded
    /// output piece by piece (call until `Ok(None)`); an incomplete or corrupt
    /// stream is an error.
    pub(crate) fn finish(&mut self) -> Result<Option<Bytes>, Error> {
        self.input_ended = true;
        self.run()
    }

    /// Decoded bytes produced so far.
    #[cfg(test)]
    pub(crate) fn decoded_len(&self) -> u64 {
        self.decoded
    }

    fn run(&mut self) -> Result<Option<Bytes>, Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if let Some(e) = self.deferred.take() {
            self.failed = Some(e.clone());
            return Err(e);
        }
        let last = self.stages.len() - 1;
        let mut out = std::mem::take(&mut self.scratch);
        let result = self.produce(last, &mut out);
        // Copied out at its own size: a short chunk must not pin a 64 KiB
        // allocation while it waits in the handle's buffer.
        let result = result.map(|n| (n > 0).then(|| Bytes::copy_from_slice(&out[..n])));
        self.scratch = out;
        match result {
            Ok(chunk) => {
                if let Some(c) = &chunk {
                    self.decoded += c.len() as u64;
                }
                debug_assert!(
                    chunk.is_some() || !self.input_ended || self.stages[last].ended,
                    "finish returned None before the stream ended"
                );
                Ok(chunk)
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Fills `out` from stage `i` as far as its input allows; 0 means stage
    /// `i` is waiting for input (or, at the end of the body, has ended).
    fn produce(&mut self, i: usize, out: &mut [u8]) -> Result<usize, Error> {
        let mut written = 0;
        let is_last = i + 1 == self.stages.len();
        while written < out.len() && !self.stages[i].ended {
            if i > 0 {
                self.refill(i - 1)?;
            }
            let (before, rest) = self.stages.split_at_mut(i);
            let stage = &mut rest[0];
            if i == 0 {
                while self.input.front().is_some_and(Bytes::is_empty) {
                    self.input.pop_front();
                }
            }
            let (input, upstream_done): (&[u8], bool) = match before.last() {
                None => match self.input.front() {
                    Some(b) => (b, false),
                    None => (&[], self.input_ended),
                },
                Some(up) => (up.carry.pending(), up.carry.pos == up.carry.len && up.ended),
            };
            let offered = !input.is_empty();
            let (consumed, produced) = stage.codec.step(input, &mut out[written..])?;
            debug_assert!(consumed <= input.len() && produced <= out.len() - written);
            match before.last_mut() {
                None => {
                    if let Some(front) = self.input.front_mut() {
                        front.advance(consumed);
                    }
                }
                Some(up) => up.carry.pos += consumed,
            }
            stage.consumed_any |= consumed > 0;
            stage.produced += produced as u64;
            if stage.produced > self.limit {
                let err = Error::new(
                    ErrorKind::LimitExceeded,
                    format!(
                        "the decoded body passed the limit of {} bytes (Content-Encoding {})",
                        self.limit,
                        stage.coding.name()
                    ),
                );
                // The last stage hands out exactly `limit` bytes before failing.
                let keep = produced - (stage.produced - self.limit) as usize;
                if is_last && written + keep > 0 {
                    self.deferred = Some(err);
                    return Ok(written + keep);
                }
                return Err(err);
            }
            written += produced;
            if consumed == 0 && produced == 0 {
                if offered {
                    // Input offered with room to write and nothing moved: a
                    // codec must never spin, so this is a stream it cannot read.
                    return Err(corrupt(stage.coding, "the decoder made no progress"));
                }
                if upstream_done {
                    // An empty body is empty whatever its coding: servers
                    // label empty replies with Content-Encoding too.
                    if stage.consumed_any {
                        stage.codec.end()?;
                    }
                    stage.ended = true;
                }
                break;
            }
        }
        Ok(written)
    }

    /// Gives stage `j`'s carry (the next stage's input) more bytes when it is empty.
    fn refill(&mut self, j: usize) -> Result<(), Error> {
        let carry = &self.stages[j].carry;
        if carry.pos < carry.len || self.stages[j].ended {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.stages[j].carry.buf);
        buf.resize(OUTPUT_CHUNK, 0);
        let result = self.produce(j, &mut buf);
        let carry = &mut self.stages[j].carry;
        carry.buf = buf;
        carry.pos = 0;
        carry.len = *result.as_ref().unwrap_or(&0);
        result.map(drop)
    }

    /// Bytes this decoder holds besides the libraries' windows, for tests.
    #[cfg(test)]
    fn held(&self) -> usize {
        let queued: usize = self.input.iter().map(Bytes::len).sum();
        let stages: usize = self
            .stages
            .iter()
            .map(|s| s.carry.buf.capacity() + s.codec.held())
            .sum();
        queued + stages + self.scratch.capacity()
    }
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codings: Vec<_> = self.stages.iter().map(|s| s.coding.name()).collect();
        f.debug_struct("Decoder")
            .field("decoding_order", &codings)
            .field("decoded", &self.decoded)
            .field("limit", &self.limit)
            .finish()
    }
}

/// Runs a flate2 inflater over `input` and reports (consumed, produced, ended).
fn inflate(
    coding: Coding,
    d: &mut Decompress,
    input: &[u8],
    out: &mut [u8],
) -> Result<(usize, usize, bool), Error> {
    let (in0, out0) = (d.total_in(), d.total_out());
    let status = d
        .decompress(input, out, FlushDecompress::None)
        .map_err(|e| corrupt_from(coding, e))?;
    // The totals moved by at most the slices' lengths, so these fit in usize.
    let consumed = (d.total_in() - in0) as usize;
    let produced = (d.total_out() - out0) as usize;
    Ok((consumed, produced, status == Status::StreamEnd))
}

/// `deflate`: RFC 9110 means zlib (RFC 1950), but some servers send raw
/// deflate (RFC 1951). Like browsers, the first two bytes decide: a valid
/// zlib header means zlib, anything else raw.
struct Deflate {
    head: [u8; 2],
    head_len: usize,
    head_fed: usize,
    inflater: Option<Decompress>,
    done: bool,
}

impl Deflate {
    fn new() -> Self {
        Deflate {
            head: [0; 2],
            head_len: 0,
            head_fed: 0,
            inflater: None,
            done: false,
        }
    }
}

/// RFC 1950 §2.2: method 8 with a window of at most 32 KiB, and the check bits.
fn looks_like_zlib(head: [u8; 2]) -> bool {
    let (cmf, flg) = (head[0], head[1]);
    cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
}

impl Codec for Deflate {
    fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), Error> {
        if self.done {
            return if input.is_empty() {
                Ok((0, 0))
            } else {
                Err(trailing(Coding::Deflate))
            };
        }
        let mut consumed = 0;
        if self.head_len < 2 {
            let take = (2 - self.head_len).min(input.len());
            self.head[self.head_len..self.head_len + take].copy_from_slice(&input[..take]);
            self.head_len += take;
            consumed = take;
            if self.head_len < 2 {
                return Ok((consumed, 0));
            }
        }
        let zlib = looks_like_zlib(self.head);
        let d = self.inflater.get_or_insert_with(|| Decompress::new(zlib));
        let mut produced = 0;
        // The two bytes held back for the sniffing go in first.
        if self.head_fed < 2 {
            let head = self.head;
            let (c, p, end) = inflate(Coding::Deflate, d, &head[self.head_fed..], out)?;
            self.head_fed += c;
            produced += p;
            self.done = end;
            if self.head_fed < 2 || end {
                return Ok((consumed, produced));
            }
        }
        let (c, p, end) = inflate(Coding::Deflate, d, &input[consumed..], &mut out[produced..])?;
        self.done = end;
        Ok((consumed + c, produced + p))
    }

    fn end(&self) -> Result<(), Error> {
        if self.done {
            Ok(())
        } else {
            Err(truncated(Coding::Deflate))
        }
    }
}

/// `gzip` (RFC 1952): the header and trailer are read here around a raw
/// inflater, so that several members (concatenated) decode one after another,
/// the CRC-32 and length of each are checked, and bytes after the last member
/// are an error rather than silently dropped.
struct Gzip {
    phase: GzPhase,
    header: GzHeader,
    inflater: Decompress,
    crc: crc32fast::Hasher,
    size: u32,
    trailer: [u8; 8],
    trailer_len: usize,
    members: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GzPhase {
    Header,
    Body,
    Trailer,
    /// A member ended; the stream may end here or another member follow.
    Between,
}

const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;

/// The gzip member header, read a byte at a time as it arrives, so its
/// variable parts (extra field, name, comment) need no buffer of their own.
struct GzHeader {
    part: HeaderPart,
    fixed: [u8; 10],
    have: usize,
    flags: u8,
    skip: usize,
    crc: crc32fast::Hasher,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderPart {
    Fixed,
    ExtraLen,
    Extra,
    Name,
    Comment,
    Crc,
    Done,
}

impl GzHeader {
    fn new() -> Self {
        GzHeader {
            part: HeaderPart::Fixed,
            fixed: [0; 10],
            have: 0,
            flags: 0,
            skip: 0,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// The part after `part`, skipping those the flags leave out.
    fn after(&self, part: HeaderPart) -> HeaderPart {
        let order = [
            (HeaderPart::ExtraLen, FEXTRA),
            (HeaderPart::Name, FNAME),
            (HeaderPart::Comment, FCOMMENT),
            (HeaderPart::Crc, FHCRC),
        ];
        let start = match part {
            HeaderPart::Fixed => 0,
            HeaderPart::ExtraLen | HeaderPart::Extra => 1,
            HeaderPart::Name => 2,
            HeaderPart::Comment => 3,
            HeaderPart::Crc | HeaderPart::Done => 4,
        };
        order[start..]
            .iter()
            .find(|(_, flag)| self.flags & flag != 0)
            .map_or(HeaderPart::Done, |(p, _)| *p)
    }

    /// Reads header bytes from `input`; returns how many it took.
    fn feed(&mut self, input: &[u8], members: u32) -> Result<usize, Error> {
        let mut used = 0;
        while self.part != HeaderPart::Done && used < input.len() {
            let rest = &input[used..];
            match self.part {
                HeaderPart::Fixed | HeaderPart::ExtraLen | HeaderPart::Crc => {
                    let b = rest[0];
                    used += 1;
                    self.fixed[self.have] = b;
                    self.have += 1;
                    if self.part != HeaderPart::Crc {
                        self.crc.update(&[b]);
                    }
                    self.check_fixed_byte(members)?;
                }
                HeaderPart::Extra => {
                    let n = self.skip.min(rest.len());
                    self.crc.update(&rest[..n]);
                    used += n;
                    self.skip -= n;
                    if self.skip == 0 {
                        self.part = self.after(HeaderPart::Extra);
                    }
                }
                HeaderPart::Name | HeaderPart::Comment => {
                    let n = rest
                        .iter()
                        .position(|&b| b == 0)
                        .map_or(rest.len(), |z| z + 1);
                    self.crc.update(&rest[..n]);
                    used += n;
                    if rest[n - 1] == 0 {
                        self.part = self.after(self.part);
                    }
                }
                HeaderPart::Done => {}
            }
        }
        Ok(used)
    }

    /// Checks the byte just stored in `fixed` and moves on when a fixed-size part is complete.
    fn check_fixed_byte(&mut self, members: u32) -> Result<(), Error> {
        let i = self.have - 1;
        match self.part {
            HeaderPart::Fixed => {
                let expected = [0x1f, 0x8b, 8];
                if i < 3 && self.fixed[i] != expected[i] {
                    return Err(if i == 2 {
                        corrupt(
                            Coding::Gzip,
                            format!("unknown compression method {}", self.fixed[2]),
                        )
                    } else if members > 0 {
                        trailing(Coding::Gzip)
                    } else {
                        corrupt(Coding::Gzip, "not a gzip stream (bad magic bytes)")
                    });
                }
                if i == 3 && self.fixed[3] & 0xe0 != 0 {
                    return Err(corrupt(Coding::Gzip, "reserved header flags are set"));
                }
                if self.have == 10 {
                    self.flags = self.fixed[3];
                    self.have = 0;
                    self.part = self.after(HeaderPart::Fixed);
                }
            }
            HeaderPart::ExtraLen if self.have == 2 => {
                self.skip = usize::from(u16::from_le_bytes([self.fixed[0], self.fixed[1]]));
                self.have = 0;
                self.part = if self.skip == 0 {
                    self.after(HeaderPart::Extra)
                } else {
                    HeaderPart::Extra
                };
            }
            HeaderPart::Crc if self.have == 2 => {
                let stored = u16::from_le_bytes([self.fixed[0], self.fixed[1]]);
                // RFC 1952 §2.3.1: the low 16 bits of the CRC-32 of the header.
                let actual = (self.crc.clone().finalize() & 0xffff) as u16;
                if stored != actual {
                    return Err(corrupt(Coding::Gzip, "header CRC mismatch"));
                }
                self.have = 0;
                self.part = HeaderPart::Done;
            }
            _ => {}
        }
        Ok(())
    }
}

impl Gzip {
    fn new() -> Self {
        Gzip {
            phase: GzPhase::Header,
            header: GzHeader::new(),
            inflater: Decompress::new(false),
            crc: crc32fast::Hasher::new(),
            size: 0,
            trailer: [0; 8],
            trailer_len: 0,
            members: 0,
        }
    }
}

impl Codec for Gzip {
    fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), Error> {
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            match self.phase {
                GzPhase::Header => {
                    consumed += self.header.feed(rest, self.members)?;
                    if self.header.part != HeaderPart::Done {
                        return Ok((consumed, 0));
                    }
                    self.phase = GzPhase::Body;
                }
                GzPhase::Body => {
                    let (c, p, end) = inflate(Coding::Gzip, &mut self.inflater, rest, out)?;
                    consumed += c;
                    self.crc.update(&out[..p]);
                    // ISIZE is the length modulo 2^32 (RFC 1952 §2.3.1).
                    self.size = self.size.wrapping_add(p as u32);
                    if end {
                        self.phase = GzPhase::Trailer;
                    }
                    if p > 0 || !end {
                        return Ok((consumed, p));
                    }
                }
                GzPhase::Trailer => {
                    let take = (8 - self.trailer_len).min(rest.len());
                    self.trailer[self.trailer_len..self.trailer_len + take]
                        .copy_from_slice(&rest[..take]);
                    self.trailer_len += take;
                    consumed += take;
                    if self.trailer_len < 8 {
                        return Ok((consumed, 0));
                    }
                    let t = self.trailer;
                    let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
                    let size = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
                    if crc != self.crc.clone().finalize() {
                        return Err(corrupt(Coding::Gzip, "CRC-32 mismatch"));
                    }
                    if size != self.size {
                        return Err(corrupt(Coding::Gzip, "length mismatch in the trailer"));
                    }
                    self.members += 1;
                    self.phase = GzPhase::Between;
                }
                GzPhase::Between => {
                    if rest.is_empty() {
                        return Ok((consumed, 0));
                    }
                    // Another member follows (RFC 1952 §2.2); its magic bytes
                    // tell it from trailing garbage.
                    self.header = GzHeader::new();
                    self.inflater.reset(false);
                    self.crc = crc32fast::Hasher::new();
                    self.size = 0;
                    self.trailer_len = 0;
                    self.phase = GzPhase::Header;
                }
            }
        }
    }

    fn end(&self) -> Result<(), Error> {
        if self.phase == GzPhase::Between {
            Ok(())
        } else {
            Err(truncated(Coding::Gzip))
        }
    }
}

type BrotliDecoderState = BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>;

/// `br` (RFC 7932) through brotli-decompressor's streaming state machine.
struct Brotli {
    // Boxed: the state is large and the codec lives behind a Box anyway.
    state: Box<BrotliDecoderState>,
    done: bool,
}

impl Brotli {
    fn new() -> Self {
        Brotli {
            // Strict: RFC 7932's windows of at most 16 MiB. The large-window
            // extension is not what `br` means on the web, and would let a
            // server make the decoder hold up to 1 GiB.
            state: Box::new(BrotliState::new_strict(
                StandardAlloc::default(),
                StandardAlloc::default(),
                StandardAlloc::default(),
            )),
            done: false,
        }
    }
}

impl Codec for Brotli {
    fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), Error> {
        if self.done {
            return if input.is_empty() {
                Ok((0, 0))
            } else {
                Err(trailing(Coding::Brotli))
            };
        }
        let (mut avail_in, mut in_off) = (input.len(), 0);
        let (mut avail_out, mut out_off, mut total) = (out.len(), 0, 0);
        let result = BrotliDecompressStream(
            &mut avail_in,
            &mut in_off,
            input,
            &mut avail_out,
            &mut out_off,
            out,
            &mut total,
            &mut self.state,
        );
        match result {
            BrotliResult::ResultSuccess => self.done = true,
            BrotliResult::NeedsMoreInput | BrotliResult::NeedsMoreOutput => {}
            BrotliResult::ResultFailure => {
                let code = self.state.error_code;
                return Err(corrupt(Coding::Brotli, format!("{code:?}")).with_source(
                    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{code:?}")),
                ));
            }
        }
        Ok((in_off, out_off))
    }

    fn end(&self) -> Result<(), Error> {
        if self.done {
            Ok(())
        } else {
            Err(truncated(Coding::Brotli))
        }
    }
}

/// `zstd` (RFC 8878) through ruzstd's frame decoder.
///
/// ruzstd reads whole blocks from a reader and has no "need more input"
/// state, so the frame structure is followed here: a unit (frame header,
/// block, skippable-frame header) is gathered until complete, at most one
/// 128 KiB block plus its header and checksum, and only then handed over.
/// One block is decoded at a time and its output drained before the next,
/// so the decoder holds its window plus one block.
struct Zstd {
    decoder: Box<FrameDecoder>,
    phase: ZPhase,
    unit: Vec<u8>,
    need: usize,
    checksum: bool,
    frames: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZPhase {
    Magic,
    FrameHeader,
    SkipSize,
    Skip(u64),
    BlockHeader,
    Block {
        last: bool,
    },
    /// The last block is decoded; its output drains, then the checksum is checked.
    Drain,
}

const ZSTD_MAGIC: u32 = 0xFD2F_B528;
const ZSTD_MAX_BLOCK: usize = 128 * 1024;

impl Zstd {
    fn new() -> Self {
        Zstd {
            decoder: Box::new(FrameDecoder::new()),
            phase: ZPhase::Magic,
            unit: Vec::new(),
            need: 4,
            checksum: false,
            frames: 0,
        }
    }

    fn in_frame(&self) -> bool {
        matches!(
            self.phase,
            ZPhase::BlockHeader | ZPhase::Block { .. } | ZPhase::Drain
        )
    }

    /// Acts on the complete unit in `self.unit`.
    fn unit_complete(&mut self) -> Result<(), Error> {
        let u = &self.unit;
        match self.phase {
            ZPhase::Magic => {
                let magic = u32::from_le_bytes([u[0], u[1], u[2], u[3]]);
                if magic == ZSTD_MAGIC {
                    self.phase = ZPhase::FrameHeader;
                    self.need = 5;
                } else if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
                    self.phase = ZPhase::SkipSize;
                    self.need = 8;
                } else if self.frames > 0 {
                    return Err(trailing(Coding::Zstd));
                } else {
                    return Err(corrupt(Coding::Zstd, "not a zstd frame (bad magic number)"));
                }
            }
            ZPhase::FrameHeader if u.len() == 5 => {
                // RFC 8878 §3.1.1.1: the descriptor says how long the header is.
                let fhd = u[4];
                let single = fhd & 0x20 != 0;
                let dict = [0, 1, 2, 4][usize::from(fhd & 3)];
                let fcs = [usize::from(single), 2, 4, 8][usize::from(fhd >> 6)];
                self.need = 5 + usize::from(!single) + dict + fcs;
            }
            ZPhase::FrameHeader => {
                let window = zstd_window(u);
                if window > ZSTD_MAX_WINDOW {
                    return Err(corrupt(
                        Coding::Zstd,
                        format!(
                            "the frame needs a {window}-byte window; RFC 9659 allows at most {ZSTD_MAX_WINDOW}"
                        ),
                    ));
                }
                self.checksum = u[4] & 0x04 != 0;
                let mut header: &[u8] = u;
                self.decoder
                    .reset(&mut header)
                    .map_err(|e| corrupt_from(Coding::Zstd, e))?;
                if !header.is_empty() {
                    return Err(corrupt(Coding::Zstd, "malformed frame header"));
                }
                self.unit.clear();
                self.phase = ZPhase::BlockHeader;
                self.need = 3;
            }
            ZPhase::SkipSize => {
                let len = u32::from_le_bytes([u[4], u[5], u[6], u[7]]);
                self.unit.clear();
                self.phase = ZPhase::Skip(u64::from(len));
                self.need = 0;
            }
            ZPhase::BlockHeader => {
                // RFC 8878 §3.1.1.2: last flag, type, size in 3 little-endian bytes.
                let h = u32::from_le_bytes([u[0], u[1], u[2], 0]);
                let last = h & 1 != 0;
                let size = (h >> 3) as usize;
                let body = match (h >> 1) & 3 {
                    0 | 2 => size,
                    1 => 1,
                    _ => return Err(corrupt(Coding::Zstd, "reserved block type")),
                };
                if size > ZSTD_MAX_BLOCK {
                    return Err(corrupt(Coding::Zstd, "block larger than 128 KiB"));
                }
                let checksum = if last && self.checksum { 4 } else { 0 };
                self.need = 3 + body + checksum;
                self.phase = ZPhase::Block { last };
            }
            ZPhase::Block { last } => {
                let mut block: &[u8] = u;
                self.decoder
                    .decode_blocks(&mut block, BlockDecodingStrategy::UptoBlocks(1))
                    .map_err(|e| corrupt_from(Coding::Zstd, e))?;
                if !block.is_empty() {
                    return Err(corrupt(Coding::Zstd, "malformed block"));
                }
                self.unit.clear();
                if last {
                    self.phase = ZPhase::Drain;
                    self.need = 0;
                } else {
                    self.phase = ZPhase::BlockHeader;
                    self.need = 3;
                }
            }
            ZPhase::Skip(_) | ZPhase::Drain => {}
        }
        Ok(())
    }
}

/// The window a frame header asks for (RFC 8878 §3.1.1.1.2), from a complete header.
fn zstd_window(header: &[u8]) -> u64 {
    let fhd = header[4];
    if fhd & 0x20 == 0 {
        let wd = header[5];
        let base = 1u64 << (10 + (wd >> 3));
        return base + (base / 8) * u64::from(wd & 7);
    }
    // Single segment: the window is the content size.
    let dict = [0, 1, 2, 4][usize::from(fhd & 3)];
    let fcs = &header[5 + dict..];
    match fcs.len() {
        1 => u64::from(fcs[0]),
        2 => u64::from(u16::from_le_bytes([fcs[0], fcs[1]])) + 256,
        4 => u64::from(u32::from_le_bytes([fcs[0], fcs[1], fcs[2], fcs[3]])),
        _ => {
            let mut b = [0; 8];
            b.copy_from_slice(&fcs[..8]);
            u64::from_le_bytes(b)
        }
    }
}

impl Codec for Zstd {
    fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), Error> {
        let mut consumed = 0;
        loop {
            // A decoded block's output goes out before the next block is read.
            if self.in_frame() && self.decoder.can_collect() > 0 {
                let n = self
                    .decoder
                    .read(out)
                    .map_err(|e| corrupt_from(Coding::Zstd, e))?;
                if n > 0 {
                    return Ok((consumed, n));
                }
            }
            if self.phase == ZPhase::Drain {
                let from_data = self.decoder.get_checksum_from_data();
                if from_data.is_some() && from_data != self.decoder.get_calculated_checksum() {
                    return Err(corrupt(Coding::Zstd, "content checksum mismatch"));
                }
                self.frames += 1;
                self.phase = ZPhase::Magic;
                self.need = 4;
                continue;
            }
            let rest = &input[consumed..];
            if let ZPhase::Skip(left) = self.phase {
                let n = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
                consumed += n;
                let left = left - n as u64;
                if left > 0 {
                    self.phase = ZPhase::Skip(left);
                    return Ok((consumed, 0));
                }
                self.phase = ZPhase::Magic;
                self.need = 4;
                continue;
            }
            let take = (self.need - self.unit.len()).min(rest.len());
            self.unit.extend_from_slice(&rest[..take]);
            consumed += take;
            if self.unit.len() < self.need {
                return Ok((consumed, 0));
            }
            self.unit_complete()?;
        }
    }

    fn end(&self) -> Result<(), Error> {
        if self.phase == ZPhase::Magic && self.unit.is_empty() {
            Ok(())
        } else {
            Err(truncated(Coding::Zstd))
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.unit.capacity() + self.decoder.can_collect()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use http::HeaderValue;

    use super::*;

    const MIB: usize = 1 << 20;

    /// 1 MiB-ish of data that compresses unevenly: text, noise, zeros and
    /// repeats with long distances, so every coding uses most of its tools.
    fn varied(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let words = [
            &b"resource "[..],
            b"handle ",
            b"manager ",
            b"\n",
            b"zstd ",
            b"br ",
        ];
        while out.len() < len {
            match rand() % 4 {
                0 => {
                    for _ in 0..200 {
                        out.extend_from_slice(words[(rand() % 6) as usize]);
                    }
                }
                1 => out.extend((0..3000).map(|_| rand() as u8)),
                2 => out.extend(std::iter::repeat_n(0, 5000)),
                _ => {
                    let start = (rand() as usize) % (out.len() + 1);
                    let end = (start + 4000).min(out.len());
                    let copy = out[start..end].to_vec();
                    out.extend_from_slice(&copy);
                }
            }
        }
        out.truncate(len);
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut w = ::brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
        w.write_all(data).unwrap();
        w.into_inner()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        let mut e = ::zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        e.include_checksum(true).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decoder(content_encoding: &str, limit: u64) -> Decoder {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_ENCODING,
            HeaderValue::from_str(content_encoding).unwrap(),
        );
        Decoder::for_headers(&h, limit).unwrap().expect("a coding")
    }

    /// Drives a decoder as the handle's pipeline does: push one chunk, take
    /// all the output it allows, and at the end finish. Checks the bounds on
    /// every call.
    fn run(dec: &mut Decoder, encoded: &[u8], chunk: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let take = |out: &mut Vec<u8>, piece: Option<Bytes>| match piece {
            Some(b) => {
                assert!(
                    !b.is_empty() && b.len() <= OUTPUT_CHUNK,
                    "chunk of {}",
                    b.len()
                );
                out.extend_from_slice(&b);
                true
            }
            None => false,
        };
        for piece in encoded.chunks(chunk) {
            dec.push(Bytes::copy_from_slice(piece));
            while take(&mut out, dec.next_output()?) {
                assert!(dec.held() < 2 * MIB, "decoder holds {} bytes", dec.held());
            }
        }
        while take(&mut out, dec.finish()?) {}
        assert_eq!(dec.decoded_len(), out.len() as u64);
        Ok(out)
    }

    fn decode(content_encoding: &str, encoded: &[u8], chunk: usize) -> Result<Vec<u8>, Error> {
        run(&mut decoder(content_encoding, u64::MAX), encoded, chunk)
    }

    #[test]
    fn every_coding_round_trips_in_odd_chunks() {
        let data = varied(MIB);
        let cases: [(&str, Vec<u8>); 6] = [
            ("gzip", gzip(&data)),
            ("x-gzip", gzip(&data)),
            ("deflate", zlib(&data)),
            ("deflate", raw_deflate(&data)),
            ("br", brotli(&data)),
            ("zstd", zstd(&data)),
        ];
        for (coding, encoded) in &cases {
            assert!(encoded.len() < data.len() * 3 / 4, "{coding} did compress");
            for chunk in [1, 7, 64 * 1024] {
                let out = decode(coding, encoded, chunk)
                    .unwrap_or_else(|e| panic!("{coding} in {chunk}-byte chunks: {e}"));
                assert!(out == data, "{coding} in {chunk}-byte chunks differs");
            }
        }
    }

    #[test]
    fn chained_codings_are_undone_in_reverse() {
        let data = varied(MIB / 4);
        // "gzip, br": gzip was applied first, then br; br comes off first.
        let encoded = brotli(&gzip(&data));
        for chunk in [1, 7, 64 * 1024] {
            assert!(decode("gzip, br", &encoded, chunk).unwrap() == data);
        }
        // The same list split over two header fields.
        let mut h = HeaderMap::new();
        h.append(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h.append(CONTENT_ENCODING, HeaderValue::from_static("BR"));
        let mut dec = Decoder::for_headers(&h, u64::MAX).unwrap().unwrap();
        assert!(run(&mut dec, &encoded, 4096).unwrap() == data);
        // Applied in the wrong order, the outer coding does not parse.
        let e = decode("br, gzip", &encoded, 4096).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        let three = zstd(&raw_deflate(&gzip(&data)));
        assert!(decode("gzip,deflate , zstd", &three, 999).unwrap() == data);
    }

    #[test]
    fn identity_and_absent_codings_need_no_decoder() {
        assert!(Decoder::for_headers(&HeaderMap::new(), 1)
            .unwrap()
            .is_none());
        for v in ["identity", "Identity", "", " , identity ,"] {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
            assert!(Decoder::for_headers(&h, 1).unwrap().is_none(), "{v:?}");
        }
    }

    #[test]
    fn unknown_codings_are_errors_not_raw_bodies() {
        for v in ["compress", "gzip, sdch", "x-bzip2"] {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
            let e = Decoder::for_headers(&h, 1).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Protocol);
            assert!(
                e.message().starts_with("unsupported content coding "),
                "{e}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_ENCODING,
            HeaderValue::from_static("gzip,gzip,gzip,gzip,gzip,gzip"),
        );
        assert_eq!(
            Decoder::for_headers(&h, 1).unwrap_err().kind(),
            ErrorKind::Protocol
        );
        h.insert(
            CONTENT_ENCODING,
            HeaderValue::from_bytes(b"gz\xffip").unwrap(),
        );
        assert_eq!(
            Decoder::for_headers(&h, 1).unwrap_err().kind(),
            ErrorKind::Protocol
        );
    }

    /// 1 GiB of zeros, gzipped on the fly (about 1 MB), against a 10 MiB limit.
    #[test]
    fn a_gzip_bomb_hits_the_limit_with_memory_bounded() {
        let zeros = vec![0u8; MIB];
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        for _ in 0..1024 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 2 * MIB, "bomb is {} bytes", bomb.len());

        let limit = 10 * MIB as u64;
        let mut dec = decoder("gzip", limit);
        let mut failure = None;
        let mut peak_held = 0;
        'feed: for piece in bomb.chunks(64 * 1024) {
            dec.push(Bytes::copy_from_slice(piece));
            loop {
                match dec.next_output() {
                    Ok(Some(b)) => assert!(b.len() <= OUTPUT_CHUNK),
                    Ok(None) => break,
                    Err(e) => {
                        failure = Some(e);
                        break 'feed;
                    }
                }
                peak_held = peak_held.max(dec.held());
            }
        }
        let e = failure.expect("the limit stops the bomb");
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
        assert!(e.message().contains("10485760"), "{e}");
        assert!(dec.decoded_len() <= limit);
        // One queued input chunk plus the 64 KiB output buffer.
        assert!(peak_held <= 3 * 64 * 1024, "held {peak_held}");
        // The error is sticky.
        assert_eq!(
            dec.next_output().unwrap_err().kind(),
            ErrorKind::LimitExceeded
        );
        assert_eq!(dec.finish().unwrap_err().kind(), ErrorKind::LimitExceeded);
    }

    #[test]
    fn brotli_and_zstd_bombs_stay_bounded_too() {
        let zeros = vec![0u8; 64 * MIB];
        for (coding, bomb) in [("br", brotli(&zeros)), ("zstd", zstd(&zeros))] {
            assert!(bomb.len() < MIB, "{coding} bomb is {} bytes", bomb.len());
            let mut dec = decoder(coding, 10 * MIB as u64);
            let e = run(&mut dec, &bomb, 64 * 1024).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{coding}: {e}");
            assert!(dec.decoded_len() <= 10 * MIB as u64);
        }
        // Exactly at the limit is allowed; one byte over is not.
        let data = varied(100_000);
        for coding in ["gzip", "br", "zstd"] {
            let encoded = match coding {
                "gzip" => gzip(&data),
                "br" => brotli(&data),
                _ => zstd(&data),
            };
            assert!(run(&mut decoder(coding, 100_000), &encoded, 1000).is_ok());
            let e = run(&mut decoder(coding, 99_999), &encoded, 1000).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::LimitExceeded);
        }
    }

    /// The large-window brotli extension (up to 1 GiB windows) is not `br`.
    #[test]
    fn large_window_brotli_is_refused() {
        let data = varied(100_000);
        let params = ::brotli::enc::BrotliEncoderParams {
            large_window: true,
            lgwin: 26,
            ..Default::default()
        };
        let mut encoded = Vec::new();
        ::brotli::BrotliCompress(&mut &data[..], &mut encoded, &params).unwrap();
        let e = decode("br", &encoded, 4096).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    }

    #[test]
    fn corrupt_streams_are_protocol_errors() {
        let data = varied(200_000);
        let mut g = gzip(&data);
        let n = g.len();
        g[n / 2] ^= 0x55;
        g[n / 2 + 1] ^= 0xaa;
        let e = decode("gzip", &g, 4096).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(e.message().starts_with("corrupt gzip body: "), "{e}");

        // A flipped bit in the CRC-32 or ISIZE trailer.
        let mut g = gzip(&data);
        let n = g.len();
        g[n - 6] ^= 1;
        let e = decode("gzip", &g, 4096).unwrap_err();
        assert!(e.message().contains("CRC"), "{e}");
        let mut g = gzip(&data);
        g[n - 2] ^= 1;
        assert!(decode("gzip", &g, 4096)
            .unwrap_err()
            .message()
            .contains("length"));

        // Not gzip at all.
        let e = decode("gzip", b"hello, world", 3).unwrap_err();
        assert!(e.message().contains("not a gzip stream"), "{e}");

        // zlib's Adler-32 is checked.
        let mut z = zlib(&data);
        let n = z.len();
        z[n - 1] ^= 1;
        let e = decode("deflate", &z, 4096).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(e.message().starts_with("corrupt deflate body: "), "{e}");
        assert!(
            std::error::Error::source(&e).is_some(),
            "the library error is kept"
        );

        let e = decode("br", &[0xff; 64], 7).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(e.message().starts_with("corrupt br body: "), "{e}");

        // zstd's content checksum is checked.
        let mut z = zstd(&data);
        let n = z.len();
        z[n - 1] ^= 1;
        let e = decode("zstd", &z, 4096).unwrap_err();
        assert!(e.message().contains("checksum"), "{e}");
        let e = decode("zstd", b"not zstd", 4096).unwrap_err();
        assert!(e.message().starts_with("corrupt zstd body: "), "{e}");
    }

    #[test]
    fn truncated_streams_fail_at_finish() {
        let data = varied(200_000);
        for (coding, encoded) in [
            ("gzip", gzip(&data)),
            ("deflate", zlib(&data)),
            ("deflate", raw_deflate(&data)),
            ("br", brotli(&data)),
            ("zstd", zstd(&data)),
        ] {
            for cut in [1, 3, encoded.len() / 2, encoded.len() - 1] {
                let mut dec = decoder(coding, u64::MAX);
                dec.push(Bytes::copy_from_slice(&encoded[..cut]));
                while dec.next_output().unwrap().is_some() {}
                let e = loop {
                    match dec.finish() {
                        Ok(Some(_)) => {}
                        Ok(None) => panic!("{coding} cut at {cut} finished"),
                        Err(e) => break e,
                    }
                };
                assert_eq!(e.kind(), ErrorKind::Protocol, "{coding} cut at {cut}: {e}");
                assert!(
                    e.message().contains("truncated"),
                    "{coding} cut at {cut}: {e}"
                );
            }
        }
    }

    #[test]
    fn an_empty_body_is_empty_whatever_its_coding() {
        for coding in ["gzip", "deflate", "br", "zstd", "gzip, br"] {
            let mut dec = decoder(coding, 0);
            assert!(dec.next_output().unwrap().is_none());
            assert!(dec.finish().unwrap().is_none());
            assert_eq!(dec.decoded_len(), 0);
        }
    }

    #[test]
    fn gzip_members_are_all_decoded_and_trailing_data_refused() {
        let (a, b) = (varied(70_000), b"second member".to_vec());
        let mut two = gzip(&a);
        two.extend_from_slice(&gzip(&b));
        let mut both = a.clone();
        both.extend_from_slice(&b);
        for chunk in [1, 5, 100_000] {
            assert!(decode("gzip", &two, chunk).unwrap() == both);
        }
        for junk in [&b"\0\0\0\0"[..], b"<html>", b"\x1f"] {
            let mut g = gzip(&a);
            g.extend_from_slice(junk);
            let e = decode("gzip", &g, 3).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Protocol, "{junk:?}");
            let expected = if junk.len() == 1 {
                "truncated"
            } else {
                "data follows"
            };
            assert!(e.message().contains(expected), "{junk:?}: {e}");
        }
        for (coding, encoded) in [
            ("deflate", zlib(&a)),
            ("deflate", raw_deflate(&a)),
            ("br", brotli(&a)),
            ("zstd", zstd(&a)),
        ] {
            let mut with_junk = encoded.clone();
            with_junk.extend_from_slice(b"junk");
            let e = decode(coding, &with_junk, 1000).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Protocol, "{coding}");
            assert!(e.message().contains("data follows"), "{coding}: {e}");
        }
    }

    /// A member with every optional header field, FHCRC included (which
    /// flate2's encoder never writes), built by hand.
    #[test]
    fn gzip_optional_header_fields_are_skipped_and_checked() {
        let body = b"optional fields".to_vec();
        let mut member = vec![
            0x1f,
            0x8b,
            8,
            FEXTRA | FNAME | FCOMMENT | FHCRC,
            0,
            0,
            0,
            0,
            0,
            3,
        ];
        member.extend_from_slice(&[5, 0, b'a', b'b', 2, 0, 0]);
        member.extend_from_slice(b"name.txt\0");
        member.extend_from_slice(b"a comment\0");
        let hcrc = (crc32fast::hash(&member) & 0xffff) as u16;
        member.extend_from_slice(&hcrc.to_le_bytes());
        member.extend_from_slice(&raw_deflate(&body));
        member.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        member.extend_from_slice(&(body.len() as u32).to_le_bytes());
        for chunk in [1, 2, 1000] {
            assert_eq!(decode("gzip", &member, chunk).unwrap(), body);
        }
        let mut bad = member.clone();
        bad[10 + 7 + 9 + 10] ^= 1;
        assert!(decode("gzip", &bad, 1)
            .unwrap_err()
            .message()
            .contains("header CRC"));
        let mut reserved = member.clone();
        reserved[3] |= 0x80;
        assert!(decode("gzip", &reserved, 1)
            .unwrap_err()
            .message()
            .contains("reserved"));
    }

    #[test]
    fn zstd_frames_skippable_frames_and_window_limit() {
        let (a, b) = (varied(50_000), varied(30_000));
        let mut stream = vec![0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3];
        stream.extend_from_slice(&zstd(&a));
        stream.extend_from_slice(&::zstd::stream::encode_all(&b[..], 19).unwrap());
        let mut both = a.clone();
        both.extend_from_slice(&b);
        for chunk in [1, 9, 70_000] {
            assert!(decode("zstd", &stream, chunk).unwrap() == both);
        }
        // A frame asking for a 16 MiB window: magic, descriptor, window byte.
        let big = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 14 << 3, 0, 0, 0];
        let e = decode("zstd", &big, 4).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(e.message().contains("window"), "{e}");
        // A window of exactly 8 MiB is fine.
        let mut enc = ::zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        enc.set_parameter(::zstd::zstd_safe::CParameter::WindowLog(23))
            .unwrap();
        enc.write_all(&a).unwrap();
        let eight = enc.finish().unwrap();
        assert!(decode("zstd", &eight, 1000).unwrap() == a);
    }

    /// Mangled streams of every coding end in `Ok` or an error, never a
    /// panic or a hang.
    #[test]
    fn mangled_streams_never_panic() {
        let data = varied(20_000);
        let mut x: u32 = 12345;
        let mut rand = move || {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 8) as usize
        };
        for (coding, encoded) in [
            ("gzip", gzip(&data)),
            ("deflate", zlib(&data)),
            ("deflate", raw_deflate(&data)),
            ("br", brotli(&data)),
            ("zstd", zstd(&data)),
        ] {
            for _ in 0..150 {
                let mut m = encoded.clone();
                for _ in 0..1 + rand() % 4 {
                    let i = rand() % m.len();
                    m[i] = rand() as u8;
                }
                if rand() % 3 == 0 {
                    m.truncate(rand() % m.len());
                }
                let _ = run(&mut decoder(coding, 4 * MIB as u64), &m, 1 + rand() % 5000);
            }
        }
    }

    #[test]
    fn the_decoder_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<Decoder>();
    }
}
