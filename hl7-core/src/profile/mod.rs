//! Declarative EMR profiles: each EMR's dialect mapped to and from the lab
//! contract ([`LabOrder`], [`LabResult`]) by a short TOML file, not code.
//!
//! # A profile file
//!
//! ```toml
//! name = "acme-ehr"
//! extends = "v23-orm-o01"          # a base profile (by name) or a file next to this one
//!
//! [fields]                         # message-level contract fields
//! client_account = { path = "ZCL-1", required = true }
//! "patient.family_name" = { path = "PID-5-1", transform = ["trim", "upper"] }
//! "patient.birth_date" = { path = "PID-7", date_format = "%m/%d/%Y" }
//!
//! [test]                           # one per order group (ORC/OBR)
//! code = { path = "OBR-4-1", map = "tests" }
//!
//! [aoe]                            # ask-at-order-entry answers of a test
//! source = "nte"                   # "obx" (default) or "nte"
//! when = { path = "NTE-3", prefix = "AOE " }
//! template = "AOE {question_code}: {answer}"
//!
//! [maps.tests]                     # the EMR's codes -> the lab's
//! CBC-ACME = "85025"
//! ```
//!
//! A rule is a [`Path`] string (`"PID-5-1"`) or a table with: `path`, or
//! `template` (`"{PID-5-2} {PID-5-3}"`: concatenation, split back on the
//! way out), or `value` (a constant); `split` + `part` (take the 1-based part
//! of a value split on a separator, e.g. a whole name in one field);
//! `transform` (`trim`, `upper`, `lower`); `date_format` (a chrono format for
//! non-HL7 dates); `map` (a table of `[maps.NAME]`, EMR value → lab value,
//! used backwards on the way out; a map defined in a profile replaces the
//! inherited map of that name); `also` (other paths carrying the same value,
//! e.g. OBR-2 beside ORC-2); `default`; `required`. An empty string
//! (`"patient.phone" = ""`) removes an inherited rule.
//!
//! Scopes: `[fields]` reads the whole message (paths count segments flat, as
//! `labbridge hl7 get` does); `[insurance]` each IN1 group; `[diagnosis]` each
//! DG1; `[test]` (orders) or `[report]` (results) each order group, falling
//! back to the message for segments outside the group; `[aoe]` each
//! ask-at-order-entry OBX (or NTE) of a test, chosen by `when`
//! (`in = [...]`, `in_map = "NAME"`, `prefix = "..."`); `[observation]` each
//! OBX of a report. Each scope may have `constants` (`"PV1-2" = "O"`),
//! written on the way out and recognised on the way in. `[layout]` gives the
//! segment order written per scope.
//!
//! Nothing is dropped: after mapping, every segment holding data that no rule
//! read is kept on the contract value as a
//! [`RawSegment`](crate::contract::RawSegment) (message level, or on the
//! test/report of its order group, with the sub-group it was in: an
//! observation, an AOE answer, a specimen), and the way out starts from those
//! segments, each in its own sub-group, so an HL7 → contract → HL7 →
//! contract round trip is the identity. [`Profile::check`] lists what no
//! rule reads.
//!
//! # Design
//!
//! A profile is compiled once, when it is loaded: every contract field name
//! resolves to a typed setter on the contract struct (so a misspelt field is
//! a load error, not a silent no-op) and every path is parsed. Mapping a
//! message then writes straight into a [`LabOrder`] or [`LabResult`], indexes
//! the fields of a segment once on first use, and records what each rule read
//! per segment, which is how unread data is found without a second profile
//! pass. The contract owns its strings (it outlives the message, crosses
//! threads and goes into stores); that allocation is most of what mapping
//! costs beyond the parse.
//!
//! # Examples
//!
//! ```
//! use hl7_core::{Message, profile::Profile};
//!
//! let profile = Profile::load("v23-orm-o01")?;
//! let msg = Message::parse(b"MSH|^~\\&|EHR|CLINIC|LIS|LAB|20240115083000||ORM^O01|M1|P|2.3\r\
//!     PID|1||PAT1^^^CLINIC^MR||DOE^JANE||19700101|F\r\
//!     ORC|NW|PLC1\rOBR|1|PLC1||85025^CBC^CPT|||20240115080000|||||||||1234567893^HOUSE^GREGORY\r")?;
//! let order = profile.to_order(&msg)?;
//! assert_eq!(order.patient.family_name.as_deref(), Some("DOE"));
//! assert_eq!(order.tests[0].code.as_deref(), Some("85025"));
//! assert_eq!(order.ordering_provider.id.as_deref(), Some("1234567893"));
//! let back = profile.order_to_hl7(&order)?;
//! assert_eq!(profile.to_order(&Message::parse(back.as_bytes())?)?, order);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod check;
mod read;
mod slots;
mod write;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path as FsPath, PathBuf};

