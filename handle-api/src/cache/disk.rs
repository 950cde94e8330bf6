//! `DiskCache`: one file per entry in a directory, written atomically,
//! checked when read, within a size bound (Qt's QNetworkDiskCache).
//!
//! An entry file is
//!
//! ```text
//! "RHCACHE\n" | format u32 LE | metadata length u32 LE | metadata | body
//!     | body length u64 LE | CRC-32 u32 LE | "RHCE"
//! ```
//!
//! with the CRC-32 over everything before the trailer. It is written to a
//! temporary file in the same directory, flushed to disk and renamed over
//! the entry, so a crash leaves the old entry or the new one, never a mix.
//! Reading checks the magic, the format, every length and the checksum
//! before a byte of the body is handed out: an entry that is truncated,
//! corrupt or of an unknown format is a miss, and its file is removed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use url::Url;

use super::lru::LruIndex;
use super::{CacheEntry, CacheMetadata, CacheWriter, CachedBody, NetworkCache};
use crate::error::{Error, ErrorKind, Result};

const MAGIC: &[u8; 8] = b"RHCACHE\n";
const END_MAGIC: &[u8; 4] = b"RHCE";
/// The entry format this version writes and reads; any other is a miss.
const FORMAT: u32 = 1;
const HEADER_LEN: u64 = 16;
const TRAILER_LEN: u64 = 16;
const ENTRY_SUFFIX: &str = ".entry";
const TEMP_PREFIX: &str = ".tmp-";
/// Bodies up to this size are kept in memory while their checksum is
/// verified, so a hit reads the file once; larger ones are read again as
/// they stream.
const INLINE_BODY: u64 = 1 << 20;
/// Temporary files older than this are left over from a crash.
const STALE_TEMP: Duration = Duration::from_secs(3600);

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A [`NetworkCache`] in a directory, kept across restarts.
///
/// It holds at most `max_bytes` of entry files; storing past that evicts the
/// least recently used entries (the order survives a restart: a hit marks
/// its file's modification time). A single entry larger than
/// [`max_entry_bytes`](Self::max_entry_bytes) (an eighth of the bound
/// unless set) is not stored.
///
/// ```no_run
/// use std::sync::Arc;
/// use handle_api::{DiskCache, NetworkAccessManager};
/// # fn demo(factory: impl handle_api::BackendFactory) -> handle_api::Result<()> {
/// let cache = DiskCache::open("/var/cache/app/http", 256 << 20)?;
/// let nam = NetworkAccessManager::builder()
///     .cache(Arc::new(cache))
///     .build(factory)?;
/// # let _ = nam; Ok(()) }
/// ```
#[derive(Debug)]
pub struct DiskCache {
    inner: Arc<Shared>,
    max_entry_bytes: u64,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    /// Entry file names.
    index: Mutex<LruIndex>,
}

impl Shared {
    fn index(&self) -> MutexGuard<'_, LruIndex> {
        // The index is only a bookkeeping of the files: a poisoned lock holds
        // nothing that could be half-updated in a harmful way.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Removes an entry file and forgets it.
    fn drop_entry(&self, name: &str) -> bool {
        self.index().remove(name);
        fs::remove_file(self.path(name)).is_ok()
    }

    /// Indexes a committed entry file and evicts past the bound.
    fn indexed(&self, name: &str, len: u64) {
        let evicted: Vec<String> = {
            let mut index = self.index();
            index.insert(name, len);
            std::iter::from_fn(|| index.pop_over(self.max_bytes)).collect()
        };
        for old in evicted {
            let _ = fs::remove_file(self.path(&old));
        }
    }
}

/// The file name of `url`'s entry.
fn entry_name(url: &Url) -> String {
    let digest = Sha256::digest(url.as_str().as_bytes());
    let mut name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    name.push_str(ENTRY_SUFFIX);
    name
}

fn io_error(what: &str, dir: &Path, e: io::Error) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("cache directory {}: {what}: {e}", dir.display()),
    )
    .with_source(e)
}

