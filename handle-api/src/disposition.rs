//! Content-Disposition (RFC 6266), with RFC 8187's `filename*`: the file
//! name a server suggests for saving a response.
//!
//! Everything here is untrusted input, so parsing is lenient where browsers
//! are (unterminated quotes, missing disposition type, non-ASCII bytes) and
//! strict about the result: a suggested name is never a path.

/// The file name suggested by a Content-Disposition value: `filename*`
/// (RFC 8187, UTF-8 or ISO-8859-1) wins over `filename`; parameter names are
/// case-insensitive; quoted strings are unescaped. Only the last path
/// component is kept (after `/` or `\`), control characters become `_`, and
/// an empty name, `.` or `..` gives `None`.
pub(crate) fn suggested_filename(value: &str) -> Option<String> {
    let params = parameters(value);
    let find = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    // A filename* that cannot be decoded (unknown charset, invalid UTF-8) or
    // names nothing usable falls back to filename, as RFC 6266 §4.3 intends.
    find("filename*")
        .and_then(decode_ext_value)
        .and_then(|n| sanitize(&n))
        .or_else(|| find("filename").and_then(sanitize))
}

/// The `name=value` parameters, values unquoted. The disposition type (a
/// first element without `=`) and anything unparsable are skipped; a `;`
/// inside a quoted string does not split.
fn parameters(value: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ';' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return params;
        }
        let name_end = rest.find(['=', ';']).unwrap_or(rest.len());
        let name = rest[..name_end].trim();
        rest = &rest[name_end..];
        let Some(after_eq) = rest.strip_prefix('=') else {
            // No value: the disposition type or junk.
            continue;
        };
        let after_eq = after_eq.trim_start();
        let (value, tail) = match after_eq.strip_prefix('"') {
            Some(quoted) => unquote(quoted),
            None => {
                let end = after_eq.find(';').unwrap_or(after_eq.len());
                (after_eq[..end].trim().to_owned(), &after_eq[end..])
            }
        };
        // Whatever follows a closing quote up to the next `;` is junk.
        rest = tail.find(';').map_or("", |i| &tail[i..]);
        if !name.is_empty() {
            params.push((name.to_owned(), value));
        }
    }
}

/// A quoted-string's content after its opening quote, unescaped (RFC 9110
/// §5.6.4), and the text after the closing quote. An unterminated string
/// runs to the end, as browsers read it.
fn unquote(quoted: &str) -> (String, &str) {
    let mut out = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, &quoted[i + 1..]),
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    out.push(escaped);
                }
            }
            c => out.push(c),
        }
    }
    (out, "")
}

/// RFC 8187 §3.2: `charset'[language]'value-chars`, percent-encoded.
fn decode_ext_value(value: &str) -> Option<String> {
    let mut parts = value.splitn(3, '\'');
    let (charset, _language, encoded) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = percent_decode(encoded)?;
    if charset.eq_ignore_ascii_case("utf-8") {
        String::from_utf8(bytes).ok()
    } else if charset.eq_ignore_ascii_case("iso-8859-1") {
        // ISO-8859-1 is the first 256 code points of Unicode.
        Some(bytes.iter().map(|&b| char::from(b)).collect())
    } else if charset.eq_ignore_ascii_case("us-ascii") && bytes.is_ascii() {
        Some(bytes.iter().map(|&b| char::from(b)).collect())
    } else {
        None
    }
}

