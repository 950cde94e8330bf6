//! `MemoryCache`: entries held in memory, within a size bound, least
//! recently used evicted first.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use url::Url;

use super::lru::LruIndex;
use super::{CacheEntry, CacheMetadata, CacheWriter, CachedBody, NetworkCache};

/// A [`NetworkCache`] in memory, gone with the process.
///
/// It holds at most `max_bytes` (bodies plus about the size of their
/// metadata); storing past that evicts the least recently used entries. A
/// single entry larger than [`max_entry_bytes`](Self::max_entry_bytes)
/// (an eighth of the bound unless set) is not stored.
///
/// ```
/// use std::sync::Arc;
/// use handle_api::{MemoryCache, NetworkAccessManager};
/// # fn demo(factory: impl handle_api::BackendFactory) -> handle_api::Result<()> {
/// let nam = NetworkAccessManager::builder()
///     .cache(Arc::new(MemoryCache::new(64 << 20)))
///     .build(factory)?;
/// # let _ = nam; Ok(()) }
/// ```
#[derive(Debug)]
pub struct MemoryCache {
    inner: Arc<Shared>,
    max_entry_bytes: u64,
}

#[derive(Debug)]
struct Shared {
    max_bytes: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, (CacheMetadata, Bytes)>,
    lru: LruIndex,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the map and the index consistent before it
        // could panic, so a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn store(&self, metadata: CacheMetadata, body: Bytes) {
        let key = metadata.url.as_str().to_owned();
        let cost = body.len() as u64 + metadata.approximate_size();
        let mut st = self.lock();
        st.entries.insert(key.clone(), (metadata, body));
        st.lru.insert(&key, cost);
        while let Some(old) = st.lru.pop_over(self.max_bytes) {
            st.entries.remove(&old);
        }
    }
}

