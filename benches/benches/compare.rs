//! Comparison of `hl7-core` with a delimiter-scan reference and the other
//! Rust HL7 v2 crates, in one process, timed the same way for all.
//!
//! Not a criterion bench: it prints one markdown table of MB/s (and the
//! ratios `scripts/bench-compare.sh` ends with). Each implementation runs in
//! three modes over the whole corpus (messages split on `\n` beforehand):
//!
//! - `parse`: the library's parse call only (the result kept alive with `black_box`);
//! - `touch`: parse, then read PID-5 and every OBX-5 through the library's accessors;
//! - `walk`: parse, then visit every leaf value the library exposes.
//!
//! The reference `memchr-scan` counts every delimiter byte with two memchr
//! passes (`memchr3` for `\r | ^`, `memchr2` for `~ &`): roughly what it
//! costs just to look at every delimiter once. The peer code is the one of
//! the shared peer harness (`shared/peerbench/rust`), with errors returned
//! instead of unwrapped: a peer that fails or panics is dropped from the
//! table with a note, never the whole run.
//!
//! Timing: one warm-up run, then the median of `--runs` runs, each the whole
//! corpus, measured in this thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`)
//! so that other processes on a shared machine do not count; wall-clock time
//! when that is not available or with `--wall`.
//!
//! ```text
//! cargo bench -p labbridge-benches --bench compare -- [--corpus FILE] [--runs N] [--warmup N] [--only a,b] [--wall]
//! ```
//!
//! Without `--bench` (which `cargo bench` passes), as under `cargo test
//! --benches`, it is a smoke run: one run of each cell on 20 messages.

use std::hint::black_box;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Instant;

use labbridge_benches::{corpus_path, read_corpus, touched_segment as wanted, Tally};

/// What a run read; compared across implementations in the table.
#[derive(Debug, Default, Clone, Copy)]
struct Check {
    /// Segments the parser reports (must equal the corpus's count).
    segments: u64,
    /// touch: PID-5 + OBX-5 fields read; walk: leaves visited.
    touched: u64,
    /// Sum of the lengths read (raw or decoded, as the library returns them).
    bytes: u64,
}

impl Check {
    #[inline]
    fn read(&mut self, s: &str) {
        self.touched += 1;
        self.bytes += s.len() as u64;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Parse,
    Touch,
    Walk,
}

const MODES: [Mode; 3] = [Mode::Parse, Mode::Touch, Mode::Walk];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Parse => "parse",
            Mode::Touch => "touch",
            Mode::Walk => "walk",
        }
    }
}

type Runner = fn(&[&str], Mode) -> Result<Check, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ours,
    Reference,
    Peer,
}

#[derive(Debug)]
struct Impl {
    name: &'static str,
    /// The package whose version (from Cargo.lock) the table shows.
    package: &'static str,
    kind: Kind,
    modes: &'static [Mode],
    note: &'static str,
    run: Runner,
}

