//! The response as it comes off the socket, checked and normalised before
//! ureq parses it.
//!
//! ureq's parser (ureq-proto over httparse) is lenient where RFC 9112 asks a
//! recipient to be strict, and strict where it asks a user agent to be
//! tolerant. Rather than patch ureq, the transport passes every response
//! through a [`ResponseFilter`] that:
//!
//! - holds each head to the response-head limits, to the byte and field;
//! - drops interim 1xx heads (ureq refuses a `100 Continue` with fields) and
//!   fails a `101` nobody asked for;
//! - unfolds obs-fold lines into SP, as RFC 9112 §5.2 asks of a user agent
//!   (httparse rejects them);
//! - checks chunked framing (chunk sizes of 1 to 16 hex digits, no bare CR
//!   or LF in a chunk line, CRLF after each chunk's data) and passes it on
//!   without extensions or trailers, which ureq-proto mishandles;
//! - reports a chunked body cut before its last chunk, which ureq takes for
//!   a clean end;
//! - marks the connection as not reusable when the head's framing cannot be
//!   trusted (Transfer-Encoding with Content-Length) or bytes follow the end
//!   of the body.

/// Where the filter writes what ureq should see.
pub(crate) trait Output {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl Output for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Output into a fixed buffer (ureq's), and what does not fit into a
/// vector behind it: one copy from the socket's bytes to ureq's buffer
/// instead of two.
pub(crate) struct Spill<'a> {
    buf: &'a mut [u8],
    filled: usize,
    rest: &'a mut Vec<u8>,
}

impl<'a> Spill<'a> {
    /// While `rest` holds bytes, everything goes behind them, so no byte
    /// ever overtakes another.
    pub(crate) fn new(buf: &'a mut [u8], rest: &'a mut Vec<u8>) -> Self {
        Spill {
            buf,
            filled: 0,
            rest,
        }
    }

    /// Bytes written into the buffer.
    pub(crate) fn filled(&self) -> usize {
        self.filled
    }
}

impl Output for Spill<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let fit = if self.rest.is_empty() {
            bytes.len().min(self.buf.len() - self.filled)
        } else {
            0
        };
        self.buf[self.filled..self.filled + fit].copy_from_slice(&bytes[..fit]);
        self.filled += fit;
        self.rest.extend_from_slice(&bytes[fit..]);
    }
}

/// Why a response was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The head broke a configured limit.
    Limit(String),
    /// The response broke the protocol.
    Protocol(String),
    /// The chunked body ended before its last chunk.
    Truncated,
}

/// The longest chunk-size line (size, extensions and CRLF) accepted.
const MAX_CHUNK_LINE: usize = 16 * 1024;

#[derive(Debug)]
enum State {
    /// No response expected: bytes pass as they are.
    Idle,
    /// Collecting a head (held back until complete).
    Head,
    /// Passing a Content-Length or close-delimited body through.
    Passthrough,
    /// Checking a chunked body.
    Chunked(Chunk),
    /// The chunked body is complete: what follows is not part of it.
    Done,
}

#[derive(Debug)]
enum Chunk {
    /// Reading a chunk-size line.
    Size(Vec<u8>),
    /// Passing `n` more data bytes.
    Data(u64),
    /// Expecting the CR (`false`) or LF (`true`) after a chunk's data.
    DataEnd(bool),
    /// Reading trailer lines (the current one so far).
    Trailers(Vec<u8>, usize),
}

/// The per-connection filter; see the module documentation.
#[derive(Debug)]
pub(crate) struct ResponseFilter {
    max_head: usize,
    max_fields: usize,
    state: State,
    head: Vec<u8>,
    bodyless: bool,
    reusable: bool,
}

impl ResponseFilter {
    pub(crate) fn new(max_head: usize, max_fields: usize) -> Self {
        ResponseFilter {
            max_head,
            max_fields,
            state: State::Idle,
            head: Vec::new(),
            bodyless: false,
            reusable: true,
        }
    }

    /// A request went out: the next bytes are its response. `bodyless` for
    /// a HEAD request, whose response has no body whatever its head says.
    pub(crate) fn request_started(&mut self, bodyless: bool) {
        self.state = State::Head;
        self.head.clear();
        self.bodyless = bodyless;
    }

    /// True while bytes pass unchanged (a Content-Length or close-delimited
    /// body): the transport may then read straight into ureq's buffer.
    ///
    /// A chunk's data passes unchanged too, but reading it apart from its
    /// framing splits the socket reads at every chunk (more reads, and a
    /// wake of the application per read): measured slower than the copy.
    pub(crate) fn passes_through(&self) -> bool {
        matches!(self.state, State::Passthrough)
    }