impl MemoryCache {
    /// A cache holding at most `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        MemoryCache {
            inner: Arc::new(Shared {
                max_bytes,
                state: Mutex::new(State::default()),
            }),
            max_entry_bytes: max_bytes / 8,
        }
    }

    /// Sets the largest entry stored (body plus metadata); default an eighth
    /// of the cache's bound, never more than the bound.
    pub fn with_max_entry_bytes(mut self, n: u64) -> Self {
        self.max_entry_bytes = n.min(self.inner.max_bytes);
        self
    }

    /// The bound on the whole cache.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// The bound on one entry.
    pub fn max_entry_bytes(&self) -> u64 {
        self.max_entry_bytes
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl NetworkCache for MemoryCache {
    fn lookup(&self, url: &Url) -> Option<CacheEntry> {
        let mut st = self.inner.lock();
        let (metadata, body) = st.entries.get(url.as_str())?.clone();
        st.lru.touch(url.as_str());
        Some(CacheEntry {
            metadata,
            body: CachedBody::from_bytes(body),
        })
    }

    fn prepare(&self, metadata: CacheMetadata) -> Option<Box<dyn CacheWriter>> {
        let budget = self
            .max_entry_bytes
            .checked_sub(metadata.approximate_size())?;
        Some(Box::new(MemoryWriter {
            cache: self.inner.clone(),
            metadata,
            body: BytesMut::new(),
            budget,
        }))
    }

    fn update_metadata(&self, metadata: CacheMetadata) -> bool {
        let body = match self.inner.lock().entries.get(metadata.url.as_str()) {
            Some((_, body)) => body.clone(),
            None => return false,
        };
        self.inner.store(metadata, body);
        true
    }

    fn remove(&self, url: &Url) -> bool {
        let mut st = self.inner.lock();
        st.lru.remove(url.as_str());
        st.entries.remove(url.as_str()).is_some()
    }

    fn size(&self) -> u64 {
        self.inner.lock().lru.used()
    }

    fn clear(&self) {
        let mut st = self.inner.lock();
        st.entries.clear();
        st.lru.clear();
    }
}

struct MemoryWriter {
    cache: Arc<Shared>,
    metadata: CacheMetadata,
    body: BytesMut,
    /// Body bytes still allowed.
    budget: u64,
}

impl CacheWriter for MemoryWriter {
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let n = chunk.len() as u64;
        if n > self.budget {
            self.budget = 0;
            self.body = BytesMut::new();
            return Err(io::Error::other(
                "the body is larger than the cache stores for one entry",
            ));
        }
        self.budget -= n;
        self.body.extend_from_slice(chunk);
        Ok(())
    }

    fn commit(self: Box<Self>) -> io::Result<()> {
        let w = *self;
        w.cache.store(w.metadata, w.body.freeze());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, StatusCode, Version};
    use std::time::SystemTime;

    pub(crate) fn meta(url: &str) -> CacheMetadata {
        CacheMetadata {
            url: Url::parse(url).unwrap(),
            status: StatusCode::OK,
            reason: "OK".into(),
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            request_headers: HeaderMap::new(),
            response_time: SystemTime::now(),
        }
    }

    fn put(c: &MemoryCache, url: &str, body: &[u8]) -> io::Result<()> {
        let mut w = c.prepare(meta(url)).ok_or(io::ErrorKind::Other)?;
        w.write(body)?;
        w.commit()
    }

    fn body(c: &MemoryCache, url: &str) -> Option<Bytes> {
        let e = c.lookup(&Url::parse(url).unwrap())?;
        Some(e.body.into_bytes().unwrap())
    }

    #[test]
    fn stores_and_returns_entries() {
        let c = MemoryCache::new(1 << 20);
        put(&c, "http://a.test/x", b"hello").unwrap();
        assert_eq!(body(&c, "http://a.test/x").unwrap(), "hello");
        assert!(body(&c, "http://a.test/y").is_none());
        assert!(c.remove(&Url::parse("http://a.test/x").unwrap()));
        assert!(c.is_empty());
        assert_eq!(c.size(), 0);
    }

    #[test]
    fn uncommitted_writers_store_nothing() {
        let c = MemoryCache::new(1 << 20);
        let mut w = c.prepare(meta("http://a.test/x")).unwrap();
        w.write(b"part").unwrap();
        drop(w);
        assert!(c.is_empty());
    }

    #[test]
    fn entries_past_the_entry_bound_are_refused() {
        let c = MemoryCache::new(8000).with_max_entry_bytes(2000);
        assert!(put(&c, "http://a.test/big", &[0; 2000]).is_err());
        assert!(c.is_empty());
        put(&c, "http://a.test/ok", &[0; 1000]).unwrap();
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn evicts_least_recently_used() {
        let c = MemoryCache::new(4000).with_max_entry_bytes(4000);
        put(&c, "http://a.test/1", &[1; 1000]).unwrap();
        put(&c, "http://a.test/2", &[2; 1000]).unwrap();
        put(&c, "http://a.test/3", &[3; 1000]).unwrap();
        // 1 is used again, so 2 is now the oldest.
        assert!(body(&c, "http://a.test/1").is_some());
        put(&c, "http://a.test/4", &[4; 1000]).unwrap();
        assert!(c.size() <= 4000);
        assert!(body(&c, "http://a.test/2").is_none());
        for kept in ["http://a.test/1", "http://a.test/3", "http://a.test/4"] {
            assert!(body(&c, kept).is_some(), "{kept}");
        }
    }

    #[test]
    fn metadata_updates_keep_the_body() {
        let c = MemoryCache::new(1 << 20);
        put(&c, "http://a.test/x", b"body").unwrap();
        let mut m = meta("http://a.test/x");
        m.headers.insert("x-new", "1".parse().unwrap());
        assert!(c.update_metadata(m));
        let e = c.lookup(&Url::parse("http://a.test/x").unwrap()).unwrap();
        assert_eq!(e.metadata.headers["x-new"], "1");
        assert_eq!(e.body.into_bytes().unwrap(), "body");
        assert!(!c.update_metadata(meta("http://a.test/none")));
    }
}
