//! SFTP against a real OpenSSH `sshd`, started by each test on a free
//! 127.0.0.1 port with its own host key and user key, and stopped at the
//! end (`../shared/TOOLCHAIN.md` §4). Faults are injected with a TCP proxy
//! that cuts the connection mid-transfer, and by killing and restarting
//! the sshd. `/usr/sbin/sshd` missing is a failure, never a skip:
//! `scripts/setup.sh` installs it.

use std::net::TcpStream as StdTcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use transport::audit::{AuditQuery, EventKind};
use transport::layers::{Backoff, Retry, RetryPolicy};
use transport::pipeline::{Forwarder, Intake};
use transport::sftp::{InboxOptions, Pickup, RemoteAfter, SftpConfig, SftpSink, SftpSource};
use transport::store::{Batch, Entry, NewMessage, SqliteStore, Store, StoreConfig};
use transport::{ErrorKind, Item, Settle, Sink, Source};

const SSHD: &str = "/usr/sbin/sshd";

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn keygen(path: &Path) {
    run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(path));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A throw-away sshd serving this machine's file system over SFTP.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    child: Option<Child>,
}

impl Sshd {
    fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: the SFTP tests need OpenSSH's server; run scripts/setup.sh \
             (apt-get install openssh-server)"
        );
        std::fs::create_dir_all("/run/sshd").ok(); // its privilege-separation directory
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_ed25519"));
        keygen(&d.join("client_ed25519"));
        std::fs::copy(d.join("client_ed25519.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        let host_pub = std::fs::read_to_string(d.join("host_ed25519.pub")).unwrap();
        let host_key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        std::fs::write(d.join("known_hosts"), format!("[127.0.0.1]:{port} {}\n", host_key.join(" "))).unwrap();
        let out = Command::new("id").arg("-un").output().unwrap();
        let user = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nAllowUsers {user}\nPubkeyAuthentication yes\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\n",
                d = d.display()
            ),
        )
        .unwrap();
        run(Command::new(SSHD).arg("-t").arg("-f").arg(d.join("sshd_config")));
        let mut sshd = Sshd { dir, port, user, child: None };
        sshd.spawn();
        sshd
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        let d = self.path().to_owned();
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Waiting for an external process to listen: a readiness poll, not timing logic.
        for _ in 0..200 {
            if StdTcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("sshd did not listen on {}: {}", self.port, std::fs::read_to_string(d.join("sshd.log")).unwrap());
    }

    /// Kills the sshd and every connection process it forked, by pid.
    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let mut pids = vec![child.id()];
        let mut i = 0;
        while i < pids.len() {
            pids.extend(children_of(pids[i]));
            i += 1;
        }
        for pid in pids.iter().rev() {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).stderr(Stdio::null()).status();
        }
        let _ = child.wait();
    }

    fn config(&self, port: u16) -> SftpConfig {
        let d = self.path();
        let mut cfg = SftpConfig::new("127.0.0.1", port, &self.user, d.join("client_ed25519"), d.join("known_hosts"));
        cfg.timeout = Duration::from_secs(10);
        cfg
    }

    /// A directory on the served file system, as a path for SFTP.
    fn share(&self, name: &str) -> (PathBuf, String) {
        let p = self.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        let s = p.display().to_string();
        (p, s)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid …; comm may contain spaces, so split after ')'
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            if let Ok(p) = entry.file_name().to_string_lossy().parse() {
                out.push(p);
            }
        }
    }
    out
}

/// A TCP proxy to `target` that cuts the first connection through which
/// more than `budget` bytes flow in one direction (`down`: server to
/// client), then passes everything.
async fn cutting_proxy(target: u16, budget: i64, down: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let left = Arc::new(AtomicI64::new(budget));
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else { continue };
            let left = left.clone();
            tokio::spawn(async move {
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let (up, dn) = if down { (None, Some(left)) } else { (Some(left), None) };
                tokio::select! {
                    _ = pipe(cr, sw, up) => {}
                    _ = pipe(sr, cw, dn) => {}
                }
            });
        }
    });
    port
}

async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    budget: Option<Arc<AtomicI64>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(b) = &budget {
            let before = b.fetch_sub(n as i64, Ordering::SeqCst);
            if before > 0 && before - n as i64 <= 0 {
                b.store(i64::MAX / 2, Ordering::SeqCst); // cut once
                return;
            }
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn msg(id: &str, obx_len: usize) -> String {
    format!(
        "MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|{id}|P|2.3\rPID|1||MRN-{id}\rORC|NW|P-{id}\rNTE|1||{}\r",
        "x".repeat(obx_len)
    )
}

fn store() -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(":memory:", StoreConfig::default()).unwrap())
}

