//! SFTP over SSH (`russh` + `russh-sftp`, no shelling out): an inbox
//! polled as a [`Source`] and an outbox written as a [`Sink`].
//!
//! Trust: the server's host key must be in the configured known-hosts
//! file. An unknown key or a changed one is a refusal naming the host and
//! the key's fingerprint, never a silent accept and never "trust on first
//! use"; the error is [`ErrorKind::Hold`] because no message is at fault and
//! only an operator can decide. Authentication is by key only.
//!
//! Reading (DOMAIN P8): a file is taken only when it is complete — its size
//! and modification time unchanged across two polls ([`Pickup::Stable`]),
//! or its `.done` marker present ([`Pickup::DoneMarker`]) — and its size is
//! checked again after the download. It is archived or deleted on the
//! server only when [settled](Source::settle), that is after the store
//! committed. A transfer that breaks leaves the file in place for the next
//! poll; a settle that breaks (the file is stored but still on the server)
//! makes the next poll download it again, and de-duplication records the
//! second copy instead of queueing it.
//!
//! Writing: to a hidden temporary name (`.<name>.tmp`) in the target
//! directory, then rename, so the EMR polling that directory never sees a
//! partial file; the name comes from the message id, so a delivery repeated
//! after a crash replaces the same file instead of adding one.
//!
//! Connections are opened on first use and kept; any failure drops the
//! connection so that the next call starts afresh.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::Bytes;
use russh::keys::{check_known_hosts_path, load_secret_key, HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::folder::glob_match;
pub use crate::folder::Pickup;
use crate::item::{BoxFuture, Delivery, Inbound, Item, Settle, Sink, Source};
use crate::{Error, ErrorKind};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct SftpConfig {
    /// Host name or address.
    pub host: String,
    /// Port (22 by default).
    pub port: u16,
    /// User to log in as.
    pub user: String,
    /// The private key (OpenSSH or PEM format, unencrypted).
    pub identity: PathBuf,
    /// The known-hosts file the server's key must be in.
    pub known_hosts: PathBuf,
    /// How long to wait for the connection, key exchange and login.
    pub connect_timeout: Duration,
    /// How long to wait for the answer to one SFTP request.
    pub timeout: Duration,
}

impl SftpConfig {
    /// Settings for `user@host:port` with 10 s / 30 s timeouts.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        identity: impl Into<PathBuf>,
        known_hosts: impl Into<PathBuf>,
    ) -> SftpConfig {
        SftpConfig {
            host: host.into(),
            port,
            user: user.into(),
            identity: identity.into(),
            known_hosts: known_hosts.into(),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
        }
    }

    /// `user@host:port`, as errors name the peer.
    pub fn peer(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// Checks the server's key against the known-hosts file and remembers why
/// it refused, for an error that says more than "unknown key".
struct Verifier {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    refusal: Arc<StdMutex<Option<String>>>,
}

impl russh::client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) =
                Some("host certificates are not supported; refused".into());
            return Ok(false);
        };
        let file = self.known_hosts.display();
        let shown = format!("{} {}", key.algorithm(), key.fingerprint(HashAlg::Sha256));
        let why = match check_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
            Ok(true) => return Ok(true),
            Ok(false) => format!("host key {shown} is not in {file}; refused"),
            Err(russh::keys::Error::KeyChanged { line }) => {
                format!("HOST KEY CHANGED: {shown} differs from {file} line {line}; refused")
            }
            Err(e) => format!("cannot check the host key against {file}: {e}; refused"),
        };
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        Ok(false)
    }
}

