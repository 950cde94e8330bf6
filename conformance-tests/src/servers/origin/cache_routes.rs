//! `/cache/ID`: resources for the HTTP cache cases.
//!
//! Each ID has a version (1 until [`Origin::set_version`] changes it, and
//! bumped by any request with an unsafe method). A GET answers 200 with
//!
//! - `cache-control: CC` when `cc=CC` is given, `expires: DATE` for `expires=DATE`;
//! - `etag: "ID-vV"` for `etag=strong`, `etag: W/"ID-vV"` for `etag=weak`;
//! - `last-modified:` a date that moves one day per version, for `lm=1`;
//! - `vary: NAME` for `vary=NAME`, and the request's value of NAME in the body;
//! - `x-version: V`, and the body `ID vV[ NAME=VALUE]\n`, padded with
//!   [`body_pattern`](super::body_pattern) bytes to `len=N` when given;
//! - with `enc=CODING`, the body compressed with [`encode`](super::encode) and
//!   labelled with Content-Encoding;
//! - with `cut=1`, a Content-Length for the whole body but only its first
//!   half, then the connection closes.
//!
//! A GET whose If-None-Match names the current ETag (weak comparison), or
//! whose If-Modified-Since is the current Last-Modified, answers 304 with the
//! validators, `cache-control: CC304` (or CC) and `x-revalidated: N`, the
//! count of 304s this ID has sent. Any other method bumps the version and
//! answers 200 `changed`, with no cache headers.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;

use super::{encode, lock, Origin, Req, Responder, PATTERN};

/// The versions and revalidation counts of the `/cache/ID` resources.
#[derive(Debug, Default)]
pub(super) struct CacheState {
    versions: Mutex<HashMap<String, u32>>,
    revalidations: Mutex<HashMap<String, u32>>,
}

impl CacheState {
    fn version(&self, id: &str) -> u32 {
        lock(&self.versions).get(id).copied().unwrap_or(1)
    }
}

impl Origin {
    /// Sets the version of `/cache/ID` (1 until set): its ETag, Last-Modified
    /// and body follow it.
    pub fn set_version(&self, id: &str, version: u32) {
        lock(&self.state.cache.versions).insert(id.to_owned(), version.max(1));
    }

    /// How many requests for `path` (the target without its query) arrived.
    pub fn count(&self, path: &str) -> usize {
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.target.split('?').next() == Some(path))
            .count()
    }
}

/// The Last-Modified of version `v`: 2 January 2023 (a Monday) plus `v - 1` days.
fn last_modified(v: u32) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    // January has room for 29 versions; later ones share its last day.
    let offset = v.saturating_sub(1).min(28);
    format!(
        "{}, {:02} Jan 2023 00:00:00 GMT",
        DAYS[(offset % 7) as usize],
        2 + offset
    )
}

/// The ETag of version `v` of `id`, strong or weak.
fn etag(id: &str, v: u32, weak: bool) -> String {
    format!("{}\"{id}-v{v}\"", if weak { "W/" } else { "" })
}

/// Whether an If-None-Match value names `tag`, weakly compared.
fn none_match(value: &str, tag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    value.trim() == "*" || value.split(',').any(|t| bare(t) == bare(tag))
}

pub(super) fn respond(
    mut r: Responder<'_>,
    id: &str,
    q: &Req<'_>,
    state: &CacheState,
) -> io::Result<bool> {
    let (query, req) = (q.query, q.record);
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        *lock(&state.versions).entry(id.to_owned()).or_insert(1) += 1;
        return r.full(200, "OK", "text/plain", b"changed\n");
    }
    let v = state.version(id);
    let tag = query.get("etag").map(|kind| etag(id, v, kind == "weak"));
    let modified = query.get("lm").map(|_| last_modified(v));
    let mut validators: Vec<(&str, String)> = Vec::new();
    if let Some(t) = &tag {
        validators.push(("etag", t.clone()));
    }
    if let Some(m) = &modified {
        validators.push(("last-modified", m.clone()));
    }
    if let Some(vary) = query.get("vary") {
        validators.push(("vary", vary.clone()));
    }
    let inm = req.header_values("if-none-match");
    let ims = req.header_values("if-modified-since");
    let not_modified = match (&tag, inm.is_empty()) {
        // If-None-Match decides when both are sent (RFC 9110 §13.2.2).
        (Some(t), false) => inm.iter().any(|v| none_match(v, t)),
        (None, false) => false,
        (_, true) => modified
            .as_ref()
            .is_some_and(|m| ims.iter().any(|v| v.trim() == m)),
    };
    if not_modified {
        let n = {
            let mut counts = lock(&state.revalidations);
            let n = counts.entry(id.to_owned()).or_insert(0);
            *n += 1;
            *n
        };
        let mut headers = validators;
        if let Some(cc) = query.get("cc304").or_else(|| query.get("cc")) {
            headers.push(("cache-control", cc.clone()));
        }
        headers.push(("x-revalidated", n.to_string()));
        r.head(304, "Not Modified", &headers)?;
        return Ok(true);
    }
    let mut body = format!("{id} v{v}");
    if let Some(name) = query.get("vary") {
        let value = req.header_values(name).first().copied().unwrap_or("-");
        body.push_str(&format!(" {}={value}", name.to_ascii_lowercase()));
    }
    body.push('\n');
    let mut body = body.into_bytes();
    if let Some(len) = query.get("len").and_then(|l| l.parse::<usize>().ok()) {
        while body.len() < len {
            let take = (len - body.len()).min(PATTERN.len());
            body.extend_from_slice(&PATTERN[..take]);
        }
    }
    let mut headers: Vec<(&str, String)> = vec![("content-type", "text/plain".into())];
    if let Some(coding) = query.get("enc") {
        body = encode(coding, &body)?;
        headers.push(("content-encoding", coding.clone()));
    }
    if let Some(cc) = query.get("cc") {
        headers.push(("cache-control", cc.clone()));
    }
    if let Some(expires) = query.get("expires") {
        headers.push(("expires", expires.clone()));
    }
    headers.extend(validators);
    headers.push(("x-version", v.to_string()));
    headers.push(("content-length", body.len().to_string()));
    r.head(200, "OK", &headers)?;
    if r.is_head {
        return Ok(true);
    }
    if query.contains_key("cut") {
        r.out.write_all(&body[..body.len() / 2])?;
        r.out.flush()?;
        // The rest never comes: the connection ends mid-body.
        return Ok(false);
    }
    r.out.write_all(&body)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators_follow_the_version() {
        assert_eq!(last_modified(1), "Mon, 02 Jan 2023 00:00:00 GMT");
        assert_eq!(last_modified(2), "Tue, 03 Jan 2023 00:00:00 GMT");
        assert_eq!(last_modified(8), "Mon, 09 Jan 2023 00:00:00 GMT");
        assert_eq!(etag("a", 3, false), "\"a-v3\"");
        assert_eq!(etag("a", 3, true), "W/\"a-v3\"");
        assert!(none_match("\"x\", W/\"a-v3\"", "\"a-v3\""));
        assert!(!none_match("\"a-v2\"", "\"a-v3\""));
        assert!(none_match("*", "\"a-v3\""));
    }
}
