//! `labbridge transport …`: a curl for the lab's pipes.
//!
//! `send FILE URL` stores every message of FILE, then forwards each over
//! URL; `receive URL DIR` takes every complete file or message from URL once,
//! stores it, and writes each message into DIR. Both go through the same
//! store-and-forward pipeline as the engine, so what is reported as sent was
//! confirmed by the peer, and what was received was stored before it was
//! acknowledged.
//!
//! URLs: `file:///path/to/dir`, `mllp://host:port`, `http(s)://host[:port]/path`
//! (`receive` listens on `http://host:port`), `sftp://user@host[:port]/path`.
//! Exit status: 0 on success, 1 on a transfer failure (the message names
//! the host and what failed; an unknown or changed SSH host key is one),
//! 2 on a usage error.
//!
//! `quarantine list|show|release` and `audit` work on a store: the
//! operator's view of what is stuck and of each message's trail.
//! `metrics` prints the store's counters and gauges in Prometheus text
//! format, `alerts` exits 1 when a queue is stuck, the error rate is too
//! high or a connection went silent, and `prune` applies retention.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ::transport::audit::{AuditEvent, AuditQuery};
use ::transport::folder::{FolderOptions, FolderSink, FolderSource};
use ::transport::layers::{AckCheck, AckPolicy, Backoff, Retry, RetryPolicy};
use ::transport::mllp::{ClientOptions, MllpClient, MllpServer, ServerOptions};
use ::transport::monitor::{render_prometheus, AlertRules};
use ::transport::pipeline::{audit_retries, Forwarder, Intake};
use ::transport::rest::{Auth, HttpOptions, HttpSink, RestServer, RestServerOptions};
use ::transport::sftp::{InboxOptions, SftpConfig, SftpSink, SftpSource};
use ::transport::store::{Retention, SqliteStore, Store, StoreConfig};
use ::transport::{ErrorKind, Inbound, Item, Sink, Source};
use clap::Subcommand;
use serde_json::json;

