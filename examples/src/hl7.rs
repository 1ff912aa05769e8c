//! `labbridge hl7 …`: get, json, ack, check.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use hl7_core::ack::{AckBuilder, AckCode};
use hl7_core::{Event, Message, ParseOptions, Path, Reader};
use serde_json::{json, Value};

use crate::CliError;

#[derive(Debug, Subcommand)]
pub(crate) enum Hl7Command {
    /// Print the decoded value at each PATH, one JSON array per message.
    Get {
        /// An HL7 file (one message, a batch, or messages one after another); `-` for stdin.
        file: String,
        /// Terser-style paths: PID-5-1, OBX(2)-5, PID-3(2)-4 ...
        #[arg(required = true)]
        paths: Vec<String>,
        #[command(flatten)]
        opts: InputOpts,
    },
    /// Print each message as a JSON tree of segments, fields, repetitions and components (decoded).
    Json {
        /// An HL7 file; `-` for stdin.
        file: String,
        #[command(flatten)]
        opts: InputOpts,
    },
    /// Print the ACK of each message (ER7, one message after another).
    Ack {
        /// An HL7 file; `-` for stdin.
        file: String,
        /// MSA-1 for messages that parsed (failed messages get AR, or CR for a commit code).
        #[arg(long, value_enum, default_value = "AA")]
        code: Code,
        /// Print the ACK even when MSH-15/16 say not to send one.
        #[arg(long)]
        always: bool,
        #[command(flatten)]
        opts: InputOpts,
    },
    /// Parse every message and report each problem (errors and warnings) with its offset,
    /// line, column and path; exit 1 if there is any.
    Check {
        /// An HL7 file; `-` for stdin.
        file: String,
        #[command(flatten)]
        opts: InputOpts,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[clap(rename_all = "UPPER")]
pub(crate) enum Code {
    Aa,
    Ae,
    Ar,
    Ca,
    Ce,
    Cr,
}

impl From<Code> for AckCode {
    fn from(c: Code) -> AckCode {
        match c {
            Code::Aa => AckCode::AA,
            Code::Ae => AckCode::AE,
            Code::Ar => AckCode::AR,
            Code::Ca => AckCode::CA,
            Code::Ce => AckCode::CE,
            Code::Cr => AckCode::CR,
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct InputOpts {
    /// Character set for messages without MSH-18 (an HL7 table 0211 value such as 8859/1).
    #[arg(long, value_name = "CHARSET")]
    charset: Option<String>,
    /// Character set that overrides MSH-18, for a sender known to mislabel its messages.
    #[arg(long, value_name = "CHARSET")]
    force_charset: Option<String>,
    /// Replace undecodable bytes with U+FFFD instead of failing the message.
    #[arg(long)]
    lenient: bool,
    /// Join a line that cannot start a segment to the field before it (with a warning).
    #[arg(long)]
    join_lines: bool,
}

impl InputOpts {
    fn parse_options(&self) -> Result<ParseOptions, CliError> {
        let mut o = ParseOptions::new();
        let cs = |s: &str| {
            hl7_core::Charset::from_hl7(s).ok_or_else(|| CliError::Usage(format!("unknown character set {s:?}")))
        };
        if let Some(c) = &self.charset {
            o.default_charset(cs(c)?);
        }
        if let Some(c) = &self.force_charset {
            o.force_charset(cs(c)?);
        }
        o.lenient_decoding(self.lenient).join_continuation_lines(self.join_lines);
        Ok(o)
    }
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

pub(crate) fn run(cmd: Hl7Command) -> Result<ExitCode, CliError> {
    match cmd {
        Hl7Command::Get { file, paths, opts } => {
            let paths: Vec<Path> = paths
                .iter()
                .map(|p| p.parse::<Path>().map_err(|e| CliError::Usage(e.to_string())))
                .collect::<Result<_, _>>()?;
            for_each(&file, &opts, |n, m, out, lines| {
                let line = match m {
                    Ok(msg) => {
                        let values: Vec<Value> = paths
                            .iter()
                            .map(|p| {
                                msg.get(p)
                                    .and_then(|e| e.value())
                                    .map_or(Value::Null, |v| Value::String(v.into_owned()))
                            })
                            .collect();
                        Value::Array(values)
                    }
                    Err(e) => json!({ "error": describe(n, e, lines) }),
                };
                writeln!(out, "{line}")
            })
            .map(|o| o.exit_code())
        }
        Hl7Command::Json { file, opts } => for_each(&file, &opts, |n, m, out, lines| {
            let line = match m {
                Ok(msg) => tree(msg),
                Err(e) => json!({ "error": describe(n, e, lines) }),
            };
            writeln!(out, "{line}")
        })
        .map(|o| o.exit_code()),
        Hl7Command::Check { file, opts } => {
            let mut count = 0usize;
            let mut problems = 0usize;
            let outcome = for_each(&file, &opts, |n, m, out, lines| {
                count += 1;
                match m {
                    Ok(msg) => {
                        for w in msg.warnings() {
                            problems += 1;
                            let at = lines.describe(w.offset());
                            writeln!(out, "message {n}: warning: {w}{at}")?;
                        }
                        Ok(())
                    }
                    Err(e) => {
                        problems += 1;
                        writeln!(out, "{}", describe(n, e, lines).replacen(": ", ": error: ", 1))
                    }
                }
            })?;
            problems += outcome.warnings;
            io::stdout().flush().map_err(out_err)?;
            eprintln!("{count} message(s), {problems} problem(s)");
            Ok(ExitCode::from((problems > 0) as u8))
        }
        Hl7Command::Ack { file, code, always, opts } => {
            let code: AckCode = code.into();
            let reject = if code.is_commit() { AckCode::CR } else { AckCode::AR };
            let mut input = Vec::new();
            open(&file)?.read_to_end(&mut input).map_err(|e| CliError::Io(format!("{file}: {e}")))?;
            let parse = opts.parse_options()?;
            let mut failed = false;
            let stdout = io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            let mut n = 0usize;
            let mut events = hl7_core::Messages::with_options(&input, parse);
            while let Some(ev) = events.next_event() {
                let ack = match ev {
                    Event::Message(msg) => AckBuilder::for_message(&msg, code),
                    Event::Invalid(e) => {
                        failed = true;
                        AckBuilder::for_rejected(events.last_raw(), &e, reject)
                    }
                    Event::Warning(w) => {
                        eprintln!("warning: {w}");
                        continue;
                    }
                    _ => continue,
                };
                n += 1;
                if always || ack.required() {
                    out.write_all(ack.build().as_bytes()).map_err(out_err)?;
                    out.write_all(b"\n").map_err(out_err)?;
                } else {
                    eprintln!("message {n}: no ACK requested by MSH-15/16");
                }
            }
            out.flush().map_err(out_err)?;
            Ok(ExitCode::from(failed as u8))
        }
    }
}

/// `message N: <error>`, with line and column when the input is a file.
fn describe(n: usize, e: &hl7_core::Error, lines: &mut Lines) -> String {
    format!("message {n}: {e}{}", lines.describe(e.offset()))
}

/// Line and column of stream offsets, computed on demand by reading the file
/// a second time, forward only (errors arrive in offset order), so a file of
/// any size costs one extra pass at most, and nothing when all is well.
pub(crate) struct Lines {
    src: Option<io::BufReader<File>>,
    pos: u64,
    line: u64,
    line_start: u64,
    prev_cr: bool,
}

impl Lines {
    fn new(file: &str) -> Lines {
        let src = if file == "-" { None } else { File::open(file).ok().map(io::BufReader::new) };
        Lines { src, pos: 0, line: 1, line_start: 0, prev_cr: false }
    }

    /// ` (line L, column C)`, or nothing for standard input.
    fn describe(&mut self, offset: u64) -> String {
        match self.at(offset) {
            Some((l, c)) => format!(" (line {l}, column {c})"),
            None => String::new(),
        }
    }

    fn at(&mut self, offset: u64) -> Option<(u64, u64)> {
        let src = self.src.as_mut()?;
        if offset < self.pos {
            return None;
        }
        let mut buf = [0u8; 64 * 1024];
        while self.pos < offset {
            let want = ((offset - self.pos) as usize).min(buf.len());
            let n = src.read(&mut buf[..want]).ok()?;
            if n == 0 {
                break;
            }
            for (i, &b) in buf[..n].iter().enumerate() {
                let at = self.pos + i as u64;
                if b == b'\n' && self.prev_cr {
                    self.line_start = at + 1;
                } else if b == b'\r' || b == b'\n' {
                    self.line += 1;
                    self.line_start = at + 1;
                }
                self.prev_cr = b == b'\r';
            }
            self.pos += n as u64;
        }
        Some((self.line, offset - self.line_start + 1))
    }
}

/// What a run over a file saw besides the messages.
struct Outcome {
    failed: bool,
    /// Batch warnings (BTS/FTS counts), printed on stderr.
    warnings: usize,
}

impl Outcome {
    fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.failed as u8)
    }
}

/// Runs `f` on every message of `file` in order; batch warnings go to stderr.
fn for_each(
    file: &str,
    opts: &InputOpts,
    mut f: impl FnMut(usize, Result<&Message<'_>, &hl7_core::Error>, &mut dyn Write, &mut Lines) -> io::Result<()>,
) -> Result<Outcome, CliError> {
    let parse = opts.parse_options()?;
    let mut lines = Lines::new(file);
    let mut warnings = 0;
    let mut reader = Reader::with_options(open(file)?, parse);
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut failed = false;
    let mut n = 0usize;
    while let Some(ev) = reader.next_event() {
        match ev {
            Event::Message(m) => {
                n += 1;
                f(n, Ok(&m), &mut out, &mut lines).map_err(out_err)?;
            }
            Event::Invalid(e) => {
                if matches!(e.kind(), hl7_core::ErrorKind::Io(_)) {
                    out.flush().map_err(out_err)?;
                    return Err(CliError::Io(format!("{file}: {e}")));
                }
                n += 1;
                failed = true;
                f(n, Err(&e), &mut out, &mut lines).map_err(out_err)?;
            }
            Event::Warning(w) => {
                warnings += 1;
                eprintln!("warning: {w}{}", lines.describe(w.offset()));
            }
            _ => {}
        }
    }
    out.flush().map_err(out_err)?;
    Ok(Outcome { failed, warnings })
}

/// A message as JSON: segments with their fields; a field is a list of
/// repetitions; a repetition is a string, or a list of components when it has
/// more than one; a component is a string, or a list of subcomponents.
fn tree(msg: &Message<'_>) -> Value {
    let segments: Vec<Value> = msg
        .segments()
        .map(|s| {
            let fields: Vec<Value> = s
                .fields()
                .map(|f| {
                    let reps: Vec<Value> = f
                        .repetitions()
                        .map(|r| {
                            let comps: Vec<Value> = r
                                .components()
                                .map(|c| {
                                    let subs: Vec<Value> =
                                        c.subcomponents().map(|x| Value::String(x.decoded().into_owned())).collect();
                                    collapse(subs)
                                })
                                .collect();
                            collapse(comps)
                        })
                        .collect();
                    if reps.len() == 1 && reps[0] == Value::String(String::new()) {
                        Value::Array(vec![])
                    } else {
                        Value::Array(reps)
                    }
                })
                .collect();
            json!({ "name": s.name(), "fields": fields })
        })
        .collect();
    json!({ "segments": segments })
}

fn collapse(mut v: Vec<Value>) -> Value {
    if v.len() == 1 {
        v.pop().unwrap_or(Value::Null)
    } else {
        Value::Array(v)
    }
}