use serde::Deserialize;

pub use self::check::SampleReport;
pub use self::read::Mapped;
use self::slots::{Fields, Slot};
use crate::contract::{
    AoeAnswer, Diagnosis, Insurance, LabOrder, LabResult, Observation, OrderedTest, Report, ResultStatus,
};
use crate::Path;

/// Segments that carry a set ID in field 1 (numbering, not data to keep).
const SET_ID: &[&str] = &["PID", "PV1", "IN1", "DG1", "OBR", "OBX", "NTE", "SPM", "NK1", "GT1", "AL1", "TQ1"];

const BUILTIN: &[(&str, &str)] = &[
    ("loi-oml-o21", include_str!("../../profiles/loi-oml-o21.toml")),
    ("v23-orm-o01", include_str!("../../profiles/v23-orm-o01.toml")),
    ("lri-oru-r01", include_str!("../../profiles/lri-oru-r01.toml")),
    ("v23-oru-r01", include_str!("../../profiles/v23-oru-r01.toml")),
];

/// Names of the base profiles shipped with the crate.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(n, _)| *n)
}

/// Whether a profile maps orders or results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// HL7 orders ↔ [`LabOrder`].
    Order,
    /// HL7 results ↔ [`LabResult`].
    Result,
}

// ------------------------------------------------------------------ file format

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RuleSpec {
    Path(String),
    Table(Box<RuleTable>),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleTable {
    path: Option<String>,
    template: Option<String>,
    value: Option<String>,
    map: Option<String>,
    #[serde(default)]
    transform: Vec<String>,
    default: Option<String>,
    #[serde(default)]
    required: bool,
    split: Option<String>,
    part: Option<usize>,
    date_format: Option<String>,
    #[serde(default)]
    also: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ScopeSpec {
    #[serde(default)]
    constants: BTreeMap<String, String>,
    #[serde(flatten)]
    fields: BTreeMap<String, RuleSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CondSpec {
    path: String,
    #[serde(default, rename = "in")]
    values: Vec<String>,
    in_map: Option<String>,
    prefix: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct AoeSpec {
    source: Option<String>,
    when: Option<CondSpec>,
    template: Option<String>,
    #[serde(default)]
    constants: BTreeMap<String, String>,
    #[serde(flatten)]
    fields: BTreeMap<String, RuleSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayoutSpec {
    message: Option<Vec<String>>,
    test: Option<Vec<String>>,
    report: Option<Vec<String>>,
    observation: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    name: Option<String>,
    description: Option<String>,
    extends: Option<String>,
    kind: Option<Kind>,
    message_type: Option<String>,
    version: Option<String>,
    accept_status: Option<Vec<String>>,
    #[serde(default)]
    fields: BTreeMap<String, RuleSpec>,
    #[serde(default)]
    constants: BTreeMap<String, String>,
    insurance: Option<ScopeSpec>,
    diagnosis: Option<ScopeSpec>,
    test: Option<ScopeSpec>,
    report: Option<ScopeSpec>,
    observation: Option<ScopeSpec>,
    aoe: Option<AoeSpec>,
    #[serde(default)]
    maps: BTreeMap<String, BTreeMap<String, String>>,
    layout: Option<LayoutSpec>,
}

fn merge_rules(base: &mut BTreeMap<String, RuleSpec>, over: BTreeMap<String, RuleSpec>) {
    for (k, v) in over {
        base.insert(k, v);
    }
}

fn merge_scope(base: &mut Option<ScopeSpec>, over: Option<ScopeSpec>) {
    if let Some(o) = over {
        let b = base.get_or_insert_with(ScopeSpec::default);
        merge_rules(&mut b.fields, o.fields);
        b.constants.extend(o.constants);
    }
}

impl ProfileFile {
    fn merge(mut self, child: ProfileFile) -> ProfileFile {
        self.name = child.name.or(self.name);
        self.description = child.description.or(self.description);
        self.kind = child.kind.or(self.kind);
        self.message_type = child.message_type.or(self.message_type);
        self.version = child.version.or(self.version);
        self.accept_status = child.accept_status.or(self.accept_status);
        merge_rules(&mut self.fields, child.fields);
        self.constants.extend(child.constants);
        merge_scope(&mut self.insurance, child.insurance);
        merge_scope(&mut self.diagnosis, child.diagnosis);
        merge_scope(&mut self.test, child.test);
        merge_scope(&mut self.report, child.report);
        merge_scope(&mut self.observation, child.observation);
        if let Some(a) = child.aoe {
            let b = self.aoe.get_or_insert_with(AoeSpec::default);
            b.source = a.source.or(b.source.take());
            b.when = a.when.or(b.when.take());
            b.template = a.template.or(b.template.take());
            b.constants.extend(a.constants);
            merge_rules(&mut b.fields, a.fields);
        }
        // A map the child defines is its own vocabulary: it replaces the
        // parent's map of that name rather than adding to it.
        for (name, entries) in child.maps {
            self.maps.insert(name, entries);
        }
        if let Some(l) = child.layout {
            let b = self.layout.get_or_insert_with(LayoutSpec::default);
            b.message = l.message.or(b.message.take());
            b.test = l.test.or(b.test.take());
            b.report = l.report.or(b.report.take());
            b.observation = l.observation.or(b.observation.take());
        }
        self
    }
}

// ------------------------------------------------------------------ errors

/// A profile that cannot be loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The file could not be read.
    #[error("cannot read profile {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The TOML is invalid.
    #[error("invalid profile {name}: {reason}")]
    Syntax {
        /// The profile name or file.
        name: String,
        /// The parser's message (with line and column).
        reason: String,
    },
    /// A rule names an unknown contract field, a bad path or an unknown map.
    #[error("invalid profile {name}: {reason}")]
    Invalid {
        /// The profile name or file.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// `extends` forms a cycle.
    #[error("profile {0} extends itself")]
    Cycle(String),
}

/// What went wrong mapping one value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// A required contract field has no value.
    RequiredMissing,
    /// A code has no entry in the named map.
    UnmappedCode,
    /// A date/time is not valid.
    InvalidDate,
    /// A value is not allowed for the field (a status, a bill-to …).
    InvalidValue,
    /// The message is not of the profile's type.
    WrongMessageType,
}

/// One mapping problem: the contract field, where in the message, and what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// What went wrong.
    pub kind: ProblemKind,
    /// The contract field, e.g. `tests[1].code`.
    pub field: String,
    /// The HL7 location, e.g. `OBR(2)-4-1`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The byte offset of that location, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// A short description.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.field)?;
        match (&self.path, self.offset) {
            (Some(p), Some(o)) => write!(f, " ({p}, byte {o})")?,
            (Some(p), None) => write!(f, " ({p})")?,
            _ => {}
        }
        write!(f, ": {}", self.message)
    }
}

/// All problems of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError {
    /// Every problem found, in message order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [] => write!(f, "mapping failed"),
            [one] => write!(f, "{one}"),
            [first, rest @ ..] => write!(f, "{first} (and {} more problems)", rest.len()),
        }
    }
}