    /// True while a head is expected or being collected.
    pub(crate) fn in_head(&self) -> bool {
        matches!(self.state, State::Head)
    }

    /// False once the connection must not carry another request.
    pub(crate) fn reusable(&self) -> bool {
        self.reusable
    }

    /// Takes bytes read from the socket and appends what ureq should see to `out`.
    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut impl Output) -> Result<(), Refusal> {
        while !input.is_empty() {
            match &mut self.state {
                State::Idle | State::Passthrough => {
                    out.put(input);
                    return Ok(());
                }
                State::Done => {
                    // Bytes after the end of the body: the connection's
                    // framing can no longer be trusted.
                    self.reusable = false;
                    out.put(input);
                    return Ok(());
                }
                State::Head => input = self.head_bytes(input, out)?,
                State::Chunked(_) => input = self.chunk_bytes(input, out)?,
            }
        }
        Ok(())
    }

    /// The socket reached its end (a clean close).
    pub(crate) fn eof(&self) -> Result<(), Refusal> {
        match self.state {
            State::Chunked(_) => Err(Refusal::Truncated),
            _ => Ok(()),
        }
    }

    fn head_bytes<'a>(
        &mut self,
        input: &'a [u8],
        out: &mut impl Output,
    ) -> Result<&'a [u8], Refusal> {
        let too_large = || {
            Refusal::Limit(format!(
                "the response head is larger than the limit of {} bytes",
                self.max_head
            ))
        };
        // One pass over the new bytes rather than a push per byte. The blank
        // line may start in the bytes already held (they hold none whole).
        let held = self.head.len();
        // At most one byte past the limit is needed to know it is broken.
        let room = self.max_head.saturating_sub(held).saturating_add(1);
        let take = input.len().min(room);
        let tail = &self.head[held.saturating_sub(2)..];
        let straddling = match &input[..take] {
            [b'\n', ..] if tail.ends_with(b"\n") || tail.ends_with(b"\n\r") => Some(1),
            [b'\r', b'\n', ..] if tail.ends_with(b"\n") => Some(2),
            _ => None,
        };
        match straddling.or_else(|| head_terminator(&input[..take])) {
            Some(used) => {
                if held + used > self.max_head {
                    return Err(too_large());
                }
                self.head.extend_from_slice(&input[..used]);
                let head = std::mem::take(&mut self.head);
                self.head_done(head, out)?;
                Ok(&input[used..])
            }
            None if held + take > self.max_head => Err(too_large()),
            None => {
                self.head.extend_from_slice(&input[..take]);
                Ok(&input[take..])
            }
        }
    }

    fn head_done(&mut self, head: Vec<u8>, out: &mut impl Output) -> Result<(), Refusal> {
        let lines: Vec<&[u8]> = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .collect();
        let status = lines.first().and_then(|l| status_code(l));
        let Some(status) = status else {
            // Not a status line ureq would take either: it reports the error.
            out.put(&head);
            self.state = State::Passthrough;
            return Ok(());
        };
        // Skip the status line and the blank line(s) at the end.
        let fields = &lines[1..lines.len().saturating_sub(2)];
        let folded = fields
            .iter()
            .any(|l| l.first().is_some_and(|c| *c == b' ' || *c == b'\t'));
        let count = fields
            .iter()
            .filter(|l| !l.first().is_some_and(|c| *c == b' ' || *c == b'\t'))
            .count();
        if count > self.max_fields {
            return Err(Refusal::Limit(format!(
                "the response head has more than the limit of {} header fields",
                self.max_fields
            )));
        }
        if status == 101 {
            return Err(Refusal::Protocol(
                "a 101 (Switching Protocols) answered a request that asked for no upgrade".into(),
            ));
        }
        if (100..200).contains(&status) {
            // An interim head: skipped, the final one follows.
            self.state = State::Head;
            return Ok(());
        }
        let has = |name: &[u8]| {
            fields.iter().any(|l| {
                l.len() > name.len()
                    && l[..name.len()].eq_ignore_ascii_case(name)
                    && l[name.len()] == b':'
            })
        };
        let chunked = has(b"transfer-encoding");
        if chunked && has(b"content-length") {
            // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3), but
            // a message with both may be smuggling: its connection goes.
            self.reusable = false;
        }
        if folded {
            out.put(lines[0]);
            out.put(b"\r\n");
            let mut current: Vec<u8> = Vec::new();
            for l in fields {
                if l.first().is_some_and(|c| *c == b' ' || *c == b'\t') {
                    if current.is_empty() {
                        return Err(Refusal::Protocol(
                            "a folded header line has no field to continue".into(),
                        ));
                    }
                    // RFC 9112 §5.2: the obs-fold becomes SP.
                    while current.last().is_some_and(|c| *c == b' ' || *c == b'\t') {
                        current.pop();
                    }
                    current.push(b' ');
                    current.extend_from_slice(trim(l));
                } else {
                    if !current.is_empty() {
                        out.put(&current);
                        out.put(b"\r\n");
                    }
                    current = l.to_vec();
                }
            }
            if !current.is_empty() {
                out.put(&current);
                out.put(b"\r\n");
            }
            out.put(b"\r\n");
        } else {
            out.put(&head);
        }
        let no_body = self.bodyless || status == 204 || status == 304;
        self.state = if chunked && !no_body {
            State::Chunked(Chunk::Size(Vec::new()))
        } else {
            State::Passthrough
        };
        Ok(())
    }

    fn chunk_bytes<'a>(
        &mut self,
        input: &'a [u8],
        out: &mut impl Output,
    ) -> Result<&'a [u8], Refusal> {
        let State::Chunked(chunk) = &mut self.state else {
            return Ok(input);
        };
        match chunk {
            Chunk::Size(line) => {
                for (i, &b) in input.iter().enumerate() {
                    line.push(b);
                    if line.len() > MAX_CHUNK_LINE {
                        return Err(protocol("a chunk-size line is too long"));
                    }
                    if b == b'\n' {
                        let size = chunk_size(line)?;
                        out.put(format!("{size:x}\r\n").as_bytes());
                        *chunk = if size == 0 {
                            Chunk::Trailers(Vec::new(), 0)
                        } else {
                            Chunk::Data(size)
                        };
                        return Ok(&input[i + 1..]);
                    }
                }
                Ok(&[])
            }
            Chunk::Data(left) => {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                out.put(&input[..n]);
                *left -= n as u64;
                if *left == 0 {
                    *chunk = Chunk::DataEnd(false);
                }
                Ok(&input[n..])
            }
            Chunk::DataEnd(cr_seen) => {
                let b = input[0];
                match (b, *cr_seen) {
                    (b'\r', false) => *chunk = Chunk::DataEnd(true),
                    (b'\n', true) => {
                        out.put(b"\r\n");
                        *chunk = Chunk::Size(Vec::new());
                    }
                    _ => return Err(protocol("a chunk's data is not followed by CRLF")),
                }
                Ok(&input[1..])
            }
            Chunk::Trailers(line, total) => {
                for (i, &b) in input.iter().enumerate() {
                    line.push(b);
                    *total += 1;
                    if *total > self.max_head {
                        return Err(Refusal::Limit(format!(
                            "the trailer section is larger than the limit of {} bytes",
                            self.max_head
                        )));
                    }
                    if b == b'\n' {
                        let blank = line.as_slice() == b"\r\n" || line.as_slice() == b"\n";
                        line.clear();
                        if blank {
                            // Trailers are not part of the contract's response.
                            out.put(b"\r\n");
                            self.state = State::Done;
                            return Ok(&input[i + 1..]);
                        }
                    }
                }
                Ok(&[])
            }
        }
    }
}