fn queued_ids(store: &Arc<dyn Store>, queue: &str) -> Vec<String> {
    let mut ids: Vec<String> =
        store.pending(queue, 1000).unwrap().into_iter().map(|q| q.item.meta.control_id.unwrap()).collect();
    ids.sort();
    ids
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn upload_then_poll_store_and_archive() {
    let sshd = Sshd::start();
    let (local, remote) = sshd.share("exchange");
    let sink = SftpSink::new(sshd.config(sshd.port), &remote).naming("ORM_", ".hl7");
    sink.deliver(&Item::new("1", msg("U1", 10))).await.unwrap();
    sink.deliver(&Item::new("2", msg("U2", 10))).await.unwrap();
    sink.deliver(&Item::new("2", msg("U2", 10))).await.unwrap(); // again after a crash: replaced, not added
    assert_eq!(names(&local), ["ORM_1.hl7", "ORM_2.hl7"], "no temporary file left behind");
    assert_eq!(std::fs::read_to_string(local.join("ORM_1.hl7")).unwrap(), msg("U1", 10));

    let store = store();
    let mut inbox = SftpSource::new(sshd.config(sshd.port), &remote, InboxOptions::new().pattern("*.hl7").build());
    assert_eq!(inbox.scan().await.unwrap(), 0, "seen once: maybe still being written");
    assert_eq!(inbox.scan().await.unwrap(), 2);
    let report = Intake::new(store.clone(), "emr-sftp", "lis").drain(&mut inbox).await.unwrap();
    assert_eq!(report.stored.queued.len(), 2);
    assert_eq!(queued_ids(&store, "lis"), ["U1", "U2"]);
    assert_eq!(names(&local), [".archive"], "archived only after the store committed");
    assert_eq!(names(&local.join(".archive")), ["ORM_1.hl7", "ORM_2.hl7"]);
    inbox.close().await.unwrap();
}

#[tokio::test]
async fn unknown_or_changed_host_keys_are_refused_naming_the_host() {
    let sshd = Sshd::start();
    let (local, remote) = sshd.share("out");
    let port = sshd.port;

    // a changed key: known_hosts pins another key for this host
    let other = sshd.path().join("other_host");
    keygen(&other);
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let changed = sshd.path().join("known_hosts_changed");
    let key: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    std::fs::write(&changed, format!("[127.0.0.1]:{port} {}\n", key.join(" "))).unwrap();
    let mut cfg = sshd.config(port);
    cfg.known_hosts = changed.clone();
    let e = SftpSink::new(cfg, &remote).deliver(&Item::new("1", msg("K1", 1))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Hold, "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("{}@127.0.0.1:{port}: HOST KEY CHANGED: ssh-ed25519 SHA256:", sshd.user)),
        "{text}"
    );
    assert!(text.ends_with(&format!("differs from {} line 1; refused", changed.display())), "{text}");

    // an unknown host: an empty known_hosts (no trust on first use)
    let empty = sshd.path().join("known_hosts_empty");
    std::fs::write(&empty, "").unwrap();
    let mut cfg = sshd.config(port);
    cfg.known_hosts = empty.clone();
    let mut inbox = SftpSource::new(cfg, &remote, InboxOptions::default());
    let e = inbox.scan().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Hold);
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}: host key ssh-ed25519 SHA256:")), "{e}");
    assert!(e.to_string().ends_with(&format!("is not in {}; refused", empty.display())), "{e}");
    assert!(std::fs::read_to_string(&empty).unwrap().is_empty(), "nothing learnt");
    assert!(names(&local).is_empty(), "nothing was written");

    // a wrong user key
    let stranger = sshd.path().join("stranger");
    keygen(&stranger);
    let mut cfg = sshd.config(port);
    cfg.identity = stranger;
    let e = SftpSink::new(cfg, &remote).deliver(&Item::new("1", msg("K1", 1))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Hold);
    assert!(e.to_string().ends_with(&format!("public key authentication failed for user {}", sshd.user)), "{e}");
}

