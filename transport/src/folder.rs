//! Local directories: the embedded default and the demo.
//!
//! Reading (DOMAIN P8): a file is never taken while it may still be
//! written. [`Pickup::Stable`] takes a file only when two scans saw the same
//! size and modification time, and re-checks the size after reading;
//! [`Pickup::DoneMarker`] takes `x.hl7` only once `x.hl7.done` exists, the
//! convention of senders that write the marker last. Why not a minimum file
//! age alone: a large file copied slowly over a network share looks old
//! while it is still growing. A file is archived or deleted only when its
//! source is [settled](Source::settle), that is after the store committed.
//!
//! Writing: to a hidden temporary name in the target directory, `fsync`,
//! then rename, so a reader polling the directory never sees a partial
//! file; the name is derived from the message id, so delivering the same
//! message again after a crash replaces the file instead of adding one.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;

use crate::item::{BoxFuture, Delivery, Inbound, Item, Settle, Sink, Source};
use crate::{Error, ErrorKind};

/// When a file is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pickup {
    /// Same size and modification time on two consecutive scans.
    Stable,
    /// A marker file `<name><suffix>` (e.g. `.done`) exists.
    DoneMarker(String),
}

/// What happens to a file once it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStore {
    /// Moved into this directory (created if needed).
    Archive(PathBuf),
    /// Removed.
    Delete,
}

/// Settings of a [`FolderSource`].
#[derive(Debug, Clone)]
pub struct FolderOptions {
    connection: String,
    pattern: String,
    pickup: Pickup,
    after: Option<AfterStore>,
}

impl Default for FolderOptions {
    fn default() -> FolderOptions {
        FolderOptions { connection: "folder".into(), pattern: "*".into(), pickup: Pickup::Stable, after: None }
    }
}

impl FolderOptions {
    /// Defaults: every visible file, size/mtime stability, archive into
    /// `.archive/` under the directory.
    pub fn new() -> FolderOptions {
        FolderOptions::default()
    }

    /// The connection name items are tagged with.
    pub fn connection(&mut self, name: impl Into<String>) -> &mut Self {
        self.connection = name.into();
        self
    }

    /// A glob on file names (`*` and `?`), e.g. `*.hl7`.
    pub fn pattern(&mut self, glob: impl Into<String>) -> &mut Self {
        self.pattern = glob.into();
        self
    }

    /// When a file is complete.
    pub fn pickup(&mut self, p: Pickup) -> &mut Self {
        self.pickup = p;
        self
    }

    /// What to do with a file once stored.
    pub fn after_store(&mut self, a: AfterStore) -> &mut Self {
        self.after = Some(a);
        self
    }

    /// A copy of these settings.
    pub fn build(&self) -> FolderOptions {
        self.clone()
    }
}

/// `*` and `?` glob match on a file name.
///
/// # Examples
///
/// ```
/// use transport::folder::glob_match;
///
/// assert!(glob_match("*.hl7", "orders-1.hl7"));
/// assert!(glob_match("ORM_??.txt", "ORM_01.txt"));
/// assert!(!glob_match("*.hl7", "orders.hl7.tmp"));
/// ```
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A directory as a [`Source`].
///
/// [`recv`](Source::recv) hands out the files complete at the last scan and
/// scans again when none is left; `Ok(None)` means no complete file right
/// now. Call [`scan`](FolderSource::scan) on your own schedule to see files
/// become stable.
///
/// # Examples
///
/// ```
/// use transport::folder::{FolderOptions, FolderSource};
/// use transport::{Settle, Source};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("a.hl7"), "MSH|^~\\&|A\r").unwrap();
/// let mut src = FolderSource::new(dir.path(), FolderOptions::default());
/// assert_eq!(src.scan()?, 0);                     // seen once: maybe still being written
/// assert_eq!(src.scan()?, 1);                     // unchanged: complete
/// let inbound = src.recv().await?.unwrap();
/// assert_eq!(inbound.item.meta.name.as_deref(), Some("a.hl7"));
/// src.settle(inbound.receipt, Settle::Stored).await?; // now archived
/// assert!(dir.path().join(".archive/a.hl7").exists());
/// # Ok::<(), transport::Error>(()) }).unwrap();
/// ```
#[derive(Debug)]
pub struct FolderSource {
    dir: PathBuf,
    opts: FolderOptions,
    seen: HashMap<PathBuf, (u64, Option<SystemTime>)>,
    ready: VecDeque<(PathBuf, u64)>,
    handed_out: HashMap<u64, PathBuf>,
    next_receipt: u64,
}

fn meta_of(path: &Path) -> std::io::Result<(u64, Option<SystemTime>)> {
    let m = fs::metadata(path)?;
    Ok((m.len(), m.modified().ok()))
}