/// `%XX` → the byte; a `%` without two hex digits makes the value invalid.
fn percent_decode(encoded: &str) -> Option<Vec<u8>> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The last path component, with control characters replaced; `None` for a
/// name that would point at a directory rather than a file.
fn sanitize(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = last
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    let clean = clean.trim();
    if clean.is_empty() || clean == "." || clean == ".." {
        return None;
    }
    Some(clean.to_owned())
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue, StatusCode, Version};
    use url::Url;

    use super::*;
    use crate::response::{ResourceResponse, ResponseHead};

    fn name(v: &str) -> Option<String> {
        suggested_filename(v)
    }

    #[test]
    fn filename_parameters_as_rfc_6266_reads_them() {
        let cases = [
            ("attachment; filename=\"report.pdf\"", "report.pdf"),
            ("inline; filename=plain.txt", "plain.txt"),
            ("attachment;filename=nospace.txt", "nospace.txt"),
            ("ATTACHMENT; FileName = \"spaced.txt\" ", "spaced.txt"),
            // filename* wins, wherever it stands.
            (
                "attachment; filename*=UTF-8''%e2%82%ac%20rates.txt; filename=\"fallback.txt\"",
                "€ rates.txt",
            ),
            (
                "attachment; filename=\"fallback.txt\"; FILENAME*=utf-8'en'na%C3%AFve.txt",
                "naïve.txt",
            ),
            ("attachment; filename*=iso-8859-1'en'%A3%20rates", "£ rates"),
            ("attachment; filename*=us-ascii''a%20b", "a b"),
            // Quoted strings: escapes, and separators inside them.
            (
                r#"attachment; filename="a \"quoted\" name.txt""#,
                r#"a "quoted" name.txt"#,
            ),
            ("attachment; filename=\"a;b=c.txt\"; size=3", "a;b=c.txt"),
            ("attachment; filename=\"x.txt\"junk; other=1", "x.txt"),
            // Lenient like browsers: no type, unterminated quote, raw UTF-8.
            ("filename=first.txt", "first.txt"),
            (
                "attachment; filename=\"unterminated.txt",
                "unterminated.txt",
            ),
            ("attachment; filename=\"日本語.txt\"", "日本語.txt"),
            // The first of repeated parameters.
            ("attachment; filename=one.txt; filename=two.txt", "one.txt"),
        ];
        for (value, expected) in cases {
            assert_eq!(name(value).as_deref(), Some(expected), "{value}");
        }
    }

    #[test]
    fn a_suggested_name_is_never_a_path() {
        let cases = [
            ("attachment; filename=\"../../etc/passwd\"", Some("passwd")),
            (
                r#"attachment; filename="C:\\Windows\\evil.exe""#,
                Some("evil.exe"),
            ),
            (r"attachment; filename=..\..\x.bat", Some("x.bat")),
            (
                "attachment; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd",
                Some("passwd"),
            ),
            (
                "attachment; filename*=UTF-8''%5C%5Cserver%5Cshare%5Cs.txt",
                Some("s.txt"),
            ),
            ("attachment; filename=\"..\"", None),
            ("attachment; filename=\".\"", None),
            ("attachment; filename=\"\"", None),
            ("attachment; filename=\"dir/\"", None),
            ("attachment; filename=\" / \"", None),
            ("attachment; filename=\"a\tb\x7f.txt\"", Some("a_b_.txt")),
        ];
        for (value, expected) in cases {
            assert_eq!(name(value).as_deref(), expected, "{value}");
        }
    }

    #[test]
    fn undecodable_filename_star_falls_back() {
        for value in [
            "attachment; filename*=koi8-r''%E1; filename=x.txt",
            "attachment; filename*=UTF-8''%e2%82; filename=x.txt",
            "attachment; filename*=UTF-8''%zz; filename=x.txt",
            "attachment; filename*=UTF-8''%; filename=x.txt",
            "attachment; filename*=no-quotes; filename=x.txt",
            "attachment; filename*=UTF-8''..; filename=x.txt",
            "attachment; filename*=us-ascii''%e9; filename=x.txt",
        ] {
            assert_eq!(name(value).as_deref(), Some("x.txt"), "{value}");
        }
    }

    #[test]
    fn no_filename_gives_none() {
        for value in [
            "",
            "attachment",
            "inline",
            "attachment; size=3",
            "form-data; name=\"f\"",
        ] {
            assert_eq!(name(value), None, "{value}");
        }
    }

    #[test]
    fn malformed_values_never_panic() {
        let odd = [
            ";;;==;\"",
            "=",
            "\"",
            "filename*=",
            "filename*=UTF-8'",
            "filename*=''",
            "filename=\"\\",
            "filename=\"\\€",
            "; filename ; = x",
            "filename==x",
            "\u{0}\u{1}filename=\u{0}",
            "filename=\"é\\",
        ];
        for value in odd {
            let _ = name(value);
        }
        // A long value parses in linear time.
        let long = format!("attachment; {}filename=ok.txt", "x=\"y\\\";".repeat(20_000));
        let _ = name(&long);
        // Random strings over the characters the parser cares about.
        let alphabet: Vec<char> = ";=\"\\'%*filenam/ .é€2E\t".chars().collect();
        let mut x: u32 = 7;
        for _ in 0..5000 {
            let len = (x % 40) as usize;
            let s: String = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    alphabet[(x >> 16) as usize % alphabet.len()]
                })
                .collect();
            let prefixed = format!("attachment; filename{s}");
            for v in [&s, &prefixed] {
                if let Some(n) = name(v) {
                    assert!(!n.is_empty() && n != "." && n != "..", "{v:?} → {n:?}");
                    assert!(!n.contains(['/', '\\']), "{v:?} → {n:?}");
                    assert!(!n.chars().any(char::is_control), "{v:?} → {n:?}");
                }
            }
        }
    }

    #[test]
    fn responses_read_the_header_bytes_as_sent() {
        let response = |value: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::CONTENT_DISPOSITION,
                HeaderValue::from_bytes(value).unwrap(),
            );
            ResourceResponse::from_head(
                Url::parse("http://a.test/download").unwrap(),
                ResponseHead::new(StatusCode::OK, Version::HTTP_11, headers),
            )
        };
        let r = response(b"attachment; filename*=UTF-8''%e2%82%ac.txt");
        assert_eq!(r.suggested_filename().as_deref(), Some("€.txt"));
        // Raw UTF-8 and raw ISO-8859-1 bytes (obs-text), as servers send them.
        let r = response("attachment; filename=\"café.txt\"".as_bytes());
        assert_eq!(r.suggested_filename().as_deref(), Some("café.txt"));
        let r = response(b"attachment; filename=\"caf\xe9.txt\"");
        assert_eq!(r.suggested_filename().as_deref(), Some("café.txt"));
        let none = ResourceResponse::from_head(
            Url::parse("http://a.test/x.txt").unwrap(),
            ResponseHead::new(StatusCode::OK, Version::HTTP_11, HeaderMap::new()),
        );
        assert_eq!(none.suggested_filename(), None);
    }
}