impl std::error::Error for MapError {}

// ------------------------------------------------------------------ compiled profile

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Str,
    Time,
    Status,
    BillTo,
    /// One value per segment occurrence in scope (NTE-3 notes).
    SegList,
    /// One value per repetition of the field (OBX-8 flags).
    RepList,
    /// OBX-5 typed by OBX-2.
    ObsValue,
}

impl<T> Slot<T> {
    fn kind(&self) -> FieldKind {
        match self {
            Slot::Str(_) => FieldKind::Str,
            Slot::Time(_) => FieldKind::Time,
            Slot::Status(_) => FieldKind::Status,
            Slot::BillTo(_) => FieldKind::BillTo,
            Slot::SegList(_) => FieldKind::SegList,
            Slot::RepList(_) => FieldKind::RepList,
            Slot::ObsValue(_) => FieldKind::ObsValue,
        }
    }
}

#[derive(Debug, Clone)]
enum Piece {
    Lit(String),
    Path(Path),
    Field(String),
}

#[derive(Debug, Clone)]
enum Source {
    Path(Path),
    Template(Vec<Piece>),
    Const(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transform {
    Trim,
    Upper,
    Lower,
}

impl Transform {
    /// The text after this transform; borrowed when it can stay so.
    fn apply(self, s: std::borrow::Cow<'_, str>) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        match (self, s) {
            (Transform::Trim, Cow::Borrowed(b)) => Cow::Borrowed(b.trim()),
            (Transform::Trim, Cow::Owned(o)) => Cow::Owned(o.trim().to_owned()),
            (Transform::Upper, s) => Cow::Owned(s.to_uppercase()),
            (Transform::Lower, s) => Cow::Owned(s.to_lowercase()),
        }
    }
}

/// One compiled rule: where a contract field of the scope value `T` comes
/// from, and how its text becomes the value.
#[derive(Debug, Clone)]
struct Rule<T> {
    /// The contract field's dotted name (for problems and the writer).
    field: String,
    /// Where it lives on `T`.
    slot: Slot<T>,
    source: Source,
    map: Option<String>,
    transforms: Vec<Transform>,
    default: Option<String>,
    required: bool,
    split: Option<(String, usize)>,
    date_format: Option<String>,
    /// Other places that carry the same value (OBR-2 beside ORC-2).
    also: Vec<Path>,
}

impl<T> Rule<T> {
    fn kind(&self) -> FieldKind {
        self.slot.kind()
    }
}

#[derive(Debug, Clone)]
struct Scope<T> {
    rules: Vec<Rule<T>>,
    constants: Vec<(Path, String)>,
}

impl<T> Default for Scope<T> {
    fn default() -> Self {
        Scope { rules: Vec::new(), constants: Vec::new() }
    }
}

#[derive(Debug, Clone)]
enum Cond {
    In(Path, Vec<String>),
    InMap(Path, String),
    Prefix(Path, String),
}

#[derive(Debug, Clone)]
struct Aoe {
    from_nte: bool,
    when: Option<Cond>,
    template: Option<Vec<Piece>>,
    scope: Scope<AoeAnswer>,
}

/// A loaded, validated profile.
///
/// Rules are compiled once, when the profile is loaded: each contract field
/// name resolves to a typed setter on the contract struct and each path is
/// parsed, so mapping a message does no name lookups and builds no
/// intermediate tree.
#[derive(Debug, Clone)]
pub struct Profile {
    name: String,
    description: String,
    kind: Kind,
    message_type: String,
    version: String,
    accept_status: Option<Vec<ResultStatus>>,
    /// Message-level rules of an order profile (empty for results).
    order: Scope<LabOrder>,
    /// Message-level rules of a result profile (empty for orders).
    result: Scope<LabResult>,
    insurance: Scope<Insurance>,
    diagnosis: Scope<Diagnosis>,
    test: Scope<OrderedTest>,
    report: Scope<Report>,
    aoe: Option<Aoe>,
    observation: Scope<Observation>,
    maps: BTreeMap<String, BTreeMap<String, String>>,
    layout_message: Vec<String>,
    layout_group: Vec<String>,
    layout_observation: Vec<String>,
    /// The message and group layouts as segment names (sub-scopes
    /// expanded): the order kept segments are listed in.
    flat_message: Vec<String>,
    flat_group: Vec<String>,
}

fn parse_template(t: &str, as_fields: bool) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(Piece::Lit(rest[..open].to_owned()));
        }
        let close = rest[open..].find('}').ok_or_else(|| format!("unclosed {{ in template {t:?}"))? + open;
        let inner = &rest[open + 1..close];
        if as_fields {
            out.push(Piece::Field(inner.to_owned()));
        } else {
            out.push(Piece::Path(inner.parse::<Path>().map_err(|e| e.to_string())?));
        }
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Lit(rest.to_owned()));
    }
    for w in out.windows(2) {
        if !matches!(w[0], Piece::Lit(_)) && !matches!(w[1], Piece::Lit(_)) {
            return Err(format!("template {t:?} needs text between placeholders"));
        }
    }
    Ok(out)
}