impl DiskCache {
    /// Opens (creating it when needed) a cache in `dir` holding at most
    /// `max_bytes`. The entries already there are kept, within the bound.
    pub fn open(dir: impl AsRef<Path>, max_bytes: u64) -> Result<DiskCache> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io_error("cannot create it", &dir, e))?;
        let listing = fs::read_dir(&dir).map_err(|e| io_error("cannot list it", &dir, e))?;
        let now = SystemTime::now();
        let mut found = Vec::new();
        for item in listing.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let Ok(meta) = item.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.ends_with(ENTRY_SUFFIX) {
                found.push((modified, name, meta.len()));
            } else if name.starts_with(TEMP_PREFIX)
                && now.duration_since(modified).unwrap_or_default() > STALE_TEMP
            {
                let _ = fs::remove_file(item.path());
            }
        }
        // Oldest use first, so the index starts in the order of the last run.
        found.sort();
        let shared = Shared {
            dir,
            max_bytes,
            index: Mutex::new(LruIndex::default()),
        };
        for (_, name, len) in found {
            shared.indexed(&name, len);
        }
        Ok(DiskCache {
            inner: Arc::new(shared),
            max_entry_bytes: max_bytes / 8,
        })
    }

    /// Sets the largest entry file stored; default an eighth of the cache's
    /// bound, never more than the bound.
    pub fn with_max_entry_bytes(mut self, n: u64) -> Self {
        self.max_entry_bytes = n.min(self.inner.max_bytes);
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The bound on the whole cache.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// The bound on one entry file.
    pub fn max_entry_bytes(&self) -> u64 {
        self.max_entry_bytes
    }

    /// The file that holds (or would hold) `url`'s entry.
    pub fn entry_path(&self, url: &Url) -> PathBuf {
        self.inner.path(&entry_name(url))
    }

    fn writer(&self, metadata: &CacheMetadata) -> io::Result<DiskWriter> {
        let meta = metadata.encode();
        let meta_len = u32::try_from(meta.len()).map_err(io::Error::other)?;
        let budget = self
            .max_entry_bytes
            .checked_sub(HEADER_LEN + u64::from(meta_len) + TRAILER_LEN)
            .ok_or_else(|| io::Error::other("the metadata alone is past the entry bound"))?;
        let temp = self.inner.path(&format!(
            "{TEMP_PREFIX}{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        let mut w = DiskWriter {
            cache: self.inner.clone(),
            name: entry_name(&metadata.url),
            temp,
            file: Some(BufWriter::with_capacity(64 * 1024, file)),
            crc: crc32fast::Hasher::new(),
            body_len: 0,
            budget,
        };
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT.to_le_bytes());
        header.extend_from_slice(&meta_len.to_le_bytes());
        w.put(&header)?;
        w.put(&meta)?;
        Ok(w)
    }
}

/// Why an entry file could not be used.
enum Unusable {
    /// Missing or unreadable: nothing to remove.
    Absent,
    /// Truncated, corrupt or of another format: remove it.
    Damaged,
    /// Intact but for another url (a digest collision): leave it.
    Other,
}

impl From<io::Error> for Unusable {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound => Unusable::Absent,
            // Reading past the end: the file is shorter than it says.
            io::ErrorKind::UnexpectedEof => Unusable::Damaged,
            _ => Unusable::Absent,
        }
    }
}