use crate::CliError;

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Send every message of FILE to URL (file://, mllp://, http(s)://, sftp://); exit 1 unless all were confirmed.
    Send {
        /// An HL7 file (one message, a batch, or messages one after another); `-` for stdin.
        file: String,
        /// Where to: file:///dir, mllp://host:port, http(s)://host/path (POST) or sftp://user@host:port/dir.
        url: String,
        #[command(flatten)]
        opts: Opts,
    },
    /// Take every complete file or message from URL once, store it, and write each message into DIR.
    Receive {
        /// Where from: file:///dir or sftp://user@host:port/dir (files are archived into its .archive/),
        /// or mllp://host:port or http://host:port to listen on (HTTP: POST /messages).
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
    /// Messages and files waiting in quarantine: list, show, release.
    #[command(subcommand)]
    Quarantine(QuarantineCmd),
    /// Print the audit trail of a message, a control id or a connection; `audit verify` checks the hash chain.
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        verify: Option<AuditCmd>,
        #[command(flatten)]
        args: AuditArgs,
    },
    /// Print the store's metrics in Prometheus text format (counters, queue depth, oldest age, alerts).
    Metrics {
        #[command(flatten)]
        rules: RuleArgs,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Check the alert conditions; one line per alert that holds, exit 1 when any does.
    Alerts {
        #[command(flatten)]
        rules: RuleArgs,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Remove finished messages and old audit events in bounded chunks (queued work is never removed).
    Prune {
        /// Remove what finished longer ago than this many hours.
        #[arg(long, value_name = "HOURS")]
        older_than: Option<f64>,
        /// Keep at most this many finished messages.
        #[arg(long, value_name = "N")]
        keep_messages: Option<u64>,
        /// Keep at most this many audit events (older ones go, with a checkpoint).
        #[arg(long, value_name = "N")]
        keep_events: Option<u64>,
        /// Rows per transaction.
        #[arg(long, value_name = "ROWS", default_value = "1000")]
        chunk: usize,
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct RuleArgs {
    /// A queue is stuck when its oldest message waited longer than this many seconds.
    #[arg(long, value_name = "SECS", default_value = "900")]
    stuck_after: f64,
    /// Alert when more than this share (0-1) of delivery attempts in the window failed.
    #[arg(long, value_name = "RATIO", default_value = "0.5")]
    error_rate: f64,
    /// ... counting only once there were at least this many attempts.
    #[arg(long, value_name = "N", default_value = "10")]
    min_attempts: u64,
    /// The error-rate window in seconds.
    #[arg(long, value_name = "SECS", default_value = "900")]
    window: f64,
    /// A connection is silent when nothing went in or out for this many seconds.
    #[arg(long, value_name = "SECS", default_value = "3600")]
    silent_after: f64,
}

impl RuleArgs {
    fn rules(&self) -> Result<AlertRules, CliError> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(CliError::Usage("--error-rate must be between 0 and 1".into()));
        }
        Ok(AlertRules::new()
            .stuck_after(secs(self.stuck_after, "stuck-after")?)
            .error_rate(self.error_rate, self.min_attempts)
            .window(secs(self.window, "window")?)
            .silent_after(secs(self.silent_after, "silent-after")?)
            .build())
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum QuarantineCmd {
    /// One line per entry waiting (oldest first): id, when, connection, control id, size, reason.
    List {
        /// Released entries too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// One entry: its details on stderr, its original bytes on stdout.
    Show {
        /// The quarantine id (from `list`).
        id: i64,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Queue an entry again, as it was or fixed.
    Release {
        /// The quarantine id (from `list`).
        id: i64,
        /// The queue to put it in (default: the queue it was taken out of).
        #[arg(long, value_name = "QUEUE")]
        queue: Option<String>,
        /// Release these bytes (the fixed message) instead of the original.
        #[arg(long, value_name = "FILE")]
        fixed: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCmd {
    /// Check the hash chain of the whole trail; exit 1 naming the first event that does not verify.
    Verify {
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    /// A message's trail end to end, by its id in the store.
    #[arg(long, value_name = "ID", group = "which")]
    message_id: Option<i64>,
    /// Every event of this MSH-10 control id.
    #[arg(long, value_name = "ID", group = "which")]
    control_id: Option<String>,
    /// Every event on this connection or queue.
    #[arg(long, value_name = "NAME", group = "which")]
    connection: Option<String>,
    /// From this time (RFC 3339, a date YYYY-MM-DD, or milliseconds since the epoch).
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Until this time, exclusive (same forms as --since).
    #[arg(long, value_name = "T")]
    until: Option<String>,
    #[command(flatten)]
    store: StoreArg,
}

#[derive(Debug, clap::Args)]
pub(crate) struct StoreArg {
    /// The SQLite store.
    #[arg(long = "store", value_name = "DB", default_value = "labbridge.db")]
    path: PathBuf,
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
    /// HTTP: the bearer token sent (send) or required from clients (receive).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// SFTP: the private key (default ~/.ssh/id_ed25519, then ~/.ssh/id_rsa).
    #[arg(long, value_name = "KEY")]
    identity: Option<PathBuf>,
    /// SFTP: the known-hosts file the server's key must be in (default ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    known_hosts: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Url {
    File(PathBuf),
    Mllp(String),
    /// The URL as given, and its host:port.
    Http {
        url: String,
        host: String,
        tls: bool,
    },
    Sftp {
        user: String,
        host: String,
        port: u16,
        path: String,
    },
}

fn host_port(s: &str, default: u16) -> Option<(String, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if tail.is_empty() => default,
            None => return None,
        };
        return Some((h.to_owned(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h.to_owned(), p.parse().ok()?)),
        None => Some((s.to_owned(), default)),
    }
    .filter(|(h, _)| !h.is_empty())
}

impl Url {
    fn parse(s: &str) -> Result<Url, CliError> {
        let usage = |why: &str| {
            CliError::Usage(format!(
                "{s}: {why} (expected file:///dir, mllp://host:port, http(s)://host/path or sftp://user@host:port/dir)"
            ))
        };
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
            "http" | "https" => {
                let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
                let tls = scheme.eq_ignore_ascii_case("https");
                let (host, port) =
                    host_port(authority, if tls { 443 } else { 80 }).ok_or_else(|| usage("needs a host"))?;
                Ok(Url::Http { url: s.to_owned(), host: format!("{host}:{port}"), tls })
            }
            "sftp" => {
                let (authority, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, ""),
                };
                let (user, hostport) = authority.split_once('@').ok_or_else(|| usage("needs user@host"))?;
                let (host, port) = host_port(hostport, 22).ok_or_else(|| usage("needs a host"))?;
                if user.is_empty() || path.is_empty() {
                    return Err(usage("needs user@host and a directory"));
                }
                Ok(Url::Sftp { user: user.to_owned(), host, port, path: path.to_owned() })
            }
            _ => Err(usage("unknown scheme")),
        }
    }

    fn host(&self) -> String {
        match self {
            Url::File(p) => p.display().to_string(),
            Url::Mllp(h) => h.clone(),
            Url::Http { host, .. } => host.clone(),
            Url::Sftp { user, host, port, .. } => format!("{user}@{host}:{port}"),
        }
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"))
}

fn sftp_config(user: &str, host: &str, port: u16, timeout: Duration, opts: &Opts) -> SftpConfig {
    let ssh = home().join(".ssh");
    let identity = opts.identity.clone().unwrap_or_else(|| {
        let ed = ssh.join("id_ed25519");
        if ed.exists() {
            ed
        } else {
            ssh.join("id_rsa")
        }
    });
    let known_hosts = opts.known_hosts.clone().unwrap_or_else(|| ssh.join("known_hosts"));
    let mut cfg = SftpConfig::new(host, port, user, identity, known_hosts);
    cfg.connect_timeout = timeout;
    cfg.timeout = timeout;
    cfg
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
            if matches!(url, Url::Http { tls: true, .. }) {
                return Err(CliError::Usage(
                    "receive listens on http://host:port only; put a TLS-terminating proxy in front for https".into(),
                ));
            }
            let idle = secs(idle, "idle")?;
            let timeout = secs(opts.timeout, "timeout")?;
            runtime()?.block_on(receive(url, &dir, max, idle, timeout, &opts))
        }
        Cmd::Quarantine(cmd) => quarantine(cmd),
        Cmd::Audit { verify: Some(AuditCmd::Verify { store: arg }), .. } => {
            let store = open_existing(&arg)?;
            match store.verify_audit() {
                Ok(n) => {
                    println!("{}", json!({ "verified": n }));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) if e.kind() == ErrorKind::Tampered => {
                    Err(CliError::Io(format!("{}: audit trail broken: {e}", arg.path.display())))
                }
                Err(e) => Err(CliError::Io(e.to_string())),
            }
        }
        Cmd::Audit { verify: None, args } => audit(args),
        Cmd::Metrics { rules, store } => {
            let rules = rules.rules()?;
            let store = open_existing(&store)?;
            let io = |e: ::transport::Error| CliError::Io(e.to_string());
            let snap = store.snapshot(rules.error_window()).map_err(io)?;
            print!("{}", render_prometheus(&snap, &rules.evaluate(&snap)));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Alerts { rules, store } => {
            let rules = rules.rules()?;
            let store = open_existing(&store)?;
            let alerts = rules.check(store.as_ref()).map_err(|e| CliError::Io(e.to_string()))?;
            for a in &alerts {
                println!(
                    "{}",
                    json!({ "alert": a.kind.as_str(), "subject": a.subject, "value": a.value, "limit": a.limit,
                            "message": a.to_string() })
                );
            }
            Ok(if alerts.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Cmd::Prune { older_than, keep_messages, keep_events, chunk, store } => {
            let mut policy = Retention::new();
            policy.chunk(chunk);
            if let Some(h) = older_than {
                policy.max_age(secs(h * 3600.0, "older-than")?);
            }
            if let Some(n) = keep_messages {
                policy.max_messages(n);
            }
            if let Some(n) = keep_events {
                policy.max_events(n);
            }
            if older_than.is_none() && keep_messages.is_none() && keep_events.is_none() {
                return Err(CliError::Usage("prune: give --older-than, --keep-messages or --keep-events".into()));
            }
            let store = open_existing(&store)?;
            let r = store.prune(&policy).map_err(|e| CliError::Io(e.to_string()))?;
            println!(
                "{}",
                json!({ "messages": r.messages, "events": r.events, "dedup_keys": r.dedup_keys,
                        "quarantine": r.quarantine, "chunks": r.chunks,
                        "checkpoint": r.checkpoint.map(|(seq, hash)| json!({ "seq": seq, "hash": hash })) })
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open_existing(s: &StoreArg) -> Result<Arc<dyn Store>, CliError> {
    if !s.path.is_file() {
        return Err(CliError::Io(format!("{}: no such store", s.path.display())));
    }
    open_store(&s.path)
}

fn time_arg(s: &str, what: &str) -> Result<i64, CliError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_millis()).unwrap_or(0));
    }
    Err(CliError::Usage(format!("--{what} {s}: expected RFC 3339 time, YYYY-MM-DD or milliseconds")))
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

fn event_line(e: &AuditEvent) -> String {
    let mut line =
        format!("{:>6} {} {:<12} {:<3} {}", e.seq, when(e.at), e.kind.as_str(), e.direction.as_str(), e.connection);
    if let Some(m) = e.message_id {
        line.push_str(&format!(" m={m}"));
    }
    if let Some(c) = &e.control_id {
        line.push_str(&format!(" cid={c}"));
    }
    line.push_str(&format!(" {}", e.outcome));
    if let Some(b) = e.byte_count {
        line.push_str(&format!(" bytes={b}"));
    }
    if let Some(h) = &e.content_hash {
        line.push_str(&format!(" sha256={}", &h[..h.len().min(12)]));
    }
    if !e.detail.is_empty() {
        line.push_str(&format!(" {}", e.detail));
    }
    line
}

fn audit(args: AuditArgs) -> Result<ExitCode, CliError> {
    let io = |e: ::transport::Error| CliError::Io(e.to_string());
    let mut q = AuditQuery::new();
    if let Some(s) = &args.since {
        q.from = Some(time_arg(s, "since")?);
    }
    if let Some(u) = &args.until {
        q.to = Some(time_arg(u, "until")?);
    }
    if args.message_id.is_none() && args.control_id.is_none() && args.connection.is_none() {
        return Err(CliError::Usage(
            "audit: give --message-id, --control-id or --connection (or `audit verify`)".into(),
        ));
    }
    let store = open_existing(&args.store)?;
    let events = if let Some(id) = args.message_id {
        // End to end: the events before the message had an id (received,
        // parsed) carry only its control id.
        let mut events = store.audit(&q.clone().message(id)).map_err(io)?;
        let cids: std::collections::BTreeSet<String> = events.iter().filter_map(|e| e.control_id.clone()).collect();
        for cid in cids {
            let before = store.audit(&q.clone().control_id(cid)).map_err(io)?;
            events.extend(before.into_iter().filter(|e| e.message_id.is_none()));
        }
        events.sort_by_key(|e| e.seq);
        events.dedup_by_key(|e| e.seq);
        events
    } else if let Some(cid) = &args.control_id {
        store.audit(&q.control_id(cid.clone())).map_err(io)?
    } else {
        store.audit(&q.connection(args.connection.clone().unwrap_or_default())).map_err(io)?
    };
    for e in &events {
        println!("{}", event_line(e));
    }
    if events.is_empty() {
        eprintln!("labbridge: no audit events match");
    }
    Ok(ExitCode::SUCCESS)
}

fn quarantine(cmd: QuarantineCmd) -> Result<ExitCode, CliError> {
    let io = |e: ::transport::Error| CliError::Io(e.to_string());
    match cmd {
        QuarantineCmd::List { all, store } => {
            let store = open_existing(&store)?;
            for q in store.quarantined(all).map_err(io)? {
                println!(
                    "{}",
                    json!({
                        "id": q.id,
                        "at": when(q.created_at),
                        "connection": q.connection,
                        "message_id": q.message_id,
                        "control_id": q.control_id,
                        "bytes": q.bytes.len(),
                        "reason": q.reason,
                        "released": q.released,
                    })
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        QuarantineCmd::Show { id, store } => {
            let store = open_existing(&store)?;
            let q = store.quarantine_entry(id).map_err(io)?;
            eprintln!(
                "{}",
                json!({
                    "id": q.id,
                    "at": when(q.created_at),
                    "connection": q.connection,
                    "message_id": q.message_id,
                    "control_id": q.control_id,
                    "reason": q.reason,
                    "offset": q.offset,
                    "path": q.path,
                    "bytes": q.bytes.len(),
                    "sha256": ::transport::content_hash(&q.bytes),
                    "released": q.released,
                })
            );
            std::io::Write::write_all(&mut std::io::stdout().lock(), &q.bytes)
                .map_err(|e| CliError::Io(format!("stdout: {e}")))?;
            Ok(ExitCode::SUCCESS)
        }
        QuarantineCmd::Release { id, queue, fixed, store } => {
            let store = open_existing(&store)?;
            let entry = store.quarantine_entry(id).map_err(io)?;
            let queue = match (queue, entry.message_id) {
                (Some(q), _) => q,
                // taken out of a queue: back into it
                (None, Some(_)) => entry.connection.clone(),
                (None, None) => {
                    return Err(CliError::Usage(format!(
                        "quarantine entry {id} was never queued (it came in on {}): give --queue",
                        entry.connection
                    )))
                }
            };
            let fixed = match &fixed {
                Some(p) => Some(std::fs::read(p).map_err(|e| CliError::Io(format!("{}: {e}", p.display())))?),
                None => None,
            };
            let mid = store.release(id, &queue, fixed.as_deref()).map_err(io)?;
            println!("{}", json!({ "released": id, "message_id": mid, "queue": queue }));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn sink_for(
    url: &Url,
    store: &Arc<dyn Store>,
    queue: &str,
    timeout: Duration,
    opts: &Opts,
    stem: &str,
) -> Result<Arc<dyn Sink>, CliError> {
    let attempts = opts.attempts;
    let policy = || {
        RetryPolicy::default()
            .max_attempts(attempts)
            .backoff(Backoff::new(Duration::from_millis(500), Duration::from_secs(30)))
            .on_retry(audit_retries(store.clone(), queue))
    };
    Ok(match url {
        Url::File(dir) => Arc::new(FolderSink::new(dir).naming(format!("{stem}-"), ".hl7")),
        Url::Mllp(addr) => {
            let client = MllpClient::new(
                addr.clone(),
                ClientOptions { connect_timeout: timeout, ack_timeout: timeout, ..ClientOptions::default() },
            );
            Arc::new(Retry::new(AckCheck::new(client, AckPolicy::default()), policy()))
        }
        Url::Http { url, .. } => {
            let auth = opts.token.clone().map(Auth::Bearer).unwrap_or_default();
            let http = HttpOptions { connect_timeout: timeout, timeout, auth, ..HttpOptions::default() };
            let sink = HttpSink::new(url.clone(), http).map_err(|e| CliError::Usage(e.to_string()))?;
            Arc::new(Retry::new(sink, policy()))
        }
        Url::Sftp { user, host, port, path } => {
            let sink = SftpSink::new(sftp_config(user, host, *port, timeout, opts), path.clone())
                .naming(format!("{stem}-"), ".hl7");
            Arc::new(Retry::new(sink, policy()))
        }
    })
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
    let sink = sink_for(&url, &store, queue, timeout, opts, &stem)?;
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

async fn receive(
    url: Url,
    dir: &Path,
    max: Option<u64>,
    idle: Duration,
    timeout: Duration,
    opts: &Opts,
) -> Result<ExitCode, CliError> {
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
        Url::Http { host, .. } => {
            let server_opts = RestServerOptions {
                connection: url.host(),
                tokens: opts.token.iter().cloned().collect(),
                ..RestServerOptions::default()
            };
            Box::new(RestServer::bind(host, server_opts).await.map_err(io)?)
        }
        Url::Sftp { user, host, port, path } => {
            let inbox = InboxOptions::new().connection(url.host()).build();
            Box::new(SftpSource::new(sftp_config(user, host, *port, timeout, opts), path.clone(), inbox))
        }
    };
    let polling = matches!(url, Url::File(_) | Url::Sftp { .. });
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
        Opts { timeout: 5.0, attempts: 1, store: None, token: None, identity: None, known_hosts: None }
    }

    #[test]
    fn urls() {
        assert_eq!(Url::parse("file:///tmp/x").unwrap(), Url::File("/tmp/x".into()));
        assert_eq!(Url::parse("mllp://127.0.0.1:2575").unwrap(), Url::Mllp("127.0.0.1:2575".into()));
        assert_eq!(
            Url::parse("https://emr.example/api/hl7").unwrap(),
            Url::Http { url: "https://emr.example/api/hl7".into(), host: "emr.example:443".into(), tls: true }
        );
        assert_eq!(
            Url::parse("http://127.0.0.1:8080").unwrap(),
            Url::Http { url: "http://127.0.0.1:8080".into(), host: "127.0.0.1:8080".into(), tls: false }
        );
        assert_eq!(
            Url::parse("sftp://lab@emr.example:2222/out/orders").unwrap(),
            Url::Sftp { user: "lab".into(), host: "emr.example".into(), port: 2222, path: "/out/orders".into() }
        );
        assert_eq!(Url::parse("sftp://lab@[::1]/in").unwrap().host(), "lab@::1:22");
        for bad in ["ftp://x", "mllp://host", "nothing", "file://", "sftp://host/dir", "sftp://u@h", "http://:80/x"] {
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

    #[test]
    fn send_and_receive_over_http_with_a_token() {
        let (a, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let with_token = |t: &str| Opts { token: Some(t.into()), ..opts() };
        let dir = c.path().to_owned();
        let listen = format!("http://127.0.0.1:{port}");
        let o = with_token("s3cret");
        let receiver =
            std::thread::spawn(move || run(Cmd::Receive { url: listen, dir, max: Some(2), idle: 20.0, opts: o }));
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(!receiver.is_finished(), "the receiver stopped early");
            std::thread::yield_now();
        }
        let file = a.path().join("orders.hl7");
        std::fs::write(&file, msg("W1")).unwrap();
        let url = format!("http://127.0.0.1:{port}/messages");
        // a wrong token: nothing sent, exit 1 naming the host and the status
        let e = run(Cmd::Send { file: file.display().to_string(), url: url.clone(), opts: with_token("nope") })
            .unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(
            e.to_string().starts_with(&format!("127.0.0.1:{port}: 1 message(s) not sent: queue held: {url}: HTTP 401")),
            "{e}"
        );
        for id in ["W1", "W2"] {
            std::fs::write(&file, msg(id)).unwrap();
            let code =
                run(Cmd::Send { file: file.display().to_string(), url: url.clone(), opts: with_token("s3cret") });
            assert_eq!(code.unwrap(), ExitCode::SUCCESS);
        }
        assert_eq!(receiver.join().unwrap().unwrap(), ExitCode::SUCCESS);
        let mut got: Vec<String> = std::fs::read_dir(c.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "hl7"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, [msg("W1"), msg("W2")]);
        assert_eq!(
            run(Cmd::Receive {
                url: "https://127.0.0.1:1".into(),
                dir: c.path().to_owned(),
                max: None,
                idle: 1.0,
                opts: opts()
            })
            .unwrap_err()
            .exit_code(),
            2
        );
    }

    #[test]
    fn sftp_to_a_closed_port_is_exit_1_naming_the_host() {
        let a = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let file = a.path().join("o.hl7");
        std::fs::write(&file, msg("S1")).unwrap();
        let key = a.path().join("id");
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .output()
            .expect("ssh-keygen (openssh-client, installed by scripts/setup.sh)");
        assert!(out.status.success());
        let o = Opts { identity: Some(key), known_hosts: Some(a.path().join("kh")), ..opts() };
        let url = format!("sftp://lab@127.0.0.1:{port}/in");
        let e = run(Cmd::Send { file: file.display().to_string(), url, opts: o }).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("lab@127.0.0.1:{port}: 1 message(s) not sent: lab@127.0.0.1:{port}")),
            "{text}"
        );
        assert!(text.contains("connect"), "{text}");
    }

    fn store_with_trouble(dir: &Path) -> (PathBuf, SqliteStore) {
        use ::transport::store::{Batch, Entry, NewMessage, Rejected};
        let path = dir.join("lb.db");
        let store = SqliteStore::open(&path, StoreConfig::default()).unwrap();
        let good = NewMessage { bytes: msg("Q1").into(), control_id: Some("Q1".into()), ..Default::default() };
        let bad = Rejected {
            bytes: "MSH|^~\\&|EHR\rOOPS\r".into(),
            reason: "invalid segment name at byte 13".into(),
            control_id: Some("Q2".into()),
            ..Default::default()
        };
        store
            .ingest(&Batch {
                connection: "emr-in".into(),
                queue: "lis".into(),
                entries: vec![Entry::Message(good), Entry::Invalid(bad)],
            })
            .unwrap();
        let id = store.pending("lis", 1).unwrap()[0].id;
        store.quarantine_message(id, "peer answered AE").unwrap();
        (path, store)
    }

    #[test]
    fn quarantine_list_show_release() {
        let d = tempfile::tempdir().unwrap();
        let (path, store) = store_with_trouble(d.path());
        let arg = || StoreArg { path: path.clone() };
        assert_eq!(run(Cmd::Quarantine(QuarantineCmd::List { all: false, store: arg() })).unwrap(), ExitCode::SUCCESS);
        let entries = store.quarantined(false).unwrap();
        assert_eq!(entries.len(), 2);
        let (never_queued, was_queued) = (entries[0].id, entries[1].id);
        assert_eq!(
            run(Cmd::Quarantine(QuarantineCmd::Show { id: was_queued, store: arg() })).unwrap(),
            ExitCode::SUCCESS
        );
        let e = run(Cmd::Quarantine(QuarantineCmd::Show { id: 999, store: arg() })).unwrap_err();
        assert_eq!((e.exit_code(), e.to_string()), (1, "no quarantine entry 999".to_owned()));

        // taken out of a queue: released back into it
        let release = |id, queue: Option<&str>, fixed: Option<PathBuf>| {
            run(Cmd::Quarantine(QuarantineCmd::Release { id, queue: queue.map(str::to_owned), fixed, store: arg() }))
        };
        assert_eq!(release(was_queued, None, None).unwrap(), ExitCode::SUCCESS);
        assert_eq!(store.pending("lis", 10).unwrap()[0].item.meta.control_id.as_deref(), Some("Q1"));
        // never queued: the operator names the queue, and may fix the bytes
        assert_eq!(release(never_queued, None, None).unwrap_err().exit_code(), 2);
        let fixed = d.path().join("fixed.hl7");
        std::fs::write(&fixed, msg("Q2")).unwrap();
        assert_eq!(release(never_queued, Some("lis"), Some(fixed)).unwrap(), ExitCode::SUCCESS);
        let ids: Vec<_> =
            store.pending("lis", 10).unwrap().into_iter().map(|q| q.item.meta.control_id.unwrap()).collect();
        assert_eq!(ids, ["Q1", "Q2"]);
        assert_eq!(release(never_queued, Some("lis"), None).unwrap_err().exit_code(), 1, "released once");
        assert!(store.quarantined(false).unwrap().is_empty());

        let missing = StoreArg { path: d.path().join("nope.db") };
        let e = run(Cmd::Quarantine(QuarantineCmd::List { all: true, store: missing })).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(!d.path().join("nope.db").exists(), "an operator command never creates a store");
    }

    #[test]
    fn audit_trail_and_verify() {
        let d = tempfile::tempdir().unwrap();
        let (path, store) = store_with_trouble(d.path());
        let args = |message_id, control_id: Option<&str>, connection: Option<&str>| AuditArgs {
            message_id,
            control_id: control_id.map(str::to_owned),
            connection: connection.map(str::to_owned),
            since: Some("2000-01-01".into()),
            until: None,
            store: StoreArg { path: path.clone() },
        };
        let verify = || {
            run(Cmd::Audit {
                verify: Some(AuditCmd::Verify { store: StoreArg { path: path.clone() } }),
                args: args(None, None, Some("x")),
            })
        };
        let mid = store.audit(&AuditQuery::new().control_id("Q1")).unwrap().iter().find_map(|e| e.message_id).unwrap();
        for a in [args(Some(mid), None, None), args(None, Some("Q1"), None), args(None, None, Some("lis"))] {
            assert_eq!(run(Cmd::Audit { verify: None, args: a }).unwrap(), ExitCode::SUCCESS);
        }
        assert_eq!(run(Cmd::Audit { verify: None, args: args(None, None, None) }).unwrap_err().exit_code(), 2);
        let mut bad_time = args(None, Some("Q1"), None);
        bad_time.since = Some("yesterday".into());
        assert_eq!(run(Cmd::Audit { verify: None, args: bad_time }).unwrap_err().exit_code(), 2);

        assert_eq!(verify().unwrap(), ExitCode::SUCCESS);
        // someone drops the append-only trigger and edits an outcome
        store.with_connection(|c| {
            c.execute_batch("DROP TRIGGER audit_append_only_update; UPDATE audit SET outcome = 'AA' WHERE seq = 2")
                .unwrap()
        });
        let e = verify().unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.to_string(), format!("{}: audit trail broken: audit event 2 does not verify", path.display()));
    }

    #[test]
    fn metrics_alerts_and_prune() {
        use ::transport::store::{Batch, Entry, NewMessage};
        let d = tempfile::tempdir().unwrap();
        let (path, store) = store_with_trouble(d.path());
        let arg = || StoreArg { path: path.clone() };
        let rules = |error_rate| RuleArgs {
            stuck_after: 900.0,
            error_rate,
            min_attempts: 1,
            window: 900.0,
            silent_after: 3600.0,
        };
        assert_eq!(run(Cmd::Metrics { rules: rules(0.5), store: arg() }).unwrap(), ExitCode::SUCCESS);
        assert_eq!(run(Cmd::Alerts { rules: rules(0.5), store: arg() }).unwrap(), ExitCode::SUCCESS);
        // a delivery attempt fails: 1 of 1 attempts is over 50%
        let m = NewMessage { bytes: msg("Q3").into(), ..Default::default() };
        let id = store
            .ingest(&Batch { connection: "emr-in".into(), queue: "lis".into(), entries: vec![Entry::Message(m)] })
            .unwrap()
            .queued[0];
        store.record_failure(id, "peer down").unwrap();
        assert_eq!(run(Cmd::Alerts { rules: rules(0.5), store: arg() }).unwrap(), ExitCode::from(1));
        assert_eq!(run(Cmd::Alerts { rules: rules(1.5), store: arg() }).unwrap_err().exit_code(), 2);
        let missing = StoreArg { path: d.path().join("nope.db") };
        assert_eq!(run(Cmd::Metrics { rules: rules(0.5), store: missing }).unwrap_err().exit_code(), 1);

        let prune = |keep_events| Cmd::Prune {
            older_than: None,
            keep_messages: None,
            keep_events,
            chunk: 2,
            store: StoreArg { path: path.clone() },
        };
        assert_eq!(run(prune(None)).unwrap_err().exit_code(), 2);
        assert_eq!(run(prune(Some(0))).unwrap(), ExitCode::SUCCESS);
        // Q3 is still queued: its trail stays, and what is left verifies
        assert_eq!(store.audit(&AuditQuery::new().control_id("Q1")).unwrap().len(), 0);
        assert!(!store.audit(&AuditQuery::new().message(id)).unwrap().is_empty());
        assert!(store.verify_audit().is_ok());
    }

    #[test]
    fn time_arguments() {
        assert_eq!(time_arg("1700000000000", "since").unwrap(), 1_700_000_000_000);
        assert_eq!(time_arg("2024-01-17T00:00:00Z", "since").unwrap(), time_arg("2024-01-17", "since").unwrap());
        assert_eq!(when(0), "1970-01-01T00:00:00.000Z");
    }
}
