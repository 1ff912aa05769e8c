//! `labbridge transport …`: a curl for the lab's pipes.
//!
//! `send FILE URL` stores every message of FILE, then forwards each over
//! URL; `receive URL DIR` takes every complete file or message from URL once,
//! stores it, and writes each message into DIR. Both go through the same
//! store-and-forward pipeline as the engine, so what is reported as sent was
//! confirmed by the peer, and what was received was stored before it was
//! acknowledged.
//!
//! URLs: `file:///path/to/dir`, `mllp://host:port`.
//! Exit status: 0 on success, 1 on a transfer failure (the message names
//! the host and what failed), 2 on a usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ::transport::folder::{FolderOptions, FolderSink, FolderSource};
use ::transport::layers::{AckCheck, AckPolicy, Backoff, Retry, RetryPolicy};
use ::transport::mllp::{ClientOptions, MllpClient, MllpServer, ServerOptions};
use ::transport::pipeline::{audit_retries, Forwarder, Intake};
use ::transport::store::{SqliteStore, Store, StoreConfig};
use ::transport::{Inbound, Item, Sink, Source};
use clap::Subcommand;
use serde_json::json;

use crate::CliError;

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Send every message of FILE to URL (file:///dir or mllp://host:port); exit 1 unless all were confirmed.
    Send {
        /// An HL7 file (one message, a batch, or messages one after another); `-` for stdin.
        file: String,
        /// Where to: file:///path/to/dir or mllp://host:port.
        url: String,
        #[command(flatten)]
        opts: Opts,
    },
    /// Take every complete file or message from URL once, store it, and write each message into DIR.
    Receive {
        /// Where from: file:///path/to/dir (files are archived into its .archive/) or mllp://host:port to listen on.
        url: String,
        /// The directory messages are written into, one file per message.
        dir: PathBuf,
        /// Stop after this many files or MLLP messages.
        #[arg(long, value_name = "N")]
        max: Option<u64>,
        /// Stop when nothing arrived for this many seconds.
        #[arg(long, value_name = "SECS", default_value = "10")]
        idle: f64,
        #[command(flatten)]
        opts: Opts,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct Opts {
    /// Seconds to wait for a connection or an ACK.
    #[arg(long, value_name = "SECS", default_value = "30")]
    timeout: f64,
    /// Attempts per message before giving up (with exponential back-off).
    #[arg(long, value_name = "N", default_value = "3")]
    attempts: u32,
    /// The SQLite store (default: in memory for send, DIR/.labbridge.db for receive).
    #[arg(long, value_name = "PATH")]
    store: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Url {
    File(PathBuf),
    Mllp(String),
}

impl Url {
    fn parse(s: &str) -> Result<Url, CliError> {
        let usage = |why: &str| CliError::Usage(format!("{s}: {why} (expected file:///dir or mllp://host:port)"));
        let (scheme, rest) = s.split_once("://").ok_or_else(|| usage("not a URL"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                let path = rest.strip_prefix("localhost").unwrap_or(rest);
                if path.is_empty() {
                    return Err(usage("no path"));
                }
                Ok(Url::File(PathBuf::from(path)))
            }
            "mllp" => {
                let host = rest.trim_end_matches('/');
                match host.rsplit_once(':') {
                    Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(Url::Mllp(host.to_owned())),
                    _ => Err(usage("needs host:port")),
                }
            }
            "sftp" | "http" | "https" => Err(usage("scheme not supported yet")),
            _ => Err(usage("unknown scheme")),
        }
    }

    fn host(&self) -> String {
        match self {
            Url::File(p) => p.display().to_string(),
            Url::Mllp(h) => h.clone(),
        }
    }
}

fn secs(s: f64, what: &str) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(s).map_err(|_| CliError::Usage(format!("--{what} must be a number of seconds")))
}

fn open_store(path: &Path) -> Result<Arc<dyn Store>, CliError> {
    SqliteStore::open(path, StoreConfig::default())
        .map(|s| Arc::new(s) as Arc<dyn Store>)
        .map_err(|e| CliError::Io(format!("{}: {e}", path.display())))
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Io(format!("starting the runtime: {e}")))
}

pub(crate) fn run(cmd: Cmd) -> Result<ExitCode, CliError> {
    match cmd {
        Cmd::Send { file, url, opts } => {
            let url = Url::parse(&url)?;
            let timeout = secs(opts.timeout, "timeout")?;
            runtime()?.block_on(send(&file, url, timeout, &opts))
        }
        Cmd::Receive { url, dir, max, idle, opts } => {
            let url = Url::parse(&url)?;
            let idle = secs(idle, "idle")?;
            runtime()?.block_on(receive(url, &dir, max, idle, &opts))
        }
    }
}

fn sink_for(
    url: &Url,
    store: &Arc<dyn Store>,
    queue: &str,
    timeout: Duration,
    attempts: u32,
    stem: &str,
) -> Arc<dyn Sink> {
    match url {
        Url::File(dir) => Arc::new(FolderSink::new(dir).naming(format!("{stem}-"), ".hl7")),
        Url::Mllp(addr) => {
            let client = MllpClient::new(
                addr.clone(),
                ClientOptions { connect_timeout: timeout, ack_timeout: timeout, ..ClientOptions::default() },
            );
            let policy = RetryPolicy::default()
                .max_attempts(attempts)
                .backoff(Backoff::new(Duration::from_millis(500), Duration::from_secs(30)))
                .on_retry(audit_retries(store.clone(), queue));
            Arc::new(Retry::new(AckCheck::new(client, AckPolicy::default()), policy))
        }
    }
}

async fn send(file: &str, url: Url, timeout: Duration, opts: &Opts) -> Result<ExitCode, CliError> {
    let bytes = if file == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut b)
            .map_err(|e| CliError::Io(format!("-: {e}")))?;
        b
    } else {
        std::fs::read(file).map_err(|e| CliError::Io(format!("{file}: {e}")))?
    };
    let store = open_store(opts.store.as_deref().unwrap_or(Path::new(":memory:")))?;
    let queue = "send";
    let name = Path::new(file).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "stdin".into());
    let stem = Path::new(&name).file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let item = Item::new(format!("file:{name}"), bytes).with_name(name.clone());
    let inbound = Inbound { item, framing_error: None, receipt: 0 };
    let stored = Intake::new(store.clone(), "cli", queue).store(&inbound).map_err(|e| CliError::Io(e.to_string()))?;
    let sink = sink_for(&url, &store, queue, timeout, opts.attempts, &stem);
    let report = Forwarder::new(store.clone(), queue, sink).drain().await.map_err(|e| CliError::Io(e.to_string()))?;

    let mut failures = Vec::new();
    for q in store.quarantined(false).map_err(|e| CliError::Io(e.to_string()))? {
        let what = q
            .control_id
            .map(|c| format!("message {c}"))
            .unwrap_or_else(|| format!("bytes at {}", q.offset.unwrap_or(0)));
        failures.push(format!("{what}: {}", q.reason));
    }
    if let Some((_, e)) = &report.deferred {
        failures.push(e.to_string());
    }
    if let Some((_, e)) = &report.held {
        failures.push(format!("queue held: {e}"));
    }
    let line = json!({
        "sent": report.delivered.len(),
        "to": url.host(),
        "duplicates": stored.duplicates.len(),
        "not_sent": (stored.queued.len() + stored.quarantined.len()).saturating_sub(report.delivered.len()),
        "warnings": report.warnings.iter().map(|(_, w)| w.clone()).collect::<Vec<_>>(),
    });
    println!("{line}");
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let n = failures.len();
    Err(CliError::Io(format!("{}: {n} message(s) not sent: {}", url.host(), failures.join("; "))))
}