impl FolderSource {
    /// A source over `dir`.
    pub fn new(dir: impl Into<PathBuf>, opts: FolderOptions) -> FolderSource {
        FolderSource {
            dir: dir.into(),
            opts,
            seen: HashMap::new(),
            ready: VecDeque::new(),
            handed_out: HashMap::new(),
            next_receipt: 0,
        }
    }

    /// Files seen but not yet complete (still changing, or without marker).
    pub fn waiting(&self) -> usize {
        self.seen.len()
    }

    fn peer(&self) -> String {
        self.dir.display().to_string()
    }

    /// Looks at the directory once; returns how many files became complete.
    ///
    /// # Errors
    ///
    /// When the directory cannot be read.
    pub fn scan(&mut self) -> Result<usize, Error> {
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io(e, "read directory").with_peer(self.peer()))?;
        let mut present = Vec::new();
        let mut became = 0;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(e, "read directory").with_peer(self.peer()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                continue;
            }
            if let Pickup::DoneMarker(suffix) = &self.opts.pickup {
                if name.ends_with(suffix.as_str()) {
                    continue;
                }
            }
            if !glob_match(&self.opts.pattern, &name) {
                continue;
            }
            let path = entry.path();
            if self.handed_out.values().any(|p| *p == path) || self.ready.iter().any(|(p, _)| *p == path) {
                continue;
            }
            present.push(path.clone());
            let Ok(now) = meta_of(&path) else { continue };
            let complete = match &self.opts.pickup {
                Pickup::Stable => self.seen.get(&path) == Some(&now),
                Pickup::DoneMarker(suffix) => self.dir.join(format!("{name}{suffix}")).exists(),
            };
            if complete {
                self.seen.remove(&path);
                self.ready.push_back((path, now.0));
                became += 1;
            } else {
                self.seen.insert(path, now);
            }
        }
        self.seen.retain(|p, _| present.contains(p));
        Ok(became)
    }

    fn finish(&self, path: &Path) -> Result<(), Error> {
        let peer = self.peer();
        if let Pickup::DoneMarker(suffix) = &self.opts.pickup {
            let mut marker = path.as_os_str().to_owned();
            marker.push(suffix);
            let _ = fs::remove_file(PathBuf::from(marker));
        }
        match self.opts.after.clone().unwrap_or_else(|| AfterStore::Archive(self.dir.join(".archive"))) {
            AfterStore::Delete => fs::remove_file(path).map_err(|e| Error::io(e, "delete").with_peer(peer)),
            AfterStore::Archive(dir) => {
                fs::create_dir_all(&dir).map_err(|e| Error::io(e, "create archive").with_peer(peer.clone()))?;
                let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                let mut target = dir.join(&name);
                let mut n = 1;
                while target.exists() {
                    target = dir.join(format!("{name}.{n}"));
                    n += 1;
                }
                fs::rename(path, &target).map_err(|e| Error::io(e, "archive").with_peer(peer))
            }
        }
    }
}

impl Source for FolderSource {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Inbound>, Error>> {
        Box::pin(async move {
            loop {
                if self.ready.is_empty() {
                    self.scan()?;
                }
                let Some((path, size)) = self.ready.pop_front() else { return Ok(None) };
                let bytes = match fs::read(&path) {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(e, "read").with_peer(self.peer())),
                };
                if bytes.len() as u64 != size {
                    // Changed after it looked complete: wait for it to settle.
                    tracing::info!(dir = %self.peer(), "file changed while being read; taking it later");
                    continue;
                }
                let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                let receipt = self.next_receipt;
                self.next_receipt += 1;
                self.handed_out.insert(receipt, path);
                let mut item = Item::new(format!("file:{name}"), Bytes::from(bytes))
                    .with_name(name)
                    .with_connection(self.opts.connection.clone());
                item.meta.peer = Some(self.peer());
                return Ok(Some(Inbound { item, framing_error: None, receipt }));
            }
        })
    }

    fn settle(&mut self, receipt: u64, outcome: Settle) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let path = self
                .handed_out
                .remove(&receipt)
                .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no pending file {receipt}")))?;
            match outcome {
                Settle::Failed { .. } => Ok(()), // left in place: taken again on a later scan
                _ => self.finish(&path),
            }
        })
    }
}

