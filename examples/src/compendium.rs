//! `labbridge compendium …`: import, diff, export, validate-order, ack, sync.
//!
//! A compendium lives in one JSON file (every version, and what each EMR
//! accepted). Wherever a command reads a compendium, `FILE@N` names version
//! N of it (the latest by default); `diff` also reads a tests CSV or a
//! catalog JSON as a version of its own.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::Path as FsPath;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use compendium::mfn::{self, MfkAck, MfnOptions};
use compendium::sync::{sync, Connection};
use compendium::{diff, export, validate, Catalog, Compendium, EmrCodeMap, Importer};
use hl7_core::datetime::Timestamp;
use hl7_core::profile::Profile;
use hl7_core::{Event, Messages};
use serde_json::json;

use crate::CliError;

/// The lab's test compendium: versions, diffs, eDOS exports, order validation.
#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Import the canonical CSV files (or a catalog JSON) as a new version of a compendium file.
    /// All-or-nothing: any bad row and nothing is written, unless --skip-bad-rows.
    Import {
        /// Tests CSV (header code,name,loinc,cpt,specimen,container,volume,storage,turnaround,
        /// price,status,effective_from,replaced_by,aoe), or a catalog .json.
        tests: String,
        /// Panels CSV (header code,name,client_account,price,components).
        #[arg(long)]
        panels: Option<String>,
        /// The compendium file: created, or given a new version.
        #[arg(long)]
        out: String,
        /// Keep the good rows when some are bad (each bad row is still reported).
        #[arg(long)]
        skip_bad_rows: bool,
        /// Who makes the version (default: $USER).
        #[arg(long)]
        author: Option<String>,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Compare two versions: a table of changes, field by field, or one JSON line with --json.
    Diff {
        /// The older: a compendium file (FILE or FILE@N for version N), a catalog .json or a tests .csv.
        old: String,
        /// The newer, the same way.
        new: String,
        /// One line of JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Export a version (or, with --since-version, the changes since an older one).
    Export {
        /// The compendium file: FILE (its latest version) or FILE@N (version N).
        compendium: String,
        /// csv (the tests, or --table panels), json (the catalog, or the diff), mfn (HL7 v2.5.1 eDOS).
        #[arg(long, value_enum)]
        format: Format,
        /// An EMR code map (lab_code,emr_code CSV or JSON): export in that EMR's codes.
        #[arg(long)]
        emr_map: Option<String>,
        /// Only the changes since this version (mfn: MFI-3 UPD; json: the diff).
        #[arg(long)]
        since_version: Option<u32>,
        /// Only the custom panels of these client accounts (comma-separated).
        #[arg(long, value_delimiter = ',')]
        clients: Option<Vec<String>>,
        /// For --format csv: which table.
        #[arg(long, value_enum, default_value = "tests")]
        table: Table,
    },
    /// Validate the orders of an HL7 file against a version: one JSON line per order with its
    /// problems (unknown or discontinued tests, panels of other clients, AOE answers, specimens).
    /// Exit 1 if any order has a problem.
    ValidateOrder {
        /// The compendium file: FILE (its latest version) or FILE@N (version N).
        compendium: String,
        /// HL7 orders; `-` for stdin.
        order: String,
        /// The EMR profile mapping its orders to the lab contract (a base name or a file).
        #[arg(long)]
        profile: String,
        /// The ordering client's account (default: the one each order maps to).
        #[arg(long)]
        client: Option<String>,
    },
    /// Record an EMR's MFK acknowledgements in the compendium file: which EMR accepted which version.
    Ack {
        /// The compendium file.
        compendium: String,
        /// HL7 file of MFK messages; `-` for stdin.
        mfk: String,
        /// The EMR (connection) name.
        #[arg(long)]
        emr: String,
        /// The version acknowledged (default: the one each MFK's MSA-2 names).
        #[arg(long = "for-version", value_name = "N")]
        for_version: Option<u32>,
    },
    /// Write each EMR's update package (its codes, only its changes) from one version to another.
    Sync {
        /// The compendium file, FILE or FILE@N: the version to bring the EMRs to (the latest by default).
        compendium: String,
        /// The version the EMRs have.
        #[arg(long)]
        since_version: u32,
        /// An EMR: NAME, NAME=MAP, NAME:CLIENT,CLIENT or NAME=MAP:CLIENT,CLIENT (repeat for each).
        #[arg(long = "emr", required = true)]
        emrs: Vec<String>,
        /// Directory for the packages (NAME.hl7 each); one JSON summary line per EMR on stdout.
        #[arg(long)]
        out_dir: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Csv,
    Json,
    Mfn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Table {
    Tests,
    Panels,
}

fn read(path: &str) -> Result<Vec<u8>, CliError> {
    if path == "-" {
        let mut buf = Vec::new();
        io::Read::read_to_end(&mut io::stdin().lock(), &mut buf).map_err(|e| CliError::Io(format!("stdin: {e}")))?;
        return Ok(buf);
    }
    fs::read(path).map_err(|e| CliError::Io(format!("{path}: {e}")))
}

fn read_text(path: &str) -> Result<String, CliError> {
    String::from_utf8(read(path)?).map_err(|_| CliError::Io(format!("{path}: not UTF-8")))
}

fn out_err(e: io::Error) -> CliError {
    CliError::Io(format!("writing output: {e}"))
}

fn now() -> Timestamp {
    let t = hl7_core::builder::format_timestamp(&chrono::Local::now().fixed_offset());
    t.parse().unwrap_or_else(|_| Timestamp::date(chrono::Local::now().date_naive()))
}

/// `FILE@N` → (FILE, Some(N)).
fn split_version(spec: &str) -> Result<(&str, Option<u32>), CliError> {
    match spec.rsplit_once('@') {
        Some((file, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            let n = n.parse().map_err(|_| CliError::Usage(format!("bad version in {spec:?}")))?;
            Ok((file, Some(n)))
        }
        _ => Ok((spec, None)),
    }
}

fn load_compendium(file: &str) -> Result<Compendium, CliError> {
    Compendium::from_json(&read_text(file)?).map_err(|e| CliError::Io(format!("{file}: {e}")))
}

/// A version of a compendium file, by `FILE[@N]`.
fn load_version(spec: &str) -> Result<(Compendium, u32), CliError> {
    let (file, n) = split_version(spec)?;
    let c = load_compendium(file)?;
    let latest = c.latest().map(|v| v.number()).ok_or_else(|| CliError::Io(format!("{file}: no version")))?;
    let n = n.unwrap_or(latest);
    if c.version(n).is_none() {
        return Err(CliError::Usage(format!("{file}: no version {n} (latest is {latest})")));
    }
    Ok((c, n))
}

/// A catalog for `diff`: a compendium version, a catalog JSON, or a tests CSV.
fn load_catalog(spec: &str) -> Result<Catalog, CliError> {
    let (file, n) = split_version(spec)?;
    if file.ends_with(".csv") {
        let data = read(file)?;
        return import_or_report(Importer::new().tests_csv(file, &data[..]).finish(), false).map(|(c, _)| c);
    }
    let text = read_text(file)?;
    let is_compendium = serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v.get("versions").is_some());
    if is_compendium || n.is_some() {
        let (c, n) = load_version(spec)?;
        return Ok(c.version(n).map(|v| v.catalog().clone()).unwrap_or_default());
    }
    import_or_report(Importer::new().json(file, &text).finish(), false).map(|(c, _)| c)
}

/// The catalog of an import, every error on stderr; `Err` when rejected.
fn import_or_report(import: compendium::Import, skip: bool) -> Result<(Catalog, usize), CliError> {
    let bad = import.errors().len();
    for e in import.errors() {
        eprintln!("{e}");
    }
    match import.into_catalog(skip) {
        Ok(c) => Ok((c, bad)),
        Err(e) => Err(CliError::Io(e.to_string())),
    }
}

fn load_map(path: &str) -> Result<EmrCodeMap, CliError> {
    let name = FsPath::new(path).file_stem().and_then(|s| s.to_str()).unwrap_or(path).to_owned();
    let map = if path.ends_with(".json") {
        EmrCodeMap::from_json(&name, &read_text(path)?)
    } else {
        EmrCodeMap::from_csv(&name, &read(path)?[..])
    };
    map.map_err(|e| CliError::Io(format!("{path}: {e}")))
}

/// Writes `text` to `path` through a temporary file and a rename, so a
/// reader never sees half a compendium.
fn write_atomic(path: &str, text: &str) -> Result<(), CliError> {
    let tmp = format!("{path}.tmp{}", std::process::id());
    fs::write(&tmp, text).map_err(|e| CliError::Io(format!("{tmp}: {e}")))?;
    fs::rename(&tmp, path).map_err(|e| CliError::Io(format!("{path}: {e}")))
}

pub(crate) fn run(cmd: Cmd) -> Result<ExitCode, CliError> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let code = match cmd {
        Cmd::Import { tests, panels, out: file, skip_bad_rows, author, note } => {
            let mut imp = Importer::new();
            let data = read(&tests)?;
            if tests.ends_with(".json") {
                let text = String::from_utf8(data).map_err(|_| CliError::Io(format!("{tests}: not UTF-8")))?;
                imp.json(&tests, &text);
            } else {
                imp.tests_csv(&tests, &data[..]);
            }
            if let Some(p) = &panels {
                imp.panels_csv(p, &read(p)?[..]);
            }
            let (catalog, bad) = import_or_report(imp.finish(), skip_bad_rows)?;
            let mut c = if FsPath::new(&file).exists() { load_compendium(&file)? } else { Compendium::new() };
            if c.latest().is_some_and(|v| *v.catalog() == catalog) {
                let n = c.latest().map_or(0, |v| v.number());
                eprintln!("no change since version {n}: no new version");
                writeln!(out, "{}", json!({"version": n, "unchanged": true})).map_err(out_err)?;
            } else {
                let author = author.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "labbridge".into());
                let v = c.commit(catalog, author, note, now());
                let line = json!({
                    "version": v.number(),
                    "tests": v.catalog().tests().len(),
                    "panels": v.catalog().panels().len(),
                    "skipped_rows": bad,
                    "out": file,
                });
                write_atomic(&file, &c.to_json())?;
                writeln!(out, "{line}").map_err(out_err)?;
            }
            0
        }
        Cmd::Diff { old, new, json } => {
            let (a, b) = (load_catalog(&old)?, load_catalog(&new)?);
            let mut d = diff(&a, &b);
            if let (Ok((_, Some(x))), Ok((_, Some(y)))) = (split_version(&old), split_version(&new)) {
                d = d.with_versions(x, y);
            }
            if json {
                writeln!(out, "{}", d.to_json()).map_err(out_err)?;
            } else {
                out.write_all(d.to_table().as_bytes()).map_err(out_err)?;
                eprintln!("{}", d.summary());
            }
            0
        }
        Cmd::Export { compendium, format, emr_map, since_version, clients, table } => {
            let (c, n) = load_version(&compendium)?;
            let map = emr_map.as_deref().map(load_map).transpose()?;
            let conn = Connection { name: map.as_ref().map_or("lab", |m| m.name()).to_owned(), map, clients };
            let view = |v: u32| -> Result<Catalog, CliError> {
                let cat = c.version(v).ok_or_else(|| CliError::Usage(format!("no version {v}")))?.catalog();
                conn.view(cat).map_err(|e| CliError::Io(e.to_string()))
            };
            let new = view(n)?;
            let at = c.version(n).map(|v| *v.created_at()).unwrap_or_else(now);
            let opts = MfnOptions {
                receiving_application: conn.map.as_ref().map(|m| m.name().to_owned()),
                ..MfnOptions::default()
            };
            match (format, since_version) {
                (Format::Csv, Some(_)) => {
                    return Err(CliError::Usage("--since-version applies to --format json or mfn".into()))
                }
                (Format::Csv, None) => match table {
                    Table::Tests => export::tests_csv(&new, &mut out),
                    Table::Panels => export::panels_csv(&new, &mut out),
                }
                .map_err(|e| CliError::Io(e.to_string()))?,
                (Format::Json, None) => writeln!(out, "{}", export::json(&new)).map_err(out_err)?,
                (Format::Mfn, None) => {
                    for m in mfn::export_catalog(&new, n, &at, &opts) {
                        writeln!(out, "{}", m.text).map_err(out_err)?;
                    }
                }
                (f, Some(since)) => {
                    let old = view(since)?;
                    let d = diff(&old, &new).with_versions(since, n);
                    if f == Format::Json {
                        writeln!(out, "{}", d.to_json()).map_err(out_err)?;
                    } else {
                        let msgs = mfn::export_diff(&d, &at, &opts);
                        for m in &msgs {
                            writeln!(out, "{}", m.text).map_err(out_err)?;
                        }
                        eprintln!("{} message(s); {}", msgs.len(), d.summary());
                    }
                }
            }
            0
        }
        Cmd::ValidateOrder { compendium, order, profile, client } => {
            let (c, n) = load_version(&compendium)?;
            let catalog = c.version(n).map(|v| v.catalog().clone()).unwrap_or_default();
            let profile = Profile::load(&profile).map_err(|e| CliError::Usage(e.to_string()))?;
            let input = read(&order)?;
            let mut any = false;
            let mut i = 0usize;
            let mut events = Messages::new(&input);
            while let Some(ev) = events.next_event() {
                let line = match ev {
                    Event::Message(msg) => {
                        i += 1;
                        match profile.to_order(&msg) {
                            Ok(o) => {
                                let problems = validate(&o, &catalog, client.as_deref());
                                for p in &problems {
                                    eprintln!("message {i}: {p}");
                                }
                                any |= !problems.is_empty();
                                json!({
                                    "message": i,
                                    "control_id": o.message_control_id,
                                    "placer_order_number": o.placer_order_number,
                                    "problems": problems,
                                })
                            }
                            Err(e) => {
                                any = true;
                                eprintln!("message {i}: {e}");
                                json!({"message": i, "control_id": msg.control_id(), "error": e.to_string()})
                            }
                        }
                    }
                    Event::Invalid(e) => {
                        i += 1;
                        any = true;
                        eprintln!("message {i}: {e}");
                        json!({"message": i, "error": e.to_string()})
                    }
                    _ => continue,
                };
                writeln!(out, "{line}").map_err(out_err)?;
            }
            u8::from(any)
        }
        Cmd::Ack { compendium, mfk, emr, for_version } => {
            let mut c = load_compendium(&compendium)?;
            let input = read(&mfk)?;
            let mut refused = false;
            let mut events = Messages::new(&input);
            while let Some(ev) = events.next_event() {
                let Event::Message(msg) = ev else {
                    if let Event::Invalid(e) = ev {
                        return Err(CliError::Io(format!("{mfk}: {e}")));
                    }
                    continue;
                };
                let ack = MfkAck::from_message(&msg).map_err(|e| CliError::Io(format!("{mfk}: {e}")))?;
                let rec =
                    c.record_ack(&emr, &ack, for_version, now()).map_err(|e| CliError::Io(format!("{mfk}: {e}")))?;
                refused |= !rec.accepted;
                writeln!(out, "{}", serde_json::to_string(rec).unwrap_or_default()).map_err(out_err)?;
            }
            write_atomic(&compendium, &c.to_json())?;
            match c.accepted_version(&emr) {
                Some(v) => eprintln!("{emr} has accepted version {v}"),
                None => eprintln!("{emr} has accepted no version"),
            }
            u8::from(refused)
        }
        Cmd::Sync { compendium, since_version, emrs, out_dir } => {
            let (c, n) = load_version(&compendium)?;
            let mut conns = Vec::new();
            for spec in &emrs {
                let (head, clients) = match spec.split_once(':') {
                    Some((h, cl)) => (h, Some(cl.split(',').map(str::to_owned).collect::<Vec<_>>())),
                    None => (spec.as_str(), None),
                };
                let (name, map) = match head.split_once('=') {
                    Some((name, path)) => (name, Some(load_map(path)?)),
                    None => (head, None),
                };
                if name.is_empty() {
                    return Err(CliError::Usage(format!("--emr {spec:?}: no name")));
                }
                conns.push(Connection { name: name.to_owned(), map, clients });
            }
            let packages =
                sync(&c, since_version, n, &conns, &MfnOptions::default()).map_err(|e| CliError::Io(e.to_string()))?;
            fs::create_dir_all(&out_dir).map_err(|e| CliError::Io(format!("{out_dir}: {e}")))?;
            for p in &packages {
                let path = FsPath::new(&out_dir).join(format!("{}.hl7", p.emr));
                let text: String = p.messages.iter().map(|m| format!("{}\n", m.text)).collect();
                fs::write(&path, text).map_err(|e| CliError::Io(format!("{}: {e}", path.display())))?;
                let line = json!({
                    "emr": p.emr, "from": p.from, "to": p.to, "messages": p.messages.len(),
                    "records": p.messages.iter().map(|m| m.records).sum::<usize>(),
                    "file": path.display().to_string(), "summary": p.summary,
                });
                writeln!(out, "{line}").map_err(out_err)?;
            }
            0
        }
    };
    out.flush().map_err(out_err)?;
    Ok(ExitCode::from(code))
}