/// Reads and checks the entry file at `path`.
fn read_entry(path: &Path, url: &Url) -> Result<(CacheEntry, u64), Unusable> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len < HEADER_LEN + TRAILER_LEN {
        return Err(Unusable::Damaged);
    }
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact(&mut header)?;
    if &header[..8] != MAGIC || header[8..12] != FORMAT.to_le_bytes() {
        return Err(Unusable::Damaged);
    }
    let meta_len = u64::from(u32::from_le_bytes([
        header[12], header[13], header[14], header[15],
    ]));
    if HEADER_LEN + meta_len + TRAILER_LEN > len {
        return Err(Unusable::Damaged);
    }
    file.seek(SeekFrom::Start(len - TRAILER_LEN))?;
    let mut trailer = [0u8; TRAILER_LEN as usize];
    file.read_exact(&mut trailer)?;
    let mut body_len = [0u8; 8];
    body_len.copy_from_slice(&trailer[..8]);
    let body_len = u64::from_le_bytes(body_len);
    let crc = u32::from_le_bytes([trailer[8], trailer[9], trailer[10], trailer[11]]);
    if &trailer[12..] != END_MAGIC
        || HEADER_LEN
            .checked_add(meta_len)
            .and_then(|n| n.checked_add(body_len))
            .and_then(|n| n.checked_add(TRAILER_LEN))
            != Some(len)
    {
        return Err(Unusable::Damaged);
    }
    // The whole file is checked before anything in it is believed.
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header);
    file.seek(SeekFrom::Start(HEADER_LEN))?;
    let mut meta = vec![0u8; meta_len as usize];
    file.read_exact(&mut meta)?;
    hasher.update(&meta);
    let inline = body_len <= INLINE_BODY;
    let mut body = Vec::with_capacity(if inline { body_len as usize } else { 0 });
    let mut left = body_len;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..want])?;
        hasher.update(&buf[..want]);
        if inline {
            body.extend_from_slice(&buf[..want]);
        }
        left -= want as u64;
    }
    if hasher.finalize() != crc {
        return Err(Unusable::Damaged);
    }
    let metadata = CacheMetadata::decode(&meta).map_err(|_| Unusable::Damaged)?;
    if metadata.url != *url {
        return Err(Unusable::Other);
    }
    // A hit marks the entry as used, in the file so the order outlives the process.
    let _ = file.set_modified(SystemTime::now());
    let body = if inline {
        CachedBody::from_bytes(Bytes::from(body))
    } else {
        file.seek(SeekFrom::Start(HEADER_LEN + meta_len))?;
        CachedBody::from_reader(file.take(body_len), body_len)
    };
    Ok((CacheEntry { metadata, body }, len))
}

impl NetworkCache for DiskCache {
    fn lookup(&self, url: &Url) -> Option<CacheEntry> {
        let name = entry_name(url);
        match read_entry(&self.inner.path(&name), url) {
            Ok((entry, len)) => {
                let mut index = self.inner.index();
                // An entry another cache on this directory wrote is indexed now.
                if !index.touch(&name) {
                    index.insert(&name, len);
                }
                Some(entry)
            }
            Err(Unusable::Damaged) => {
                self.inner.drop_entry(&name);
                None
            }
            Err(Unusable::Absent | Unusable::Other) => None,
        }
    }

    fn prepare(&self, metadata: CacheMetadata) -> Option<Box<dyn CacheWriter>> {
        self.writer(&metadata)
            .ok()
            .map(|w| Box::new(w) as Box<dyn CacheWriter>)
    }

    fn update_metadata(&self, metadata: CacheMetadata) -> bool {
        let url = metadata.url.clone();
        let Some(entry) = self.lookup(&url) else {
            return false;
        };
        let copied = (|| -> io::Result<()> {
            let mut w = self.writer(&metadata)?;
            match entry.body.source {
                super::BodySource::Bytes(b) => w.write(&b)?,
                super::BodySource::Reader(mut r) => {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = r.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        w.write(&buf[..n])?;
                    }
                }
            }
            if w.body_len != entry.body.len {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Box::new(w).commit()
        })();
        copied.is_ok()
    }

    fn remove(&self, url: &Url) -> bool {
        self.inner.drop_entry(&entry_name(url))
    }

    fn size(&self) -> u64 {
        self.inner.index().used()
    }

    fn clear(&self) {
        let names: Vec<String> = match fs::read_dir(&self.inner.dir) {
            Ok(listing) => listing
                .flatten()
                .map(|i| i.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(ENTRY_SUFFIX))
                .collect(),
            Err(_) => Vec::new(),
        };
        for name in names {
            let _ = fs::remove_file(self.inner.path(&name));
        }
        self.inner.index().clear();
    }
}

struct DiskWriter {
    cache: Arc<Shared>,
    name: String,
    temp: PathBuf,
    /// `None` once committed or abandoned.
    file: Option<BufWriter<File>>,
    crc: crc32fast::Hasher,
    body_len: u64,
    /// Body bytes the entry bound still allows.
    budget: u64,
}