struct Conn {
    ssh: russh::client::Handle<Verifier>,
    sftp: SftpSession,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

impl Conn {
    async fn open(cfg: &SftpConfig) -> Result<Conn, Error> {
        let refusal = Arc::new(StdMutex::new(None));
        let verifier = Verifier {
            host: cfg.host.clone(),
            port: cfg.port,
            known_hosts: cfg.known_hosts.clone(),
            refusal: refusal.clone(),
        };
        // A key that cannot be loaded is no message's fault: hold the queue.
        let key = load_secret_key(&cfg.identity, None).map_err(|e| {
            Error::new(ErrorKind::Hold, format!("cannot load the key {}: {e}", cfg.identity.display()))
                .with_peer(cfg.peer())
        })?;
        let config = Arc::new(russh::client::Config {
            inactivity_timeout: Some(cfg.timeout.max(Duration::from_secs(1)) * 4),
            nodelay: true,
            ..russh::client::Config::default()
        });
        let login = async {
            let mut ssh = match russh::client::connect(config, (cfg.host.as_str(), cfg.port), verifier).await {
                Ok(s) => s,
                Err(e) => {
                    if let Some(why) = refusal.lock().unwrap_or_else(|p| p.into_inner()).take() {
                        return Err(Error::new(ErrorKind::Hold, why));
                    }
                    return Err(ssh_error(e, "connect"));
                }
            };
            let hash = ssh.best_supported_rsa_hash().await.map_err(|e| ssh_error(e, "login"))?.flatten();
            let auth = ssh
                .authenticate_publickey(cfg.user.clone(), PrivateKeyWithHashAlg::new(Arc::new(key), hash))
                .await
                .map_err(|e| ssh_error(e, "login"))?;
            if !auth.success() {
                return Err(Error::new(
                    ErrorKind::Hold,
                    format!("public key authentication failed for user {}", cfg.user),
                ));
            }
            let channel = ssh.channel_open_session().await.map_err(|e| ssh_error(e, "open a channel"))?;
            channel.request_subsystem(true, "sftp").await.map_err(|e| ssh_error(e, "start sftp"))?;
            let sftp = SftpSession::new(channel.into_stream()).await.map_err(|e| sftp_error(e, "start sftp"))?;
            sftp.set_timeout(cfg.timeout.as_secs().max(1));
            Ok(Conn { ssh, sftp })
        };
        match tokio::time::timeout(cfg.connect_timeout, login).await {
            Ok(r) => r.map_err(|e| e.with_peer(cfg.peer())),
            Err(_) => Err(Error::new(ErrorKind::Timeout, "connect timed out").with_peer(cfg.peer())),
        }
    }

    async fn close(self) {
        let _ = self.sftp.close().await;
        let _ = self.ssh.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    }
}

fn ssh_error(e: russh::Error, what: &str) -> Error {
    let kind = match &e {
        russh::Error::IO(io) => return Error::io(std::io::Error::new(io.kind(), io.to_string()), what),
        russh::Error::ConnectionTimeout | russh::Error::InactivityTimeout => ErrorKind::Timeout,
        russh::Error::Disconnect | russh::Error::HUP | russh::Error::SendError => ErrorKind::Closed,
        _ => ErrorKind::Protocol,
    };
    Error::new(kind, format!("{what}: {e}"))
}

fn sftp_error(e: russh_sftp::client::error::Error, what: &str) -> Error {
    use russh_sftp::client::error::Error as E;
    use russh_sftp::protocol::StatusCode;
    let kind = match &e {
        E::Timeout => ErrorKind::Timeout,
        E::IO(_) => ErrorKind::Closed,
        E::Status(s) if s.status_code == StatusCode::NoSuchFile => ErrorKind::NotFound,
        E::Status(s) if matches!(s.status_code, StatusCode::ConnectionLost | StatusCode::NoConnection) => {
            ErrorKind::Closed
        }
        E::Status(_) => ErrorKind::Io,
        _ => ErrorKind::Protocol,
    };
    Error::new(kind, format!("{what}: {e}"))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// What happens on the server to a file once it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteAfter {
    /// Renamed into this remote directory (created if needed).
    Archive(String),
    /// Removed.
    Delete,
}

/// Settings of an [`SftpSource`].
#[derive(Debug, Clone)]
pub struct InboxOptions {
    connection: String,
    pattern: String,
    pickup: Pickup,
    after: Option<RemoteAfter>,
}

impl Default for InboxOptions {
    fn default() -> InboxOptions {
        InboxOptions { connection: "sftp".into(), pattern: "*".into(), pickup: Pickup::Stable, after: None }
    }
}

impl InboxOptions {
    /// Defaults: every visible file, size/mtime stability, archive into
    /// `.archive/` under the inbox.
    pub fn new() -> InboxOptions {
        InboxOptions::default()
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
    pub fn after_store(&mut self, a: RemoteAfter) -> &mut Self {
        self.after = Some(a);
        self
    }

    /// A copy of these settings.
    pub fn build(&self) -> InboxOptions {
        self.clone()
    }
}

/// A remote directory polled as a [`Source`].
///
/// [`recv`](Source::recv) hands out the files complete at the last
/// [`scan`](SftpSource::scan) and scans again when none is left; `Ok(None)`
/// means no complete file right now.
///
/// # Examples
///
/// ```no_run
/// use transport::sftp::{InboxOptions, SftpConfig, SftpSource};
/// use transport::pipeline::Intake;
/// # async fn f(intake: Intake) -> Result<(), transport::Error> {
/// let cfg = SftpConfig::new("emr.example", 22, "lab", "/etc/labbridge/id_ed25519", "/etc/labbridge/known_hosts");
/// let mut inbox = SftpSource::new(cfg, "/outbound/orders", InboxOptions::new().pattern("*.hl7").build());
/// inbox.scan().await?; // seen once: maybe still being written
/// inbox.scan().await?; // unchanged: complete
/// intake.drain(&mut inbox).await?; // downloaded, stored, then archived on the server
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SftpSource {
    cfg: SftpConfig,
    dir: String,
    opts: InboxOptions,
    conn: Option<Conn>,
    seen: HashMap<String, (u64, Option<u32>)>,
    ready: VecDeque<(String, u64)>,
    handed_out: HashMap<u64, String>,
    next_receipt: u64,
}

impl SftpSource {
    /// A source over the remote directory `dir`.
    pub fn new(cfg: SftpConfig, dir: impl Into<String>, opts: InboxOptions) -> SftpSource {
        SftpSource {
            cfg,
            dir: dir.into(),
            opts,
            conn: None,
            seen: HashMap::new(),
            ready: VecDeque::new(),
            handed_out: HashMap::new(),
            next_receipt: 0,
        }
    }