/// The length of `buf` through the first LF LF or LF CR LF (the blank line
/// that ends a head), if it holds one.
fn head_terminator(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') {
        let after = at + nl + 1;
        match buf.get(after..) {
            Some([b'\n', ..]) => return Some(after + 1),
            Some([b'\r', b'\n', ..]) => return Some(after + 2),
            _ => at = after,
        }
    }
    None
}

fn protocol(msg: &str) -> Refusal {
    Refusal::Protocol(msg.to_owned())
}

/// The size of a chunk-size line (`1*16HEXDIG [ext] CRLF`).
fn chunk_size(line: &[u8]) -> Result<u64, Refusal> {
    let Some(body) = line.strip_suffix(b"\r\n") else {
        return Err(protocol("a chunk-size line does not end with CRLF"));
    };
    if body.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(protocol("a chunk-size line holds a bare CR, LF or NUL"));
    }
    let digits = body.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(protocol("invalid chunk size"));
    }
    let rest = &body[digits..];
    let rest = trim(rest);
    if !rest.is_empty() && rest[0] != b';' {
        return Err(protocol("invalid chunk size"));
    }
    let hex = std::str::from_utf8(&body[..digits]).map_err(|_| protocol("invalid chunk size"))?;
    u64::from_str_radix(hex, 16).map_err(|_| protocol("invalid chunk size"))
}