/// A directory as a [`Sink`]: each item becomes one file, written to a
/// temporary name and renamed.
///
/// # Examples
///
/// ```
/// use transport::folder::FolderSink;
/// use transport::{Item, Sink};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let sink = FolderSink::new(dir.path());
/// sink.deliver(&Item::new("17", "MSH|^~\\&|A\r")).await?;
/// sink.deliver(&Item::new("17", "MSH|^~\\&|A\r")).await?; // again after a crash: same file
/// assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
/// assert!(dir.path().join("17.hl7").exists());
/// # Ok::<(), transport::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct FolderSink {
    dir: PathBuf,
    prefix: String,
    suffix: String,
}

impl FolderSink {
    /// Writes `<id>.hl7` files into `dir` (created if needed).
    pub fn new(dir: impl Into<PathBuf>) -> FolderSink {
        FolderSink { dir: dir.into(), prefix: String::new(), suffix: ".hl7".into() }
    }

    /// File names are `<prefix><id><suffix>`.
    pub fn naming(mut self, prefix: impl Into<String>, suffix: impl Into<String>) -> FolderSink {
        self.prefix = prefix.into();
        self.suffix = suffix.into();
        self
    }

    /// The file name an item is written as.
    pub fn file_name(&self, item: &Item) -> String {
        let id: String =
            item.id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        format!("{}{id}{}", self.prefix, self.suffix)
    }

    fn write(&self, item: &Item) -> Result<PathBuf, Error> {
        let peer = self.dir.display().to_string();
        let io = |what: &'static str| {
            let peer = peer.clone();
            move |e| Error::io(e, what).with_peer(peer)
        };
        fs::create_dir_all(&self.dir).map_err(io("create directory"))?;
        let name = self.file_name(item);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let target = self.dir.join(&name);
        let mut f = fs::File::create(&tmp).map_err(io("create"))?;
        f.write_all(&item.bytes).map_err(io("write"))?;
        f.sync_all().map_err(io("sync"))?;
        drop(f);
        fs::rename(&tmp, &target).map_err(io("rename"))?;
        // The rename is durable only once the directory is synced.
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(target)
    }
}

impl Sink for FolderSink {
    fn deliver<'a>(&'a self, item: &'a Item) -> BoxFuture<'a, Result<Delivery, Error>> {
        Box::pin(async move {
            self.write(item)?;
            Ok(Delivery::default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_growing_file_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.hl7");
        fs::write(&path, "MSH|^~\\&|A\r").unwrap();
        let mut src = FolderSource::new(dir.path(), FolderOptions::default());
        assert_eq!(src.scan().unwrap(), 0);
        fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"PID|1\r").unwrap();
        assert_eq!(src.scan().unwrap(), 0, "size changed between scans");
        assert_eq!(src.waiting(), 1);
        assert_eq!(src.scan().unwrap(), 1);
        let got = src.recv().await.unwrap().unwrap();
        assert_eq!(&got.item.bytes[..], b"MSH|^~\\&|A\rPID|1\r");
    }

    #[tokio::test]
    async fn done_marker_pickup_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("o.hl7"), "MSH|^~\\&|A\r").unwrap();
        fs::write(dir.path().join("skip.txt"), "x").unwrap();
        let opts = FolderOptions::new()
            .pattern("*.hl7")
            .pickup(Pickup::DoneMarker(".done".into()))
            .after_store(AfterStore::Delete)
            .build();
        let mut src = FolderSource::new(dir.path(), opts);
        assert!(src.recv().await.unwrap().is_none(), "no marker yet");
        fs::write(dir.path().join("o.hl7.done"), "").unwrap();
        let got = src.recv().await.unwrap().unwrap();
        assert!(src.recv().await.unwrap().is_none(), "handed out once");
        assert!(dir.path().join("o.hl7").exists(), "kept until settled");
        src.settle(got.receipt, Settle::Stored).await.unwrap();
        assert!(!dir.path().join("o.hl7").exists());
        assert!(!dir.path().join("o.hl7.done").exists());
        assert!(dir.path().join("skip.txt").exists());
    }

    #[tokio::test]
    async fn failed_settle_leaves_the_file_for_later() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.hl7"), "MSH|^~\\&|A\r").unwrap();
        let mut src = FolderSource::new(dir.path(), FolderOptions::default());
        src.scan().unwrap();
        let got = src.recv().await.unwrap().unwrap();
        src.settle(got.receipt, Settle::Failed { reason: "store down".into() }).await.unwrap();
        assert!(dir.path().join("a.hl7").exists());
        src.scan().unwrap();
        assert!(src.recv().await.unwrap().is_some(), "taken again");
    }

    #[tokio::test]
    async fn sink_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FolderSink::new(dir.path().join("out")).naming("ORU_", ".txt");
        sink.deliver(&Item::new("a/b", "MSH|^~\\&|A\r")).await.unwrap();
        let names: Vec<String> = fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["ORU_a_b.txt"]);
    }
}