    /// Files seen but not yet complete.
    pub fn waiting(&self) -> usize {
        self.seen.len()
    }

    fn peer(&self) -> String {
        format!("{}{}", self.cfg.peer(), if self.dir.starts_with('/') { "" } else { "/" }) + &self.dir
    }

    async fn conn(&mut self) -> Result<&SftpSession, Error> {
        if self.conn.is_none() {
            self.conn = Some(Conn::open(&self.cfg).await?);
        }
        Ok(&self.conn.as_ref().expect("connected above").sftp)
    }

    /// Drops the connection after a failure; the next call reconnects.
    async fn failed(&mut self, e: Error) -> Error {
        if let Some(c) = self.conn.take() {
            // Do not wait on a peer that may be gone.
            let _ = tokio::time::timeout(Duration::from_secs(1), c.close()).await;
        }
        if e.peer().is_some() {
            e
        } else {
            e.with_peer(self.peer())
        }
    }

    /// Lists the inbox once; returns how many files became complete.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or the directory listed.
    pub async fn scan(&mut self) -> Result<usize, Error> {
        match self.scan_once().await {
            Ok(n) => Ok(n),
            Err(e) => Err(self.failed(e).await),
        }
    }

    async fn scan_once(&mut self) -> Result<usize, Error> {
        let dir = self.dir.clone();
        let entries = self.conn().await?.read_dir(dir.clone()).await.map_err(|e| sftp_error(e, "list"))?;
        let mut names = HashMap::new();
        let mut markers = Vec::new();
        for entry in entries {
            let name = entry.file_name();
            let meta = entry.metadata();
            if name.starts_with('.') || !meta.is_regular() {
                continue;
            }
            if let Pickup::DoneMarker(suffix) = &self.opts.pickup {
                if name.ends_with(suffix.as_str()) {
                    markers.push(name);
                    continue;
                }
            }
            if glob_match(&self.opts.pattern, &name) {
                names.insert(name, (meta.size.unwrap_or(0), meta.mtime));
            }
        }
        let mut became = 0;
        let mut present = Vec::new();
        let mut sorted: Vec<_> = names.into_iter().collect();
        sorted.sort();
        for (name, now) in sorted {
            if self.handed_out.values().any(|n| *n == name) || self.ready.iter().any(|(n, _)| *n == name) {
                continue;
            }
            present.push(name.clone());
            let complete = match &self.opts.pickup {
                Pickup::Stable => self.seen.get(&name) == Some(&now),
                Pickup::DoneMarker(suffix) => markers.contains(&format!("{name}{suffix}")),
            };
            if complete {
                self.seen.remove(&name);
                self.ready.push_back((name, now.0));
                became += 1;
            } else {
                self.seen.insert(name, now);
            }
        }
        self.seen.retain(|n, _| present.contains(n));
        Ok(became)
    }

