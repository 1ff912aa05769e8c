//! The process running the pipeline is killed (SIGKILL) at random points,
//! over and over, and restarted; at the end every message sent arrived
//! exactly once downstream and the audit trail accounts for each.
//!
//! One binary plays both parts (`harness = false`): run plainly it is the
//! test; with `LB_CRASH_CHILD=<dir>` in its environment it is the engine,
//! a folder → SQLite store → folder connection that runs until its inbox
//! and queue are empty. The parent drops new files (and now and then a
//! resend of an old one, and a file with a broken message) into the inbox,
//! starts the engine, kills it after a delay drawn from a seeded generator,
//! and repeats. Kill *delays* are deterministic for a seed; where in the
//! code each kill lands depends on the machine, which is the point.
//!
//! `LB_CRASH_SEED` and `LB_CRASH_KILLS` (SIGKILLs to land, default 300)
//! override the defaults. What this
//! proves and what it does not: SIGKILL loses everything the process had
//! not handed to the kernel, so every window between "stored", "settled",
//! "sent" and "marked delivered" is exercised; it does not simulate a power
//! cut (the kernel's page cache survives a killed process).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Duration;

use transport::audit::{AuditQuery, EventKind};
use transport::folder::{AfterStore, FolderOptions, FolderSink, FolderSource};
use transport::pipeline::{Forwarder, Intake};
use transport::store::{SqliteStore, Store, StoreConfig};

const NAME: &str = "pipeline_survives_sigkill_at_random_points";

fn main() -> ExitCode {
    if let Some(dir) = std::env::var_os("LB_CRASH_CHILD") {
        let group = std::env::var("LB_CRASH_GROUP").ok().and_then(|g| g.parse().ok()).unwrap_or(1);
        engine(Path::new(&dir), group);
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The libtest listing protocol, for cargo nextest.
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("{NAME}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| NAME.contains(f.as_str())) {
        println!("\nrunning 0 tests (filtered out: {NAME})");
        return ExitCode::SUCCESS;
    }
    println!("\nrunning 1 test");
    pipeline_survives_sigkill_at_random_points();
    println!("test {NAME} ... ok\n\ntest result: ok. 1 passed; 0 failed");
    ExitCode::SUCCESS
}

fn store(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir.join("lb.db"), StoreConfig::new().audit_key("crash").build()).expect("open store")
}

/// The engine: what `labbridge` runs, minus the command line.
fn engine(dir: &Path, group: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(store(dir));
        let opts = FolderOptions::new().connection("emr").after_store(AfterStore::Archive(dir.join("archive"))).build();
        let mut source = FolderSource::new(dir.join("inbox"), opts);
        let intake = Intake::new(store.clone(), "emr", "lis").group(group);
        let sink = Arc::new(FolderSink::new(dir.join("outbox")));
        let forwarder = Forwarder::new(store.clone(), "lis", sink).group(group);
        let mut idle = 0;
        loop {
            let taken = intake.drain(&mut source).await.expect("intake");
            let sent = forwarder.drain().await.expect("forward");
            if taken.items == 0 && sent.delivered.is_empty() {
                idle += 1;
                if idle >= 3 && visible_files(&dir.join("inbox")).is_empty() && store.depth("lis").unwrap().0 == 0 {
                    return;
                }
            } else {
                idle = 0;
            }
        }
    });
}

fn visible_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.') && e.path().is_file())
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// xorshift64*: a few lines, the same sequence everywhere for a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn message(cid: &str) -> String {
    format!(
        "MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|{cid}|P|2.3\rPID|1||MRN-{cid}^^^CLINIC^MR||DOE^JANE\r\
         ORC|NW|PLC-{cid}\rOBR|1|PLC-{cid}||2345-7^Glucose^LN\r"
    )
}

fn control_id(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.split('|').nth(9).unwrap_or_default().to_owned()
}