fn load_file(spec: &str, base_dir: Option<&FsPath>, seen: &mut Vec<String>) -> Result<ProfileFile, ProfileError> {
    let (text, name, dir) = if let Some((_, t)) = BUILTIN.iter().find(|(n, _)| *n == spec) {
        ((*t).to_owned(), spec.to_owned(), None)
    } else {
        let p: PathBuf = match base_dir {
            Some(d) if FsPath::new(spec).is_relative() => d.join(spec),
            _ => PathBuf::from(spec),
        };
        let text = std::fs::read_to_string(&p)
            .map_err(|e| ProfileError::Io { path: p.display().to_string(), reason: e.to_string() })?;
        (text, p.display().to_string(), p.parent().map(FsPath::to_path_buf))
    };
    if seen.contains(&name) {
        return Err(ProfileError::Cycle(name));
    }
    seen.push(name.clone());
    let file: ProfileFile =
        toml::from_str(&text).map_err(|e| ProfileError::Syntax { name: name.clone(), reason: e.to_string() })?;
    match file.extends.clone() {
        Some(parent) => {
            let base = load_file(&parent, dir.as_deref().or(base_dir), seen)?;
            Ok(base.merge(file))
        }
        None => Ok(file),
    }
}

impl Profile {
    /// Loads a profile by base-profile name (`loi-oml-o21`, `lri-oru-r01`,
    /// `v23-orm-o01`, `v23-oru-r01`) or file path, resolving `extends`.
    ///
    /// # Errors
    ///
    /// A [`ProfileError`] naming the file and what is wrong: unreadable, bad
    /// TOML (with line and column), an unknown contract field, a bad path, an
    /// unknown map, an `extends` cycle.
    pub fn load(name_or_path: &str) -> Result<Profile, ProfileError> {
        let file = load_file(name_or_path, None, &mut Vec::new())?;
        Profile::compile(file, name_or_path)
    }