fn err(lib: &str, e: impl std::fmt::Debug) -> String {
    let mut s = format!("{lib}: {e:?}");
    if s.len() > 160 {
        let mut cut = 157;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

// ================================================================ ours and the reference

/// hl7-core: `Message::parse`, then `labbridge_benches::{touch, walk}`.
fn run_hl7_core(msgs: &[&str], mode: Mode) -> Result<Check, String> {
    let mut c = Check::default();
    for m in msgs {
        let msg = hl7_core::Message::parse(m.as_bytes()).map_err(|e| err("hl7-core", e))?;
        c.segments += msg.segment_count() as u64;
        let mut t = Tally::default();
        match mode {
            Mode::Parse => {}
            Mode::Touch => labbridge_benches::touch(&msg, &mut t),
            Mode::Walk => labbridge_benches::walk(&msg, &mut t),
        }
        c.touched += t.values;
        c.bytes += t.bytes;
        black_box(&msg);
    }
    Ok(c)
}

/// Every delimiter byte counted with memchr's SIMD searchers (two passes:
/// memchr3 for `\r | ^`, memchr2 for `~ &`), as the peer harness does.
fn run_memchr(msgs: &[&str], _m: Mode) -> Result<Check, String> {
    let mut c = Check::default();
    for m in msgs {
        let b = m.as_bytes();
        let n3 = memchr::memchr3_iter(b'\r', b'|', b'^', b).count();
        let n2 = memchr::memchr2_iter(b'~', b'&', b).count();
        c.bytes += (n3 + n2) as u64; // delimiter count
        c.segments += memchr::memchr_iter(b'\r', b).count() as u64 + 1;
    }
    Ok(c)
}

// ================================================================ peers

/// hl7-parser: nom-based, eager tree of Vecs holding &str slices down to
/// sub-components.
fn run_hl7_parser(msgs: &[&str], mode: Mode) -> Result<Check, String> {
    let mut c = Check::default();
    for m in msgs {
        let msg = hl7_parser::Message::parse(m).map_err(|e| err("hl7-parser", e))?;
        c.segments += msg.segments.len() as u64;
        match mode {
            Mode::Parse => {}
            Mode::Touch => {
                for seg in msg.segments() {
                    if wanted(seg.name) {
                        if let Some(f) = seg.field(5) {
                            c.read(f.raw_value());
                        }
                    }
                }
            }
            Mode::Walk => {
                for seg in msg.segments() {
                    for f in seg.fields() {
                        for r in f.repeats() {
                            for comp in r.components() {
                                for s in comp.subcomponents() {
                                    c.read(s.raw_value());
                                }
                            }
                        }
                    }
                }
            }
        }
        black_box(&msg);
    }
    Ok(c)
}

/// rust-hl7 (lib `rusthl7`): str::split based, eager Vecs at every level.
fn run_rust_hl7(msgs: &[&str], mode: Mode) -> Result<Check, String> {
    let mut c = Check::default();
    for m in msgs {
        let msg = rusthl7::message::Message::try_from(*m).map_err(|e| err("rust-hl7", e))?;
        c.segments += msg.segments.len() as u64;
        match mode {
            Mode::Parse => {}
            Mode::Touch => {
                for seg in &msg.segments {
                    // fields[0] is the segment name, fields[n] is field n (non-MSH)
                    if wanted(seg.fields[0].source) {
                        if let Some(f) = seg.fields.get(5) {
                            c.read(f.source);
                        }
                    }
                }
            }
            Mode::Walk => {
                for seg in &msg.segments {
                    for f in &seg.fields {
                        for r in &f.subcomponents {
                            for comp in r {
                                for s in comp {
                                    c.read(s);
                                }
                            }
                        }
                    }
                }
            }
        }
        black_box(&msg);
    }
    Ok(c)
}

fn hl7v2_field(c: &mut Check, f: &hl7v2::model::Field) {
    for r in &f.reps {
        for comp in &r.comps {
            for a in &comp.subs {
                if let hl7v2::model::Atom::Text(s) = a {
                    c.read(s);
                }
            }
        }
    }
}

/// hl7v2: eager, owned; every sub-component an owned String, escapes decoded.
fn run_hl7v2(msgs: &[&str], mode: Mode) -> Result<Check, String> {
    let mut c = Check::default();
    for m in msgs {
        let msg = hl7v2::parse(m.as_bytes()).map_err(|e| err("hl7v2", e))?;
        c.segments += msg.segments.len() as u64;
        match mode {
            Mode::Parse => {}
            Mode::Touch => {
                for seg in &msg.segments {
                    if &seg.id == b"PID" || &seg.id == b"OBX" {
                        // fields[0] is field 1 for non-MSH segments
                        if let Some(f) = seg.fields.get(4) {
                            let before = c.touched;
                            hl7v2_field(&mut c, f);
                            c.touched = before + 1;
                        }
                    }
                }
            }
            Mode::Walk => {
                for seg in &msg.segments {
                    for f in &seg.fields {
                        hl7v2_field(&mut c, f);
                    }
                }
            }
        }
        black_box(&msg);
    }
    Ok(c)
}

fn er7_field(c: &mut Check, f: &er7::Field) {
    for r in &f.repetitions {
        for comp in &r.components {
            for s in &comp.subcomponents {
                c.read(&s.raw);
            }
        }
    }
}

fn er7_segment(c: &mut Check, seg: &er7::Segment, mode: Mode) {
    match mode {
        Mode::Parse => {}
        Mode::Touch => {
            if wanted(&seg.name) {
                if let Some(f) = seg.field(5) {
                    let before = c.touched;
                    er7_field(c, f);
                    c.touched = before + 1;
                }
            }
        }
        Mode::Walk => {
            for f in &seg.fields {
                er7_field(c, f);
            }
        }
    }
}

/// er7: eager, owned tree; each sub-component an owned String of raw text.
fn run_er7(msgs: &[&str], mode: Mode) -> Result<Check, String> {
    let mut c = Check::default();
    for m in msgs {
        let msg = er7::parse(m).map_err(|e| err("er7", e))?;
        c.segments += msg.segments.len() as u64;
        for seg in &msg.segments {
            er7_segment(&mut c, seg, mode);
        }
        black_box(&msg);
    }
    Ok(c)
}

/// hl7-2: normalizes a copy of the input, parses it with er7, then detects
/// the version and looks up its dictionary.
fn run_hl7_2(msgs: &[&str], mode: Mode) -> Result<Check, String> {
    let mut c = Check::default();
    for m in msgs {
        let msg = hl7_2::parse(m).map_err(|e| err("hl7-2", e))?;
        for seg in msg.segments() {
            c.segments += 1;
            er7_segment(&mut c, seg, mode);
        }
        black_box(&msg);
    }
    Ok(c)
}

/// hl7-v2: two-level split (segments -> fields); components split on each
/// access; no repetitions, sub-components or escapes.
fn run_hl7_v2(msgs: &[&str], mode: Mode) -> Result<Check, String> {
    let mut c = Check::default();
    for m in msgs {
        let msg = hl7_v2::Hl7Message::parse(m.as_bytes()).map_err(|e| err("hl7-v2", e))?;
        for seg in msg.all_segments() {
            c.segments += 1;
            match mode {
                Mode::Parse => {}
                Mode::Touch => {
                    if wanted(seg.name) {
                        if let Some(f) = seg.field(5) {
                            c.read(f.value());
                        }
                    }
                }
                Mode::Walk => {
                    // the deepest level the API exposes: components, by index
                    for n in 1..=seg.raw_fields().len() {
                        let Some(f) = seg.field(n) else { continue };
                        let mut k = 1;
                        while let Some(comp) = f.component(k) {
                            c.read(comp);
                            k += 1;
                        }
                    }
                }
            }
        }
        black_box(&msg);
    }
    Ok(c)
}

/// hl7-net: owned Strings at every level, structural validation, segments in
/// a HashMap and a re-serialization check, all inside `Message::parse_str`.
fn run_hl7_net(msgs: &[&str], mode: Mode) -> Result<Check, String> {
    fn field(c: &mut Check, f: &hl7_net::Field, enc: &hl7_net::HL7Encoding) {
        if f.has_repetitions {
            for r in &f.repetitions {
                field(c, r, enc);
            }
        } else {
            for comp in &f.components {
                for s in &comp.sub_components {
                    c.read(s.raw(enc).unwrap_or(""));
                }
            }
        }
    }
    let mut c = Check::default();
    for m in msgs {
        let msg = hl7_net::Message::parse_str(*m, false).map_err(|e| err("hl7-net", e))?;
        c.segments += msg.segment_count as u64;
        let enc = &msg.encoding;
        match mode {
            Mode::Parse => {}
            Mode::Touch => {
                for name in ["PID", "OBX"] {
                    for seg in msg.segments_named(name) {
                        // fields[0] is field 1 for non-MSH segments
                        if let Some(f) = seg.fields.get(4) {
                            c.read(f.raw(enc).unwrap_or(""));
                        }
                    }
                }
            }
            Mode::Walk => {
                for seg in msg.segments() {
                    for f in &seg.fields {
                        field(&mut c, f, enc);
                    }
                }
            }
        }
        black_box(&msg);
    }
    Ok(c)
}

/// hl7kit: copies the input into an owned String, then builds a full span tree.
fn run_hl7kit(msgs: &[&str], mode: Mode) -> Result<Check, String> {
    let mut c = Check::default();
    for m in msgs {
        let msg = hl7kit::Message::parse(*m).map_err(|e| err("hl7kit", e))?;
        c.segments += msg.segment_count() as u64;
        match mode {
            Mode::Parse => {}
            Mode::Touch => {
                for seg in msg.segments() {
                    if wanted(seg.name()) {
                        if let Some(f) = seg.field(5) {
                            c.read(f.value());
                        }
                    }
                }
            }
            Mode::Walk => {
                for seg in msg.segments() {
                    for f in seg.fields() {
                        for r in f.repetitions() {
                            for comp in r.components() {
                                for s in comp.subcomponents() {
                                    c.read(s.value());
                                }
                            }
                        }
                    }
                }
            }
        }
        black_box(&msg);
    }
    Ok(c)
}

const ALL: &[Mode] = &MODES;

const IMPLS: &[Impl] = &[
    Impl { name: "hl7-core", package: "hl7-core", kind: Kind::Ours, modes: ALL, note: "", run: run_hl7_core },
    Impl {
        name: "memchr-scan",
        package: "memchr",
        kind: Kind::Reference,
        modes: &[Mode::Parse],
        note: "reference, not a parser: counts the delimiters (memchr3 `\\r|^` + memchr2 `~&`)",
        run: run_memchr,
    },
    Impl { name: "hl7-parser", package: "hl7-parser", kind: Kind::Peer, modes: ALL, note: "", run: run_hl7_parser },
    Impl { name: "rust-hl7", package: "rust-hl7", kind: Kind::Peer, modes: ALL, note: "", run: run_rust_hl7 },
    Impl {
        name: "hl7v2",
        package: "hl7v2",
        kind: Kind::Peer,
        modes: ALL,
        note: "default-features = false; values are decoded owned Strings",
        run: run_hl7v2,
    },
    Impl { name: "hl7-2", package: "hl7-2", kind: Kind::Peer, modes: ALL, note: "", run: run_hl7_2 },
    Impl {
        name: "hl7-v2",
        package: "hl7-v2",
        kind: Kind::Peer,
        modes: ALL,
        note: "walk stops at components (the deepest level its API exposes)",
        run: run_hl7_v2,
    },
    Impl { name: "er7", package: "er7", kind: Kind::Peer, modes: ALL, note: "", run: run_er7 },
    Impl { name: "hl7-net", package: "hl7-net", kind: Kind::Peer, modes: ALL, note: "", run: run_hl7_net },
    Impl { name: "hl7kit", package: "hl7kit", kind: Kind::Peer, modes: ALL, note: "", run: run_hl7kit },
];

// ================================================================ driver

/// The workspace's Cargo.lock, for the versions the table shows.
const CARGO_LOCK: &str = include_str!("../../Cargo.lock");

fn locked_version(package: &str) -> String {
    let needle = format!("name = \"{package}\"\n");
    let versions: Vec<&str> = CARGO_LOCK
        .split("[[package]]")
        .filter(|block| block.trim_start().starts_with(needle.as_str()))
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"')))
        .collect();
    if versions.is_empty() {
        "?".to_owned()
    } else {
        versions.join(", ")
    }
}

/// CPU time of this thread in seconds (`CLOCK_THREAD_CPUTIME_ID`): not
/// inflated by time spent descheduled while other processes run.
fn thread_cpu_s() -> Option<f64> {
    cpu_time::ThreadTime::try_now().ok().map(|t| t.as_duration().as_secs_f64())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

#[derive(Debug)]
struct Options {
    corpus: PathBuf,
    runs: usize,
    warmup: usize,
    only: Option<Vec<String>>,
    wall: bool,
    max_messages: Option<usize>,
}

fn usage() -> ! {
    eprintln!("usage: compare [--corpus FILE] [--runs N] [--warmup N] [--only IMPL,...] [--wall]");
    eprintln!("impls: {}", IMPLS.iter().map(|i| i.name).collect::<Vec<_>>().join(" "));
    std::process::exit(2)
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let mut o = Options {
        corpus: corpus_path(),
        runs: if bench { 5 } else { 1 },
        warmup: if bench { 1 } else { 0 },
        only: None,
        wall: false,
        max_messages: if bench { None } else { Some(20) },
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--bench" => {}
            "--corpus" => o.corpus = PathBuf::from(value()),
            "--runs" => o.runs = value().parse().ok().filter(|&n| n > 0).unwrap_or_else(|| usage()),
            "--warmup" => o.warmup = value().parse().unwrap_or_else(|_| usage()),
            "--only" => o.only = Some(value().split(',').map(str::to_owned).collect()),
            "--wall" => o.wall = true,
            // what the test harness may pass when run under `cargo test --benches`
            s if !s.starts_with("--") || s == "--nocapture" || s == "--quiet" => {}
            _ => usage(),
        }
    }
    o
}

/// The outcome of one (implementation, mode) cell.
#[derive(Debug)]
enum Cell {
    Ok { mb_s: f64, check: Check },
    Failed(String),
    NotRun,
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

/// Warm-up plus timed runs of one cell; the median run in MB/s.
fn measure(imp: &Impl, mode: Mode, msgs: &[&str], bytes: u64, o: &Options, cpu: bool) -> Cell {
    let once = || -> Result<(f64, Check), String> {
        let c0 = if cpu { thread_cpu_s() } else { None };
        let t0 = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| (imp.run)(black_box(msgs), mode)));
        let wall = t0.elapsed().as_secs_f64();
        let secs = match (c0, if cpu { thread_cpu_s() } else { None }) {
            (Some(a), Some(b)) => b - a,
            _ => wall,
        };
        match r {
            Ok(Ok(check)) => Ok((secs, check)),
            Ok(Err(e)) => Err(format!("error: {e}")),
            Err(p) => Err(format!("panicked: {}", panic_text(p.as_ref()))),
        }
    };
    let mut check = Check::default();
    for _ in 0..o.warmup {
        match once() {
            Ok((_, c)) => check = c,
            Err(e) => return Cell::Failed(e),
        }
    }
    let mut times = Vec::with_capacity(o.runs);
    for _ in 0..o.runs {
        match once() {
            Ok((t, c)) => {
                times.push(t.max(1e-9));
                check = c;
            }
            Err(e) => return Cell::Failed(e),
        }
    }
    Cell::Ok { mb_s: bytes as f64 / 1e6 / median(&times), check }
}

fn fmt_rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn main() {
    let o = options();
    let data = read_corpus(&o.corpus);
    let text = match std::str::from_utf8(&data) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: not UTF-8 ({e}); the peers take &str", o.corpus.display());
            std::process::exit(1)
        }
    };
    let mut msgs: Vec<&str> = text.split('\n').filter(|m| !m.is_empty()).collect();
    if let Some(n) = o.max_messages {
        msgs.truncate(n);
    }
    let bytes: u64 = msgs.iter().map(|m| m.len() as u64).sum();
    let corpus_segments: u64 = msgs.iter().map(|m| m.matches('\r').count() as u64 + 1).sum();
    let cpu = !o.wall && thread_cpu_s().is_some();

    // A peer's panic is reported in the table; keep the default hook quiet.
    std::panic::set_hook(Box::new(|_| {}));

    let selected: Vec<&Impl> = IMPLS
        .iter()
        .filter(|i| i.kind == Kind::Ours || o.only.as_ref().is_none_or(|only| only.iter().any(|n| n == i.name)))
        .collect();
    let mut results: Vec<(&Impl, [Cell; 3])> = Vec::new();
    for imp in selected {
        let cells = MODES.map(|mode| {
            if !imp.modes.contains(&mode) {
                return Cell::NotRun;
            }
            let cell = measure(imp, mode, &msgs, bytes, &o, cpu);
            match &cell {
                Cell::Ok { mb_s, check } => eprintln!(
                    "{:>12} {:<5} {:>9} MB/s  segments={} read={} bytes={}",
                    imp.name,
                    mode.name(),
                    fmt_rate(*mb_s),
                    check.segments,
                    check.touched,
                    check.bytes
                ),
                Cell::Failed(e) => eprintln!("{:>12} {:<5} FAILED {e}", imp.name, mode.name()),
                Cell::NotRun => {}
            }
            cell
        });
        results.push((imp, cells));
    }

    // ------------------------------------------------------------ table
    let clock = if cpu { "thread CPU time" } else { "wall-clock time" };
    println!();
    println!("## HL7 v2 throughput, MB/s (higher is better)");
    println!();
    println!(
        "corpus `{}`: {} messages, {:.1} MB, {} segments; median of {} run(s) after {} warm-up, each the whole corpus, {}",
        o.corpus.display(),
        msgs.len(),
        bytes as f64 / 1e6,
        corpus_segments,
        o.runs,
        o.warmup,
        clock
    );
    println!();
    println!("| implementation | version | parse | touch | walk | walk: leaves read |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    let mut notes: Vec<String> = Vec::new();
    for (imp, cells) in &results {
        let name = match imp.kind {
            Kind::Ours => format!("**{}** (LabBridge)", imp.name),
            Kind::Reference => format!("{} (reference)", imp.name),
            Kind::Peer => imp.name.to_owned(),
        };
        let rate = |c: &Cell| match c {
            Cell::Ok { mb_s, .. } => fmt_rate(*mb_s),
            Cell::Failed(_) => "dropped".to_owned(),
            Cell::NotRun => "-".to_owned(),
        };
        let leaves = match &cells[2] {
            Cell::Ok { check, .. } => check.touched.to_string(),
            _ => "-".to_owned(),
        };
        println!(
            "| {name} | {} {} | {} | {} | {} | {leaves} |",
            imp.package,
            locked_version(imp.package),
            rate(&cells[0]),
            rate(&cells[1]),
            rate(&cells[2])
        );
        if !imp.note.is_empty() {
            notes.push(format!("{}: {}", imp.name, imp.note));
        }
        for (mode, cell) in MODES.iter().zip(cells) {
            match cell {
                Cell::Failed(e) => notes.push(format!("{} {}: dropped, {e}", imp.name, mode.name())),
                Cell::Ok { check, .. } if imp.kind != Kind::Reference && check.segments != corpus_segments => notes
                    .push(format!(
                        "{} {}: saw {} segments, the corpus has {corpus_segments}",
                        imp.name,
                        mode.name(),
                        check.segments
                    )),
                _ => {}
            }
        }
    }
    println!();
    for n in &notes {
        println!("- {n}");
    }
    if !notes.is_empty() {
        println!();
    }

    // ------------------------------------------------------------ ratios
    let rate_of = |name: &str, mode: Mode| {
        results.iter().find(|(i, _)| i.name == name).and_then(|(_, cells)| match &cells[mode as usize] {
            Cell::Ok { mb_s, .. } => Some(*mb_s),
            _ => None,
        })
    };
    let fastest_peer = |mode: Mode| {
        results
            .iter()
            .filter(|(i, _)| i.kind == Kind::Peer)
            .filter_map(|(i, cells)| match &cells[mode as usize] {
                Cell::Ok { mb_s, .. } => Some((i.name, *mb_s)),
                _ => None,
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
    };
    let ours = |mode| rate_of("hl7-core", mode);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".to_owned(),
    };
    let (fp, fw) = (fastest_peer(Mode::Parse), fastest_peer(Mode::Walk));
    println!(
        "fastest crate: parse {}, walk {}",
        fp.map_or("none".to_owned(), |(n, r)| format!("{n} ({} MB/s)", fmt_rate(r))),
        fw.map_or("none".to_owned(), |(n, r)| format!("{n} ({} MB/s)", fmt_rate(r)))
    );
    println!("ratio parse/memchr-scan: {}", ratio(ours(Mode::Parse), rate_of("memchr-scan", Mode::Parse)));
    println!("ratio parse/fastest-crate-parse: {}", ratio(ours(Mode::Parse), fp.map(|p| p.1)));
    println!("ratio walk/fastest-crate-walk: {}", ratio(ours(Mode::Walk), fw.map(|p| p.1)));
}