#[tokio::test]
async fn a_file_still_being_written_is_not_picked_up() {
    let sshd = Sshd::start();
    let (local, remote) = sshd.share("inbox");
    let path = local.join("big.hl7");
    std::fs::write(&path, msg("W1", 100)).unwrap();
    let mut inbox = SftpSource::new(sshd.config(sshd.port), &remote, InboxOptions::default());
    assert_eq!(inbox.scan().await.unwrap(), 0);
    std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all_sync(msg("W2", 100).as_bytes());
    assert_eq!(inbox.scan().await.unwrap(), 0, "size changed between polls");
    assert_eq!(inbox.waiting(), 1);
    assert_eq!(inbox.scan().await.unwrap(), 1, "unchanged across two polls");
    let got = inbox.recv().await.unwrap().unwrap();
    assert_eq!(&got.item.bytes[..], format!("{}{}", msg("W1", 100), msg("W2", 100)).as_bytes());
    inbox.settle(got.receipt, Settle::Failed { reason: "test".into() }).await.unwrap();
    assert!(path.exists(), "not stored: left on the server");

    // the .done convention: nothing is taken before its marker exists
    let (local, remote) = sshd.share("marked");
    std::fs::write(local.join("o.hl7"), msg("D1", 1)).unwrap();
    let opts = InboxOptions::new().pickup(Pickup::DoneMarker(".done".into())).after_store(RemoteAfter::Delete).build();
    let mut inbox = SftpSource::new(sshd.config(sshd.port), &remote, opts);
    assert!(inbox.recv().await.unwrap().is_none(), "no marker yet");
    assert!(inbox.recv().await.unwrap().is_none(), "still no marker");
    std::fs::write(local.join("o.hl7.done"), "").unwrap();
    let got = inbox.recv().await.unwrap().unwrap();
    assert_eq!(got.item.meta.name.as_deref(), Some("o.hl7"));
    inbox.settle(got.receipt, Settle::Stored).await.unwrap();
    assert!(names(&local).is_empty(), "file and marker removed after the store");
}

trait WriteAllSync {
    fn write_all_sync(self, b: &[u8]);
}

impl WriteAllSync for std::fs::File {
    fn write_all_sync(mut self, b: &[u8]) {
        std::io::Write::write_all(&mut self, b).unwrap();
    }
}

#[tokio::test]
async fn a_download_cut_mid_transfer_arrives_exactly_once() {
    let sshd = Sshd::start();
    let (local, remote) = sshd.share("inbox");
    let file: String = ["C1", "C2", "C3"].iter().map(|id| msg(id, 200_000)).collect();
    std::fs::write(local.join("batch.hl7"), &file).unwrap();
    let proxy = cutting_proxy(sshd.port, 300_000, true).await;
    let mut cfg = sshd.config(sshd.port);
    cfg.port = proxy;
    // known_hosts names the sshd's port; the proxy is another port of the same host
    let kh = sshd.path().join("known_hosts_proxy");
    let pinned = std::fs::read_to_string(sshd.path().join("known_hosts")).unwrap();
    std::fs::write(&kh, pinned.replace(&format!(":{}", sshd.port), &format!(":{proxy}"))).unwrap();
    cfg.known_hosts = kh;

    let store = store();
    let intake = Intake::new(store.clone(), "emr-sftp", "lis");
    let mut inbox = SftpSource::new(cfg, &remote, InboxOptions::default());
    inbox.scan().await.unwrap();
    assert_eq!(inbox.scan().await.unwrap(), 1);
    let e = intake.drain(&mut inbox).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(local.join("batch.hl7").exists(), "a broken download leaves the file");
    assert!(store.pending("lis", 10).unwrap().is_empty(), "nothing partial stored");

    // the next pass reconnects and takes the whole file
    let report = intake.drain(&mut inbox).await.unwrap();
    assert_eq!(report.items, 1);
    assert_eq!(queued_ids(&store, "lis"), ["C1", "C2", "C3"]);
    assert!(store.audit(&AuditQuery::new().kind(EventKind::Duplicate)).unwrap().is_empty());
    assert_eq!(names(&local.join(".archive")), ["batch.hl7"]);
    assert!(!local.join("batch.hl7").exists());
}