    async fn download(&mut self, name: &str) -> Result<Vec<u8>, Error> {
        let path = join(&self.dir, name);
        let sftp = self.conn().await?;
        let mut file = sftp.open(path).await.map_err(|e| sftp_error(e, "open"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).await.map_err(|e| Error::io(e, "download"))?;
        let _ = file.shutdown().await;
        Ok(bytes)
    }

    async fn finish(&mut self, name: &str) -> Result<(), Error> {
        let path = join(&self.dir, name);
        let after = self.opts.after.clone().unwrap_or_else(|| RemoteAfter::Archive(join(&self.dir, ".archive")));
        let marker = match &self.opts.pickup {
            Pickup::DoneMarker(suffix) => Some(format!("{path}{suffix}")),
            _ => None,
        };
        let sftp = self.conn().await?;
        match after {
            RemoteAfter::Delete => sftp.remove_file(path).await.map_err(|e| sftp_error(e, "delete"))?,
            RemoteAfter::Archive(dir) => {
                if !sftp.try_exists(dir.clone()).await.map_err(|e| sftp_error(e, "archive"))? {
                    sftp.create_dir(dir.clone()).await.map_err(|e| sftp_error(e, "create archive"))?;
                }
                let mut target = join(&dir, name);
                let mut n = 1;
                while sftp.try_exists(target.clone()).await.map_err(|e| sftp_error(e, "archive"))? {
                    target = join(&dir, &format!("{name}.{n}"));
                    n += 1;
                }
                sftp.rename(path, target).await.map_err(|e| sftp_error(e, "archive"))?;
            }
        }
        if let Some(m) = marker {
            let _ = sftp.remove_file(m).await;
        }
        Ok(())
    }
}

impl Source for SftpSource {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Inbound>, Error>> {
        Box::pin(async move {
            loop {
                if self.ready.is_empty() {
                    self.scan().await?;
                }
                let Some((name, size)) = self.ready.pop_front() else { return Ok(None) };
                let bytes = match self.download(&name).await {
                    Ok(b) => b,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => {
                        // Still complete: taken first on the next call.
                        self.ready.push_front((name, size));
                        return Err(self.failed(e).await);
                    }
                };
                if bytes.len() as u64 != size {
                    tracing::info!(peer = %self.peer(), "file changed while being downloaded; taking it later");
                    continue;
                }
                let receipt = self.next_receipt;
                self.next_receipt += 1;
                self.handed_out.insert(receipt, name.clone());
                let mut item = Item::new(format!("sftp:{name}"), Bytes::from(bytes))
                    .with_name(name)
                    .with_connection(self.opts.connection.clone());
                item.meta.peer = Some(self.peer());
                return Ok(Some(Inbound { item, framing_error: None, receipt }));
            }
        })
    }

    fn settle(&mut self, receipt: u64, outcome: Settle) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let name = self
                .handed_out
                .remove(&receipt)
                .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no pending file {receipt}")))?;
            match outcome {
                Settle::Failed { .. } => Ok(()), // left on the server: taken again later
                _ => match self.finish(&name).await {
                    Ok(()) => Ok(()),
                    // Stored but still on the server: the next poll downloads
                    // it again and de-duplication records the copy.
                    Err(e) => Err(self.failed(e).await),
                },
            }
        })
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            if let Some(c) = self.conn.take() {
                c.close().await;
            }
            Ok(())
        })
    }
}

