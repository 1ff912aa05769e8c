//! Shared pieces of the LabBridge benchmarks: where the corpus comes from and
//! what "touch" and "walk" mean, so that every bench target (the criterion
//! benches and the `compare` harness) measures `hl7-core` the same way.
//!
//! The corpus is one file of messages separated by `\n` (segments by `\r`),
//! made by `scripts/gen_corpus.py`. A small one is committed in
//! `testdata/bench/`; `scripts/bench-compare.sh` generates a larger one
//! (10,000 messages) under the target directory, and every bench prefers it
//! when it is there (see [`corpus_path`]).

#![deny(missing_docs)]

use std::path::{Path, PathBuf};

use hl7_core::Message;

/// Environment variable naming a corpus file to use instead of the default.
pub const CORPUS_ENV: &str = "LABBRIDGE_BENCH_CORPUS";

/// File name of the large corpus inside `<target dir>/bench-corpus/`.
pub const LARGE_CORPUS: &str = "c10k.hl7";

/// The committed corpus, relative to the workspace root.
pub const SMALL_CORPUS: &str = "testdata/bench/corpus_300.hl7";

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Directories that may hold `bench-corpus/`: the target directory of the
/// running bench executable (`<target>/<profile>/deps/<exe>`), then
/// `$CARGO_TARGET_DIR`, then `target/` in the workspace.
fn target_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(t) = std::env::current_exe().ok().as_deref().and_then(|e| e.ancestors().nth(3)) {
        dirs.push(t.to_path_buf());
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        let t = PathBuf::from(t);
        dirs.push(if t.is_absolute() { t } else { workspace_root().join(t) });
    }
    dirs.push(workspace_root().join("target"));
    dirs
}

/// The corpus the benches read: `$LABBRIDGE_BENCH_CORPUS` when set, else the
/// generated `bench-corpus/c10k.hl7` in the target directory when present,
/// else the committed [`SMALL_CORPUS`].
pub fn corpus_path() -> PathBuf {
    if let Some(p) = std::env::var_os(CORPUS_ENV) {
        return PathBuf::from(p);
    }
    target_dirs()
        .into_iter()
        .map(|d| d.join("bench-corpus").join(LARGE_CORPUS))
        .find(|p| p.is_file())
        .unwrap_or_else(|| workspace_root().join(SMALL_CORPUS))
}

/// Reads a corpus file.
///
/// # Panics
///
/// When the file cannot be read (a benchmark without its input cannot run).
pub fn read_corpus(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read bench corpus {}: {e}", path.display()))
}

/// The messages of a corpus: split on `\n`, empty lines left out.
pub fn messages(corpus: &[u8]) -> Vec<&[u8]> {
    corpus.split(|&b| b == b'\n').filter(|m| !m.is_empty()).collect()
}

/// Total size of the messages in bytes (what throughput is measured against;
/// the `\n` between messages is not counted).
pub fn total_bytes(msgs: &[&[u8]]) -> u64 {
    msgs.iter().map(|m| m.len() as u64).sum()
}

/// A short label for a corpus file in bench names (`corpus_300`, `c10k`).
pub fn corpus_label(path: &Path) -> String {
    path.file_stem().map_or_else(|| "corpus".to_owned(), |s| s.to_string_lossy().into_owned())
}

/// What a touch or a walk read, so that the work cannot be optimised away
/// and implementations can be compared for doing the same work.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Values read.
    pub values: u64,
    /// Their total length in bytes.
    pub bytes: u64,
}

impl Tally {
    /// Counts one value.
    #[inline]
    pub fn read(&mut self, s: &str) {
        self.values += 1;
        self.bytes += s.len() as u64;
    }
}

/// True for the segments whose field 5 a touch reads.
#[inline]
pub fn touched_segment(name: &str) -> bool {
    name == "PID" || name == "OBX"
}

/// Touch: reads PID-5 and every OBX-5 (raw text), the way an interface
/// engine looks at a few fields of each message.
#[inline]
pub fn touch(msg: &Message<'_>, t: &mut Tally) {
    for seg in msg.segments() {
        if touched_segment(seg.name()) {
            if let Some(f) = seg.field(5) {
                t.read(f.raw());
            }
        }
    }
}

/// Parses every message and visits each parsed one with `visit` ([`touch`]
/// or [`walk`]): the loop the touch, walk and map benches time.
pub fn parse_and_visit(msgs: &[&[u8]], visit: fn(&Message<'_>, &mut Tally)) -> Tally {
    let mut t = Tally::default();
    for m in msgs {
        if let Ok(msg) = Message::parse(std::hint::black_box(m)) {
            visit(&msg, &mut t);
        }
    }
    t
}

/// Walk: visits every leaf (segments, fields, repetitions, components,
/// subcomponents) and reads its raw text.
#[inline]
pub fn walk(msg: &Message<'_>, t: &mut Tally) {
    for seg in msg.segments() {
        for f in seg.fields() {
            for r in f.repetitions() {
                for c in r.components() {
                    for s in c.subcomponents() {
                        t.read(s.raw());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Vec<u8> {
        read_corpus(&workspace_root().join(SMALL_CORPUS))
    }

    #[test]
    fn committed_corpus_parses() {
        let data = small();
        let msgs = messages(&data);
        assert_eq!(msgs.len(), 300);
        let segments: usize = msgs.iter().map(|m| Message::parse(m).unwrap().segment_count()).sum();
        assert_eq!(segments, 5034); // as gen_corpus.py reports
    }

    #[test]
    fn touch_reads_pid5_and_every_obx5() {
        let data = small();
        let mut t = Tally::default();
        for m in messages(&data) {
            touch(&Message::parse(m).unwrap(), &mut t);
        }
        assert_eq!(t.values, 300 + 2816); // one PID per message, 2816 OBX
    }

    #[test]
    fn walk_visits_every_leaf() {
        // Every delimiter after a segment name ends one leaf, and so does
        // every segment end; MSH-1 and MSH-2 are one leaf each although
        // MSH-2 holds the four encoding characters.
        let msg = Message::parse(b"MSH|^~\\&|A|B\rPID|1||X^Y&Z~W||\rNTE").unwrap();
        let mut t = Tally::default();
        walk(&msg, &mut t);
        // MSH: 1, 2, A, B; PID: 1, "", X, Y, Z, W, "", ""; NTE: none.
        assert_eq!(t.values, 12);
        assert_eq!(t.bytes, 1 + 4 + 1 + 1 + 1 + 1 + 1 + 1 + 1);
    }
}