#[tokio::test]
async fn an_upload_cut_mid_transfer_is_delivered_once() {
    let sshd = Sshd::start();
    let (local, remote) = sshd.share("outbox");
    let proxy = cutting_proxy(sshd.port, 300_000, false).await;
    let mut cfg = sshd.config(sshd.port);
    cfg.port = proxy;
    let kh = sshd.path().join("known_hosts_proxy");
    let pinned = std::fs::read_to_string(sshd.path().join("known_hosts")).unwrap();
    std::fs::write(&kh, pinned.replace(&format!(":{}", sshd.port), &format!(":{proxy}"))).unwrap();
    cfg.known_hosts = kh;

    let store = store();
    let entries = [("B1", 10), ("B2", 600_000), ("B3", 10)]
        .iter()
        .map(|(id, n)| {
            Entry::Message(NewMessage {
                bytes: msg(id, *n).into(),
                control_id: Some((*id).into()),
                ..Default::default()
            })
        })
        .collect();
    store.ingest(&Batch { connection: "lis".into(), queue: "emr".into(), entries }).unwrap();
    let retries = Arc::new(AtomicI64::new(0));
    let counted = retries.clone();
    let policy = RetryPolicy::default()
        .max_attempts(3)
        .backoff(Backoff::new(Duration::from_millis(10), Duration::from_millis(50)))
        .on_retry(Arc::new(move |_, _, e: &transport::Error, _| {
            assert!(e.is_retryable(), "{e}");
            counted.fetch_add(1, Ordering::SeqCst);
        }));
    let sink = Arc::new(Retry::new(SftpSink::new(cfg, &remote), policy));
    let report = Forwarder::new(store.clone(), "emr", sink).drain().await.unwrap();
    assert_eq!(report.delivered.len(), 3, "{report:?}");
    assert_eq!(retries.load(Ordering::SeqCst), 1, "the cut upload was tried again once");
    let ids: Vec<String> = report.delivered.iter().map(|id| format!("{id}.hl7")).collect();
    assert_eq!(names(&local), ids, "each once, no partial or temporary file visible");
    for (id, (cid, n)) in report.delivered.iter().zip([("B1", 10), ("B2", 600_000), ("B3", 10)]) {
        assert_eq!(std::fs::read_to_string(local.join(format!("{id}.hl7"))).unwrap(), msg(cid, n));
    }
}

#[tokio::test]
async fn sshd_killed_and_restarted_nothing_lost_nothing_doubled() {
    let mut sshd = Sshd::start();
    let (local, remote) = sshd.share("inbox");
    std::fs::write(local.join("a.hl7"), format!("{}{}", msg("A1", 10), msg("A2", 10))).unwrap();
    std::fs::write(local.join("b.hl7"), msg("B1", 10)).unwrap();
    let store = store();
    let intake = Intake::new(store.clone(), "emr-sftp", "lis");
    let mut inbox = SftpSource::new(sshd.config(sshd.port), &remote, InboxOptions::default());
    inbox.scan().await.unwrap();
    assert_eq!(inbox.scan().await.unwrap(), 2);

    // a.hl7 is downloaded; the server dies before it can be archived
    let first = inbox.recv().await.unwrap().unwrap();
    assert_eq!(first.item.meta.name.as_deref(), Some("a.hl7"));
    sshd.kill();
    let e = intake.take(&mut inbox, first).await.unwrap_err();
    assert!(e.to_string().contains("127.0.0.1"), "{e}");
    assert_eq!(queued_ids(&store, "lis"), ["A1", "A2"], "stored before the archive was tried");
    assert!(inbox.scan().await.is_err(), "server down");

    sshd.spawn();
    // b.hl7 was complete already; a.hl7 shows up again and is recorded as a duplicate
    let report = intake.drain(&mut inbox).await.unwrap();
    assert_eq!(report.items, 1);
    inbox.scan().await.unwrap();
    inbox.scan().await.unwrap();
    let report = intake.drain(&mut inbox).await.unwrap();
    assert_eq!((report.items, report.stored.queued.len(), report.stored.duplicates.len()), (1, 0, 2));
    assert_eq!(queued_ids(&store, "lis"), ["A1", "A2", "B1"], "each exactly once");
    assert!(names(&local).iter().all(|n| n == ".archive"), "{:?}", names(&local));
    assert_eq!(names(&local.join(".archive")), ["a.hl7", "b.hl7"]);
    let dups = store.audit(&AuditQuery::new().kind(EventKind::Duplicate)).unwrap();
    assert_eq!(dups.len(), 2, "each duplicate is recorded, not silently dropped");
    inbox.close().await.unwrap();
}