/// A remote directory as a [`Sink`]: each item becomes one file, uploaded
/// to a temporary name and renamed.
///
/// # Examples
///
/// ```no_run
/// use transport::sftp::{SftpConfig, SftpSink};
/// use transport::{Item, Sink};
/// # async fn f() -> Result<(), transport::Error> {
/// let cfg = SftpConfig::new("emr.example", 22, "lab", "/etc/labbridge/id_ed25519", "/etc/labbridge/known_hosts");
/// let sink = SftpSink::new(cfg, "/inbound/results").naming("ORU_", ".hl7");
/// sink.deliver(&Item::new("17", "MSH|^~\\&|LIS|LAB\r")).await?; // /inbound/results/ORU_17.hl7
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SftpSink {
    cfg: SftpConfig,
    dir: String,
    prefix: String,
    suffix: String,
    conn: Mutex<Option<Conn>>,
}

impl SftpSink {
    /// Writes `<id>.hl7` files into the remote directory `dir`.
    pub fn new(cfg: SftpConfig, dir: impl Into<String>) -> SftpSink {
        SftpSink { cfg, dir: dir.into(), prefix: String::new(), suffix: ".hl7".into(), conn: Mutex::new(None) }
    }

    /// File names are `<prefix><id><suffix>`.
    pub fn naming(mut self, prefix: impl Into<String>, suffix: impl Into<String>) -> SftpSink {
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

    async fn upload(&self, sftp: &SftpSession, item: &Item) -> Result<(), Error> {
        let name = self.file_name(item);
        let tmp = join(&self.dir, &format!(".{name}.tmp"));
        let target = join(&self.dir, &name);
        let mut file = sftp.create(tmp.clone()).await.map_err(|e| sftp_error(e, "create"))?;
        file.write_all(&item.bytes).await.map_err(|e| Error::io(e, "upload"))?;
        file.flush().await.map_err(|e| Error::io(e, "upload"))?;
        // fsync@openssh.com where the server has it; not every server does.
        let _ = file.sync_all().await;
        file.shutdown().await.map_err(|e| Error::io(e, "upload"))?;
        // SFTP v3 rename does not replace: a repeated delivery (the same
        // message after a crash) replaces the earlier copy explicitly.
        if sftp.rename(tmp.clone(), target.clone()).await.is_err() {
            if sftp.try_exists(target.clone()).await.map_err(|e| sftp_error(e, "rename"))? {
                sftp.remove_file(target.clone()).await.map_err(|e| sftp_error(e, "replace"))?;
            }
            sftp.rename(tmp, target).await.map_err(|e| sftp_error(e, "rename"))?;
        }
        Ok(())
    }
}

impl Sink for SftpSink {
    fn deliver<'a>(&'a self, item: &'a Item) -> BoxFuture<'a, Result<Delivery, Error>> {
        Box::pin(async move {
            let mut guard = self.conn.lock().await;
            if guard.is_none() {
                *guard = Some(Conn::open(&self.cfg).await?);
            }
            let result = self.upload(&guard.as_ref().expect("connected above").sftp, item).await;
            match result {
                Ok(()) => Ok(Delivery::default()),
                Err(e) => {
                    if let Some(c) = guard.take() {
                        let _ = tokio::time::timeout(Duration::from_secs(1), c.close()).await;
                    }
                    let peer =
                        format!("{}{}", self.cfg.peer(), if self.dir.starts_with('/') { "" } else { "/" }) + &self.dir;
                    Err(e.with_peer(peer))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names() {
        assert_eq!(join("/in", "a.hl7"), "/in/a.hl7");
        assert_eq!(join("/in/", "a.hl7"), "/in/a.hl7");
        assert_eq!(join("", "a.hl7"), "a.hl7");
        let cfg = SftpConfig::new("h", 2222, "u", "/k", "/kh");
        assert_eq!(cfg.peer(), "u@h:2222");
        let sink = SftpSink::new(cfg, "/out").naming("ORU_", ".txt");
        assert_eq!(sink.file_name(&Item::new("a/b", "")), "ORU_a_b.txt");
    }

    #[tokio::test]
    async fn a_missing_key_holds_the_queue() {
        let cfg = SftpConfig::new("127.0.0.1", 1, "u", "/nonexistent/key", "/nonexistent/known_hosts");
        let e = SftpSink::new(cfg, "/out").deliver(&Item::new("1", "x")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Hold);
        assert!(e.to_string().starts_with("u@127.0.0.1:1: cannot load the key /nonexistent/key: "), "{e}");
    }
}