    /// Loads a profile from TOML text; `extends` may name a base profile or
    /// a file relative to `base_dir`.
    ///
    /// # Errors
    ///
    /// As [`Profile::load`].
    pub fn from_toml(text: &str, base_dir: Option<&FsPath>) -> Result<Profile, ProfileError> {
        let file: ProfileFile =
            toml::from_str(text).map_err(|e| ProfileError::Syntax { name: "<text>".into(), reason: e.to_string() })?;
        let file = match file.extends.clone() {
            Some(parent) => load_file(&parent, base_dir, &mut Vec::new())?.merge(file),
            None => file,
        };
        Profile::compile(file, "<text>")
    }

    fn compile(file: ProfileFile, origin: &str) -> Result<Profile, ProfileError> {
        let name = file.name.clone().unwrap_or_else(|| origin.to_owned());
        let invalid = |reason: String| ProfileError::Invalid { name: name.clone(), reason };
        let kind = file.kind.ok_or_else(|| invalid("no `kind` (order or result)".into()))?;
        let maps = file.maps.clone();
        let spec = |s: &Option<ScopeSpec>| s.clone().unwrap_or_default();
        let ins = spec(&file.insurance);
        let dg = spec(&file.diagnosis);
        let obs = spec(&file.observation);
        let test = spec(&file.test);
        let report = spec(&file.report);
        macro_rules! scope {
            ($label:literal, $rules:expr, $consts:expr) => {
                compile_scope($rules, $consts, &maps).map_err(|r| invalid(format!("[{}] {r}", $label)))
            };
        }
        let (order, result, test, report, observation) = match kind {
            Kind::Order => (
                scope!("fields", &file.fields, &file.constants)?,
                Scope::default(),
                scope!("test", &test.fields, &test.constants)?,
                Scope::default(),
                Scope::default(),
            ),
            Kind::Result => (
                Scope::default(),
                scope!("fields", &file.fields, &file.constants)?,
                Scope::default(),
                scope!("report", &report.fields, &report.constants)?,
                scope!("observation", &obs.fields, &obs.constants)?,
            ),
        };
        let aoe = match (&file.aoe, kind) {
            (Some(a), Kind::Order) => {
                let from_nte = match a.source.as_deref() {
                    None | Some("obx") => false,
                    Some("nte") => true,
                    Some(o) => return Err(invalid(format!("[aoe] source {o:?}: expected obx or nte"))),
                };
                let when = match &a.when {
                    None => None,
                    Some(c) => {
                        let p: Path = c.path.parse().map_err(|e: crate::PathError| invalid(e.to_string()))?;
                        Some(if let Some(m) = &c.in_map {
                            if !maps.contains_key(m) {
                                return Err(invalid(format!("[aoe] when: unknown map {m:?}")));
                            }
                            Cond::InMap(p, m.clone())
                        } else if let Some(pre) = &c.prefix {
                            Cond::Prefix(p, pre.clone())
                        } else {
                            Cond::In(p, c.values.clone())
                        })
                    }
                };
                let template = a.template.as_deref().map(|t| parse_template(t, true)).transpose().map_err(invalid)?;
                if let Some(t) = &template {
                    for piece in t {
                        if let Piece::Field(f) = piece {
                            if AoeAnswer::slot(f).is_none() {
                                return Err(invalid(format!("[aoe] template: unknown field {f:?}")));
                            }
                        }
                    }
                }
                let mut aoe_scope: Scope<AoeAnswer> = scope!("aoe", &a.fields, &a.constants)?;
                if from_nte {
                    // Answers written as notes: rules for OBX (inherited from an
                    // OBX-based profile) do not apply.
                    aoe_scope.rules.retain(|r| matches!(&r.source, Source::Path(p) if p.segment() == "NTE"));
                    aoe_scope.constants.retain(|(p, _)| p.segment() == "NTE");
                }
                Some(Aoe { from_nte, when, template, scope: aoe_scope })
            }
            _ => None,
        };
        let accept_status = match &file.accept_status {
            None => None,
            Some(v) => Some(
                v.iter()
                    .map(|c| {
                        ResultStatus::from_hl7(c).ok_or_else(|| invalid(format!("accept_status: unknown status {c:?}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let layout = file.layout.clone().unwrap_or_default();
        let group_layout = match kind {
            Kind::Order => layout.test,
            Kind::Result => layout.report,
        };
        Ok(Profile {
            description: file.description.clone().unwrap_or_default(),
            kind,
            message_type: file.message_type.clone().ok_or_else(|| invalid("no `message_type`".into()))?,
            version: file.version.clone().unwrap_or_else(|| "2.5.1".into()),
            accept_status,
            order,
            result,
            insurance: scope!("insurance", &ins.fields, &ins.constants)?,
            diagnosis: scope!("diagnosis", &dg.fields, &dg.constants)?,
            test,
            report,
            aoe,
            observation,
            maps,
            layout_message: layout.message.unwrap_or_default(),
            layout_group: group_layout.unwrap_or_default(),
            layout_observation: layout.observation.unwrap_or_else(|| vec!["OBX".into(), "NTE".into()]),
            flat_message: Vec::new(),
            flat_group: Vec::new(),
            name,
        }
        .with_flat_layouts())
    }

    fn with_flat_layouts(mut self) -> Profile {
        self.flat_message = self.flat_layout(&self.layout_message);
        self.flat_group = self.flat_layout(&self.layout_group);
        self
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Orders or results.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// MSH-9 as written (`ORM^O01`).
    pub fn message_type(&self) -> &str {
        &self.message_type
    }

    /// MSH-12 as written.
    pub fn version(&self) -> &str {
        &self.version
    }
}

fn compile_scope<T: Fields>(
    rules: &BTreeMap<String, RuleSpec>,
    consts: &BTreeMap<String, String>,
    maps: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Scope<T>, String> {
    let mut out = Scope::default();
    for (field, spec) in rules {
        let slot = T::slot(field).ok_or_else(|| format!("unknown contract field {field:?}"))?;
        let fk = slot.kind();
        let t = match spec {
            RuleSpec::Path(p) if p.is_empty() => continue,
            RuleSpec::Path(p) => RuleTable { path: Some(p.clone()), ..RuleTable::default() },
            RuleSpec::Table(t) => (**t).clone(),
        };
        if t.path.as_deref() == Some("") {
            continue;
        }
        let source = match (&t.path, &t.template, &t.value) {
            (Some(p), None, None) => Source::Path(p.parse().map_err(|e: crate::PathError| format!("{field}: {e}"))?),
            (None, Some(tpl), None) => {
                Source::Template(parse_template(tpl, false).map_err(|e| format!("{field}: {e}"))?)
            }
            (None, None, Some(v)) => Source::Const(v.clone()),
            _ => return Err(format!("{field}: give exactly one of path, template, value")),
        };
        if matches!(fk, FieldKind::SegList | FieldKind::RepList | FieldKind::ObsValue)
            && !matches!(source, Source::Path(_))
        {
            return Err(format!("{field}: a list or value field needs a path"));
        }
        if let Some(m) = &t.map {
            if !maps.contains_key(m) {
                return Err(format!("{field}: unknown map {m:?}"));
            }
        }
        let transforms = t
            .transform
            .iter()
            .map(|x| match x.as_str() {
                "trim" => Ok(Transform::Trim),
                "upper" => Ok(Transform::Upper),
                "lower" => Ok(Transform::Lower),
                o => Err(format!("{field}: unknown transform {o:?} (trim, upper, lower)")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let split = match (&t.split, t.part) {
            (Some(s), Some(p)) if p >= 1 => Some((s.clone(), p)),
            (None, None) => None,
            _ => return Err(format!("{field}: split needs a separator and a 1-based part")),
        };
        let also = t
            .also
            .iter()
            .map(|p| p.parse::<Path>().map_err(|e| format!("{field}: also: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        out.rules.push(Rule {
            also,
            field: field.clone(),
            slot,
            source,
            map: t.map.clone(),
            transforms,
            default: t.default.clone(),
            required: t.required,
            split,
            date_format: t.date_format.clone(),
        });
    }
    for (p, v) in consts {
        let path: Path = p.parse().map_err(|e: crate::PathError| format!("constant {p}: {e}"))?;
        out.constants.push((path, v.clone()));
    }
    Ok(out)
}