impl DiskWriter {
    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("the entry was abandoned"))?;
        if let Err(e) = file.write_all(data) {
            self.abandon();
            return Err(e);
        }
        self.crc.update(data);
        Ok(())
    }

    fn abandon(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

impl CacheWriter for DiskWriter {
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let n = chunk.len() as u64;
        if n > self.budget {
            self.abandon();
            return Err(io::Error::other(
                "the body is larger than the cache stores for one entry",
            ));
        }
        self.put(chunk)?;
        self.budget -= n;
        self.body_len += n;
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> io::Result<()> {
        let result = (|| -> io::Result<u64> {
            let mut file = self
                .file
                .take()
                .ok_or_else(|| io::Error::other("the entry was abandoned"))?;
            let crc = std::mem::take(&mut self.crc).finalize();
            file.write_all(&self.body_len.to_le_bytes())?;
            file.write_all(&crc.to_le_bytes())?;
            file.write_all(END_MAGIC)?;
            let file = file.into_inner().map_err(|e| e.into_error())?;
            // On disk before it gets its name: a crash never leaves a named
            // entry with unwritten bytes.
            file.sync_all()?;
            let len = file.metadata()?.len();
            drop(file);
            fs::rename(&self.temp, self.cache.path(&self.name))?;
            if let Ok(dir) = File::open(&self.cache.dir) {
                let _ = dir.sync_all();
            }
            Ok(len)
        })();
        match result {
            Ok(len) => {
                self.cache.indexed(&self.name, len);
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&self.temp);
                Err(e)
            }
        }
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        self.abandon();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, StatusCode, Version};

    /// A directory removed when dropped.
    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("rh-disk-cache-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn meta(url: &str) -> CacheMetadata {
        let mut headers = HeaderMap::new();
        headers.insert("etag", HeaderValue::from_static("\"v1\""));
        CacheMetadata {
            url: Url::parse(url).unwrap(),
            status: StatusCode::OK,
            reason: "OK".into(),
            version: Version::HTTP_11,
            headers,
            request_headers: HeaderMap::new(),
            response_time: SystemTime::now(),
        }
    }

    fn put(c: &DiskCache, url: &str, body: &[u8]) -> io::Result<()> {
        let mut w = c.prepare(meta(url)).ok_or(io::ErrorKind::Other)?;
        for piece in body.chunks(1000) {
            w.write(piece)?;
        }
        w.commit()
    }

    fn body(c: &DiskCache, url: &str) -> Option<Bytes> {
        let e = c.lookup(&Url::parse(url).unwrap())?;
        Some(e.body.into_bytes().unwrap())
    }

    fn temp_files(dir: &Path) -> usize {
        fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|i| i.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
            .count()
    }

    #[test]
    fn stores_and_reopens() {
        let d = TempDir::new("reopen");
        let c = DiskCache::open(&d.0, 1 << 20).unwrap();
        put(&c, "http://a.test/x", b"hello disk").unwrap();
        assert_eq!(body(&c, "http://a.test/x").unwrap(), "hello disk");
        drop(c);
        let c = DiskCache::open(&d.0, 1 << 20).unwrap();
        assert!(c.size() > 10);
        let e = c.lookup(&Url::parse("http://a.test/x").unwrap()).unwrap();
        assert_eq!(e.metadata.headers["etag"], "\"v1\"");
        assert_eq!(e.body.into_bytes().unwrap(), "hello disk");
        assert_eq!(temp_files(&d.0), 0);
    }

    #[test]
    fn large_bodies_stream_from_the_file() {
        let d = TempDir::new("large");
        let c = DiskCache::open(&d.0, 64 << 20).unwrap();
        let data: Vec<u8> = (0..(3 << 20)).map(|i| (i % 251) as u8).collect();
        put(&c, "http://a.test/big", &data).unwrap();
        let e = c.lookup(&Url::parse("http://a.test/big").unwrap()).unwrap();
        assert!(format!("{:?}", e.body).contains("reader"));
        assert_eq!(e.body.into_bytes().unwrap(), data);
    }

    #[test]
    fn damaged_entries_are_misses_and_removed() {
        let d = TempDir::new("damaged");
        let c = DiskCache::open(&d.0, 1 << 20).unwrap();
        let url = Url::parse("http://a.test/x").unwrap();
        let path = c.entry_path(&url);
        type Damage = fn(&mut Vec<u8>);
        let damage: [(&str, Damage); 6] = [
            ("flipped body byte", |f| {
                let i = f.len() - 20;
                f[i] ^= 1;
            }),
            ("truncated", |f| f.truncate(f.len() - 5)),
            ("cut to the header", |f| f.truncate(10)),
            ("unknown format", |f| f[8] = 9),
            ("bad magic", |f| f[0] = b'X'),
            ("length lies", |f| {
                let n = f.len();
                f[n - 16] ^= 0x40;
            }),
        ];
        for (what, hurt) in damage {
            put(&c, url.as_str(), b"the body of the entry").unwrap();
            let mut bytes = fs::read(&path).unwrap();
            hurt(&mut bytes);
            fs::write(&path, &bytes).unwrap();
            assert!(c.lookup(&url).is_none(), "{what}");
            assert!(!path.exists(), "{what}: the damaged file stays");
            assert_eq!(c.size(), 0, "{what}");
        }
    }

    #[test]
    fn abandoned_and_oversized_writes_leave_nothing() {
        let d = TempDir::new("abandon");
        let c = DiskCache::open(&d.0, 80_000).unwrap();
        assert_eq!(c.max_entry_bytes(), 10_000);
        assert!(put(&c, "http://a.test/big", &[0; 20_000]).is_err());
        let mut w = c.prepare(meta("http://a.test/half")).unwrap();
        w.write(b"half").unwrap();
        drop(w);
        assert_eq!(temp_files(&d.0), 0);
        assert!(body(&c, "http://a.test/big").is_none());
        assert!(body(&c, "http://a.test/half").is_none());
        assert_eq!(c.size(), 0);
    }

    #[test]
    fn evicts_least_recently_used_across_restarts() {
        let d = TempDir::new("evict");
        let c = DiskCache::open(&d.0, 5000)
            .unwrap()
            .with_max_entry_bytes(5000);
        put(&c, "http://a.test/1", &[1; 1200]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        put(&c, "http://a.test/2", &[2; 1200]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        put(&c, "http://a.test/3", &[3; 1200]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(body(&c, "http://a.test/1").is_some());
        drop(c);
        // A new process sees 1 as used after 3, so 2 goes first.
        let c = DiskCache::open(&d.0, 5000)
            .unwrap()
            .with_max_entry_bytes(5000);
        put(&c, "http://a.test/4", &[4; 1200]).unwrap();
        assert!(c.size() <= 5000, "{}", c.size());
        assert!(body(&c, "http://a.test/2").is_none());
        for kept in ["http://a.test/1", "http://a.test/3", "http://a.test/4"] {
            assert!(body(&c, kept).is_some(), "{kept}");
        }
    }

    #[test]
    fn metadata_updates_keep_the_body() {
        let d = TempDir::new("update");
        let c = DiskCache::open(&d.0, 1 << 20).unwrap();
        put(&c, "http://a.test/x", b"kept body").unwrap();
        let mut m = meta("http://a.test/x");
        m.headers.insert("x-new", HeaderValue::from_static("yes"));
        assert!(c.update_metadata(m));
        let e = c.lookup(&Url::parse("http://a.test/x").unwrap()).unwrap();
        assert_eq!(e.metadata.headers["x-new"], "yes");
        assert_eq!(e.body.into_bytes().unwrap(), "kept body");
        assert!(!c.update_metadata(meta("http://a.test/none")));
        c.clear();
        assert_eq!(c.size(), 0);
        assert!(body(&c, "http://a.test/x").is_none());
    }

    #[test]
    fn unusable_directory_is_an_io_error() {
        let d = TempDir::new("notdir");
        fs::create_dir_all(&d.0).unwrap();
        let file = d.0.join("plain-file");
        fs::write(&file, b"x").unwrap();
        let e = DiskCache::open(&file, 1000).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
    }
}
