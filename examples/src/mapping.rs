//! `labbridge map …` and `labbridge profile check …`: EMR dialects ↔ the lab contract.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use hl7_core::profile::{Kind, Profile};
use hl7_core::{Event, Reader};
use serde_json::{json, Value};

use crate::CliError;

/// `labbridge map FILE --profile PROFILE [--reverse]`.
#[derive(Debug, Args)]
pub(crate) struct MapArgs {
    /// HL7 file (or, with --reverse, a file of contract JSON, one value per line); `-` for stdin.
    file: String,
    /// A base profile name (loi-oml-o21, lri-oru-r01, v23-orm-o01, v23-oru-r01) or a profile file.
    #[arg(long, short)]
    profile: String,
    /// Contract JSON back to HL7 in the profile's dialect.
    #[arg(long)]
    reverse: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProfileCommand {
    /// Run a profile over an EMR's sample messages: missing required fields, unmapped data,
    /// codes without a map entry, and whether each sample round-trips. Exit 1 on any failure.
    Check {
        /// The profile (base name or file).
        profile: String,
        /// Sample HL7 files.
        #[arg(required = true)]
        samples: Vec<String>,
        /// One JSON report per sample instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the base profiles shipped with LabBridge.
    List,
}

fn load(profile: &str) -> Result<Profile, CliError> {
    Profile::load(profile).map_err(|e| CliError::Usage(e.to_string()))
}

fn open(file: &str) -> Result<Box<dyn Read>, CliError> {
    if file == "-" {
        Ok(Box::new(io::stdin().lock()))
    } else {
        File::open(file).map(|f| Box::new(f) as Box<dyn Read>).map_err(|e| CliError::Io(format!("{file}: {e}")))
    }
}

fn out_err(e: io::Error) -> CliError {
    CliError::Io(format!("writing output: {e}"))
}

pub(crate) fn map(args: MapArgs) -> Result<ExitCode, CliError> {
    let profile = load(&args.profile)?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut failed = false;
    if args.reverse {
        let reader = BufReader::new(open(&args.file)?);
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| CliError::Io(format!("{}: {e}", args.file)))?;
            if line.trim().is_empty() {
                continue;
            }
            let written = match profile.kind() {
                Kind::Order => serde_json::from_str(&line)
                    .map_err(|e| e.to_string())
                    .and_then(|o| profile.order_to_hl7(&o).map_err(|e| problems(&e.problems).to_string())),
                Kind::Result => serde_json::from_str(&line)
                    .map_err(|e| e.to_string())
                    .and_then(|r| profile.result_to_hl7(&r).map_err(|e| problems(&e.problems).to_string())),
            };
            match written {
                Ok(hl7) => out.write_all(hl7.as_bytes()).map_err(out_err)?,
                Err(e) => {
                    failed = true;
                    eprintln!("line {}: {e}", i + 1);
                }
            }
        }
        out.flush().map_err(out_err)?;
        return Ok(ExitCode::from(failed as u8));
    }
    let mut reader = Reader::new(open(&args.file)?);
    let mut n = 0usize;
    while let Some(ev) = reader.next_event() {
        let line = match ev {
            Event::Message(msg) => {
                n += 1;
                let mapped = profile.map_value(&msg);
                if mapped.problems.is_empty() {
                    serde_json::to_value(&mapped.value).unwrap_or_default()
                } else {
                    failed = true;
                    json!({
                        "error": format!("message {n}: {} mapping problem(s)", mapped.problems.len()),
                        "problems": problems(&mapped.problems),
                    })
                }
            }
            Event::Invalid(e) => {
                if matches!(e.kind(), hl7_core::ErrorKind::Io(_)) {
                    return Err(CliError::Io(format!("{}: {e}", args.file)));
                }
                n += 1;
                failed = true;
                json!({ "error": format!("message {n}: {e}"), "problems": [] })
            }
            Event::Warning(w) => {
                eprintln!("warning: {w}");
                continue;
            }
            _ => continue,
        };
        writeln!(out, "{line}").map_err(out_err)?;
    }
    out.flush().map_err(out_err)?;
    Ok(ExitCode::from(failed as u8))
}

fn problems(p: &[hl7_core::profile::Problem]) -> Value {
    serde_json::to_value(p).unwrap_or_default()
}

pub(crate) fn profile(cmd: ProfileCommand) -> Result<ExitCode, CliError> {
    match cmd {
        ProfileCommand::List => {
            for name in hl7_core::profile::builtin_names() {
                let p = load(name)?;
                println!(
                    "{name}\t{}\t{} v{}\t{}",
                    format!("{:?}", p.kind()).to_lowercase(),
                    p.message_type(),
                    p.version(),
                    p.description()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ProfileCommand::Check { profile, samples, json } => {
            let profile = load(&profile)?;
            let stdout = io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            let mut failed = 0usize;
            let mut total = 0usize;
            for file in &samples {
                let mut reader = Reader::new(open(file)?);
                let mut n = 0usize;
                while let Some(ev) = reader.next_event() {
                    let report = match ev {
                        Event::Message(msg) => {
                            n += 1;
                            profile.check(&msg, n)
                        }
                        Event::Invalid(e) => {
                            n += 1;
                            hl7_core::profile::SampleReport::unparsable(n, e.to_string())
                        }
                        _ => continue,
                    };
                    total += 1;
                    if !report.passed() {
                        failed += 1;
                    }
                    if json {
                        let mut v = serde_json::to_value(&report).unwrap_or_default();
                        v["file"] = Value::String(file.clone());
                        v["passed"] = Value::Bool(report.passed());
                        writeln!(out, "{v}").map_err(out_err)?;
                        continue;
                    }
                    let id = report.control_id.as_deref().unwrap_or("?");
                    let verdict = if report.passed() { "ok" } else { "FAILED" };
                    writeln!(out, "{file}: message {n} ({id}): {verdict}").map_err(out_err)?;
                    if let Some(e) = &report.parse_error {
                        writeln!(out, "  does not parse: {e}").map_err(out_err)?;
                    }
                    for p in &report.problems {
                        writeln!(out, "  problem: {p}").map_err(out_err)?;
                    }
                    if !report.unmapped.is_empty() {
                        writeln!(out, "  unmapped data (kept as raw segments): {}", report.unmapped.join(", "))
                            .map_err(out_err)?;
                    }
                    if report.parse_error.is_none() && report.problems.is_empty() && !report.round_trips {
                        writeln!(
                            out,
                            "  does not round-trip (HL7 -> contract -> HL7 -> contract differs at: {})",
                            report.round_trip_differs.join(", ")
                        )
                        .map_err(out_err)?;
                    }
                }
            }
            out.flush().map_err(out_err)?;
            eprintln!("{total} sample message(s), {failed} failed");
            Ok(ExitCode::from((failed > 0) as u8))
        }
    }
}