/// The status code of a status line `HTTP/x.y NNN [reason]`.
fn status_code(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/")?;
    let sp = rest.iter().position(|&b| b == b' ')?;
    let code = rest.get(sp + 1..sp + 4)?;
    if !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if rest.get(sp + 4).is_some_and(|b| *b != b' ') {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

fn trim(b: &[u8]) -> &[u8] {
    let ws = |c: &u8| matches!(c, b' ' | b'\t');
    let start = b.iter().position(|c| !ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !ws(c)).map_or(start, |e| e + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(filter: &mut ResponseFilter, parts: &[&[u8]]) -> Result<Vec<u8>, Refusal> {
        let mut out = Vec::new();
        for p in parts {
            filter.feed(p, &mut out)?;
        }
        Ok(out)
    }

    fn filter() -> ResponseFilter {
        let mut f = ResponseFilter::new(1024, 10);
        f.request_started(false);
        f
    }

    #[test]
    fn heads_end_wherever_the_reads_split_them() {
        let responses: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\nA: b\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\nA: b\nContent-Length: 2\n\nok",
            b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok",
            b"HTTP/1.1 103 Early\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ];
        for whole in responses {
            let expected = run(&mut filter(), &[whole]).unwrap();
            for size in 1..whole.len() {
                let parts: Vec<&[u8]> = whole.chunks(size).collect();
                assert_eq!(run(&mut filter(), &parts).unwrap(), expected, "{size}");
            }
        }
    }

    #[test]
    fn spilled_output_keeps_every_byte_in_order() {
        let response: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\n\r\n";
        let expected = run(&mut filter(), &[response]).unwrap();
        for room in [0, 1, 10, expected.len(), expected.len() + 5] {
            let mut f = filter();
            let mut buf = vec![0u8; room];
            let mut rest = Vec::new();
            let mut got = Vec::new();
            for part in response.chunks(7) {
                let mut out = Spill::new(&mut buf, &mut rest);
                f.feed(part, &mut out).unwrap();
                let filled = out.filled();
                got.extend_from_slice(&buf[..filled]);
                // Once bytes wait behind, nothing more goes into the buffer
                // until they are taken, as the transport does.
                if !rest.is_empty() {
                    got.append(&mut rest);
                }
            }
            assert_eq!(got, expected, "{room}");
        }
    }

    #[test]
    fn the_head_limit_is_exact_to_the_byte() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        for size in [1, 3, head.len()] {
            let parts: Vec<&[u8]> = head.chunks(size).collect();
            let mut f = ResponseFilter::new(head.len(), 10);
            f.request_started(false);
            assert!(run(&mut f, &parts).is_ok(), "{size}");
            let mut f = ResponseFilter::new(head.len() - 1, 10);
            f.request_started(false);
            assert!(
                matches!(run(&mut f, &parts), Err(Refusal::Limit(_))),
                "{size}"
            );
        }
    }

    #[test]
    fn interim_heads_go_and_folds_become_spaces() {
        let mut f = filter();
        let out = run(
            &mut f,
            &[
                b"HTTP/1.1 100 Continue\r\nX: 1\r\n\r\nHTTP/1.1 200 OK\r\nA: one\r\n",
                b"  two\r\n\tthree\r\nContent-Length: 2\r\n\r\nok",
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nA: one two three\r\nContent-Length: 2\r\n\r\nok"
        );
        assert!(f.reusable());
    }

    #[test]
    fn chunked_is_checked_and_passed_on_plain() {
        let mut f = filter();
        let out = run(
            &mut f,
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhel",
                b"lo\r\n0\r\nX-Sum: 1\r\n\r\n",
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        assert!(f.eof().is_ok());
        for bad in [
            &b"+5\r\nhello\r\n"[..],
            b"ILLEGAL\r\n",
            b"10000000000000005\r\n",
            b"5;a\nb\r\n",
            b"5\n",
            b"3\r\nhello\r\n",
        ] {
            let mut f = filter();
            let r = run(
                &mut f,
                &[
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                    bad,
                ],
            );
            assert!(matches!(r, Err(Refusal::Protocol(_))), "{bad:?}: {r:?}");
        }
        let mut f = filter();
        run(
            &mut f,
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"],
        )
        .unwrap();
        assert_eq!(f.eof(), Err(Refusal::Truncated));
    }

    #[test]
    fn limits_are_exact() {
        let head = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n";
        let mut at = ResponseFilter::new(head.len(), 1);
        at.request_started(false);
        assert!(run(&mut at, &[head]).is_ok());
        let mut over = ResponseFilter::new(head.len() - 1, 1);
        over.request_started(false);
        assert!(matches!(run(&mut over, &[head]), Err(Refusal::Limit(_))));
        let mut fields = ResponseFilter::new(1024, 1);
        fields.request_started(false);
        assert!(matches!(
            run(&mut fields, &[b"HTTP/1.1 200 OK\r\nA: b\r\nC: d\r\n\r\n"]),
            Err(Refusal::Limit(_))
        ));
    }

    #[test]
    fn both_framings_make_the_connection_single_use() {
        let mut f = filter();
        run(
            &mut f,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
        )
        .unwrap();
        assert!(!f.reusable());
    }
}