async fn receive(url: Url, dir: &Path, max: Option<u64>, idle: Duration, opts: &Opts) -> Result<ExitCode, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| CliError::Io(format!("{}: {e}", dir.display())))?;
    let store_path = opts.store.clone().unwrap_or_else(|| dir.join(".labbridge.db"));
    let store = open_store(&store_path)?;
    let queue = "receive";
    let intake = Intake::new(store.clone(), url.host(), queue);
    let forward = Forwarder::new(store.clone(), queue, Arc::new(FolderSink::new(dir)));
    let io = |e: ::transport::Error| CliError::Io(e.to_string());

    let mut source: Box<dyn Source> = match &url {
        Url::File(src) => {
            if !src.is_dir() {
                return Err(CliError::Io(format!("{}: not a directory", src.display())));
            }
            Box::new(FolderSource::new(src, FolderOptions::default()))
        }
        Url::Mllp(addr) => Box::new(
            MllpServer::bind(addr, ServerOptions { connection: addr.clone(), ..ServerOptions::default() })
                .await
                .map_err(io)?,
        ),
    };
    let polling = matches!(url, Url::File(_));
    let poll = Duration::from_millis(250).min(idle);
    let mut taken = 0u64;
    let mut last = tokio::time::Instant::now();
    loop {
        if max.is_some_and(|m| taken >= m) || last.elapsed() >= idle {
            break;
        }
        let next = if polling {
            // A file counts as complete once two scans agree on its size and time.
            let got = source.recv().await.map_err(io)?;
            if got.is_none() {
                tokio::time::sleep(poll).await;
            }
            got
        } else {
            match tokio::time::timeout(idle.saturating_sub(last.elapsed()), source.recv()).await {
                Ok(r) => r.map_err(io)?,
                Err(_) => break,
            }
        };
        let Some(inbound) = next else {
            if !polling {
                break;
            }
            continue;
        };
        let what = inbound.item.meta.name.clone().or(inbound.item.meta.peer.clone()).unwrap_or_default();
        let size = inbound.item.bytes.len();
        let stored = intake.take(source.as_mut(), inbound).await.map_err(io)?;
        let sent = forward.drain().await.map_err(io)?;
        taken += 1;
        last = tokio::time::Instant::now();
        let files: Vec<String> =
            sent.delivered.iter().map(|id| dir.join(format!("{id}.hl7")).display().to_string()).collect();
        println!(
            "{}",
            json!({
                "took": what,
                "bytes": size,
                "messages": stored.queued.len(),
                "duplicates": stored.duplicates.len(),
                "quarantined": stored.quarantined.len(),
                "files": files,
            })
        );
    }
    source.close().await.map_err(io)?;
    let waiting = store.quarantined(false).map_err(io)?.len();
    eprintln!("labbridge: took {taken} from {}; {waiting} in quarantine ({})", url.host(), store_path.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str) -> String {
        format!("MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240117||ORM^O01|{id}|P|2.3\rPID|1||MRN{id}\r")
    }

    fn opts() -> Opts {
        Opts { timeout: 5.0, attempts: 1, store: None }
    }

    #[test]
    fn urls() {
        assert_eq!(Url::parse("file:///tmp/x").unwrap(), Url::File("/tmp/x".into()));
        assert_eq!(Url::parse("mllp://127.0.0.1:2575").unwrap(), Url::Mllp("127.0.0.1:2575".into()));
        for bad in ["ftp://x", "mllp://host", "nothing", "file://"] {
            let e = Url::parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn send_and_receive_through_folders() {
        let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let file = a.path().join("orders.hl7");
        std::fs::write(&file, format!("{}{}", msg("M1"), msg("M2"))).unwrap();
        let url = format!("file://{}", b.path().display());
        let code = run(Cmd::Send { file: file.display().to_string(), url: url.clone(), opts: opts() }).unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(std::fs::read_dir(b.path()).unwrap().count(), 2);

        let code = run(Cmd::Receive { url, dir: c.path().to_owned(), max: Some(2), idle: 5.0, opts: opts() }).unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        let mut got: Vec<String> = std::fs::read_dir(c.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, [msg("M1"), msg("M2")]);
        assert!(b.path().join(".archive").is_dir(), "taken files are archived, never taken twice");
    }

    #[test]
    fn send_and_receive_over_mllp() {
        let (a, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("mllp://127.0.0.1:{port}");
        let dir = c.path().to_owned();
        let u = url.clone();
        let receiver =
            std::thread::spawn(move || run(Cmd::Receive { url: u, dir, max: Some(2), idle: 20.0, opts: opts() }));
        let file = a.path().join("orders.hl7");
        std::fs::write(&file, format!("{}{}", msg("R1"), msg("R2"))).unwrap();
        // wait until the receiver listens (an empty connection is harmless to it)
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(!receiver.is_finished(), "the receiver stopped early");
            std::thread::yield_now();
        }
        let code = run(Cmd::Send { file: file.display().to_string(), url, opts: opts() }).unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(receiver.join().unwrap().unwrap(), ExitCode::SUCCESS);
        let n = std::fs::read_dir(c.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "hl7"))
            .count();
        assert_eq!(n, 2);
    }

    #[test]
    fn refused_connection_is_exit_1_naming_the_host() {
        let a = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let file = a.path().join("o.hl7");
        std::fs::write(&file, msg("X1")).unwrap();
        let e =
            run(Cmd::Send { file: file.display().to_string(), url: format!("mllp://127.0.0.1:{port}"), opts: opts() })
                .unwrap_err();
        assert_eq!(e.exit_code(), 1);
        let text = e.to_string();
        assert!(text.starts_with(&format!("127.0.0.1:{port}: 1 message(s) not sent: 127.0.0.1:{port}: ")), "{text}");
        assert!(text.contains("connect"), "{text}");
    }
}