/// Writes a file the way a careful sender does: elsewhere, then renamed in.
fn drop_file(inbox: &Path, name: &str, text: &str) {
    let tmp = inbox.join(format!(".{name}.part"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, inbox.join(name)).unwrap();
}

fn pipeline_survives_sigkill_at_random_points() {
    let seed = std::env::var("LB_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x1AB_B41D6E);
    let kills: u32 = std::env::var("LB_CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let mut rng = Rng(seed | 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let exe = std::env::current_exe().unwrap();

    let mut expected: BTreeMap<String, String> = BTreeMap::new(); // control id -> bytes
    let mut broken = BTreeSet::new();
    let mut files: Vec<Vec<String>> = Vec::new(); // good messages per file, for resends
    let (mut killed, mut finished_first, mut resends) = (0u32, 0u32, 0u32);
    // Until `kills` runs were killed mid-way (a run that finished before its
    // kill still counts as a round, not as a kill), within a bound.
    let mut round = 0;
    while killed < kills && round < 4 * kills {
        round += 1;
        for _ in 0..1 + rng.below(3) {
            let n = files.len();
            let mut text = String::new();
            let mut good = Vec::new();
            for m in 0..1 + rng.below(4) {
                let cid = format!("C{n}-{m}");
                let msg = message(&cid);
                text.push_str(&msg);
                good.push(msg.clone());
                expected.insert(cid, msg);
            }
            if rng.below(10) == 0 {
                let cid = format!("BAD{n}");
                text.push_str(&format!("MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|{cid}|P|2.3\rNOT A SEGMENT\r"));
                broken.insert(cid);
            }
            drop_file(&inbox, &format!("f{n:05}.hl7"), &text);
            files.push(good);
        }
        if rng.below(8) == 0 {
            // a sender re-sends an old file after a lost acknowledgement
            let old = rng.below(files.len() as u64) as usize;
            drop_file(&inbox, &format!("resend{round:05}.hl7"), &files[old].concat());
            resends += 1;
        }
        let mut child = Command::new(&exe)
            .env("LB_CRASH_CHILD", dir)
            .env("LB_CRASH_GROUP", if round % 2 == 0 { "1" } else { "16" })
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1 + rng.below(20)));
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "engine failed on its own in round {round}: {status}");
                finished_first += 1;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed += 1;
            }
        }
    }
    assert!(killed > 0, "no run was ever killed mid-way");
    // a last run to the end, and one more that must find nothing to do
    for _ in 0..2 {
        let status = Command::new(&exe).env("LB_CRASH_CHILD", dir).status().unwrap();
        assert!(status.success());
    }

    // Reconcile. Downstream: every message exactly once, byte for byte.
    let mut delivered: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for f in visible_files(&dir.join("outbox")) {
        let bytes = std::fs::read(&f).unwrap();
        let cid = control_id(&bytes);
        assert!(delivered.insert(cid.clone(), bytes).is_none(), "{cid} delivered twice");
    }
    assert_eq!(delivered.len(), expected.len(), "sent = received");
    for (cid, msg) in &expected {
        assert_eq!(delivered.get(cid).map(|b| &b[..]), Some(msg.as_bytes()), "{cid} lost or changed");
    }
    assert!(visible_files(&inbox).is_empty(), "every file was archived");

    // The trail: each message received at least once, queued and confirmed
    // exactly once, every extra reception recorded as a duplicate.
    let store = store(dir);
    store.verify_audit().expect("the audit trail verifies");
    assert_eq!(store.depth("lis").unwrap().0, 0);
    let events = store.audit(&AuditQuery::new()).unwrap();
    let mut per: BTreeMap<&str, BTreeMap<&'static str, u32>> = BTreeMap::new();
    for e in &events {
        if let Some(c) = &e.control_id {
            *per.entry(c.as_str()).or_default().entry(e.kind.as_str()).or_default() += 1;
        }
    }
    let n = |c: &str, k: EventKind| per.get(c).and_then(|m| m.get(k.as_str())).copied().unwrap_or(0);
    let (mut duplicates, mut resent) = (0, 0);
    for cid in expected.keys() {
        assert_eq!(n(cid, EventKind::Queued), 1, "{cid}");
        assert_eq!(n(cid, EventKind::Acknowledged), 1, "{cid}");
        assert!(n(cid, EventKind::Sent) >= 1, "{cid}");
        assert_eq!(n(cid, EventKind::Received), 1 + n(cid, EventKind::Duplicate), "{cid}");
        duplicates += n(cid, EventKind::Duplicate);
        resent += n(cid, EventKind::Sent) - 1;
    }
    let entries = store.quarantined(false).unwrap();
    let quarantined: BTreeSet<String> = entries.iter().filter_map(|q| q.control_id.clone()).collect();
    assert_eq!(quarantined, broken, "each broken message is in quarantine");
    assert_eq!(entries.len(), broken.len(), "once, even when its file was read again after a crash");
    println!(
        "{NAME}: seed {seed:#x}: {} messages in {} files ({resends} resends, {} broken); \
         {killed} SIGKILLs, {finished_first} runs finished before their kill; \
         {duplicates} duplicates recorded, {resent} extra sends absorbed downstream; {} audit events verified",
        expected.len(),
        files.len(),
        broken.len(),
        events.len()
    );
}
