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
//! read is kept on the contract value as a [`RawSegment`] (message level, or
//! on the test/report of its order group), and the way out starts from those
//! segments, so an HL7 → contract → HL7 → contract round trip is the
//! identity. [`Profile::check`] lists what no rule reads.
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path as FsPath, PathBuf};

use serde::Deserialize;
use serde_json::{json, Map, Value as Json};

use crate::builder::{format_timestamp, new_control_id};
use crate::contract::{LabOrder, LabResult, RawSegment, ResultStatus};
use crate::datetime::{Precision, Timestamp};
use crate::escape;
use crate::lab::LabView;
use crate::message::{Message, Segment};
use crate::{Delimiters, Path};

const BUILTIN: &[(&str, &str)] = &[
    ("loi-oml-o21", include_str!("../profiles/loi-oml-o21.toml")),
    ("v23-orm-o01", include_str!("../profiles/v23-orm-o01.toml")),
    ("lri-oru-r01", include_str!("../profiles/lri-oru-r01.toml")),
    ("v23-oru-r01", include_str!("../profiles/v23-oru-r01.toml")),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ScopeKind {
    Message,
    Insurance,
    Diagnosis,
    Test,
    Aoe,
    Report,
    Observation,
}

const ADDRESS: [&str; 6] = ["street", "other", "city", "state", "zip", "country"];

fn field_kind(kind: Kind, scope: ScopeKind, name: &str) -> Option<FieldKind> {
    use FieldKind::*;
    let strs: &[&str] = match (kind, scope) {
        (_, ScopeKind::Message) => &[
            "message_control_id",
            "sending.application",
            "sending.facility",
            "receiving.application",
            "receiving.facility",
            "placer_order_number",
            "filler_order_number",
            "client_account",
            "patient.id",
            "patient.id_authority",
            "patient.family_name",
            "patient.given_name",
            "patient.middle_name",
            "patient.sex",
            "patient.phone",
            "ordering_provider.id",
            "ordering_provider.family_name",
            "ordering_provider.given_name",
        ],
        (_, ScopeKind::Insurance) => &[
            "payer_id",
            "payer_name",
            "member_id",
            "group_number",
            "subscriber.family_name",
            "subscriber.given_name",
            "subscriber.relationship",
        ],
        (_, ScopeKind::Diagnosis) => &["code", "system", "description"],
        (_, ScopeKind::Test) => {
            &["code", "name", "system", "priority", "specimen.type", "specimen.source", "specimen.container"]
        }
        (_, ScopeKind::Aoe) => &["question_code", "question", "answer"],
        (_, ScopeKind::Report) => {
            &["test.code", "test.name", "test.system", "specimen.type", "specimen.source", "specimen.container"]
        }
        (_, ScopeKind::Observation) => {
            &["code", "name", "system", "value_type", "units", "reference_range", "performing_lab"]
        }
    };
    if strs.contains(&name) {
        return Some(Str);
    }
    if scope == ScopeKind::Message {
        if let Some(rest) = name.strip_prefix("patient.address.") {
            return ADDRESS.contains(&rest).then_some(Str);
        }
        if kind == Kind::Order {
            if let Some(rest) = name.strip_prefix("billing.guarantor.address.") {
                return ADDRESS.contains(&rest).then_some(Str);
            }
            match name {
                "order_control"
                | "billing.guarantor.family_name"
                | "billing.guarantor.given_name"
                | "billing.guarantor.relationship"
                | "billing.guarantor.phone" => return Some(Str),
                "billing.bill_to" => return Some(BillTo),
                "notes" => return Some(SegList),
                _ => {}
            }
        }
    }
    match (scope, name) {
        (ScopeKind::Message, "sent_at" | "patient.birth_date") => Some(Time),
        (ScopeKind::Insurance, "subscriber.birth_date") => Some(Time),
        (ScopeKind::Test, "collected_at") => Some(Time),
        (ScopeKind::Test | ScopeKind::Report | ScopeKind::Observation, "notes") => Some(SegList),
        (ScopeKind::Report, "observed_at" | "reported_at") => Some(Time),
        (ScopeKind::Report | ScopeKind::Observation, "status") => Some(Status),
        (ScopeKind::Observation, "observed_at") => Some(Time),
        (ScopeKind::Observation, "abnormal_flags") => Some(RepList),
        (ScopeKind::Observation, "value") => Some(ObsValue),
        _ => None,
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

#[derive(Debug, Clone)]
struct Rule {
    field: String,
    kind: FieldKind,
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

#[derive(Debug, Clone, Default)]
struct Scope {
    rules: Vec<Rule>,
    constants: Vec<(Path, String)>,
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
    scope: Scope,
}

/// A loaded, validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    name: String,
    description: String,
    kind: Kind,
    message_type: String,
    version: String,
    accept_status: Option<Vec<ResultStatus>>,
    message: Scope,
    insurance: Scope,
    diagnosis: Scope,
    group: Scope,
    aoe: Option<Aoe>,
    observation: Scope,
    maps: BTreeMap<String, BTreeMap<String, String>>,
    layout_message: Vec<String>,
    layout_group: Vec<String>,
    layout_observation: Vec<String>,
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
        let scope = |scope: ScopeKind, rules: &BTreeMap<String, RuleSpec>, consts: &BTreeMap<String, String>| {
            compile_scope(kind, scope, rules, consts, &maps).map_err(|r| invalid(format!("[{scope:?}] {r}")))
        };
        let message = scope(ScopeKind::Message, &file.fields, &file.constants)?;
        let empty = ScopeSpec::default();
        let ins = file.insurance.as_ref().unwrap_or(&empty);
        let dg = file.diagnosis.as_ref().unwrap_or(&empty);
        let obs = file.observation.as_ref().unwrap_or(&empty);
        let (group_kind, group_spec) = match kind {
            Kind::Order => (ScopeKind::Test, file.test.as_ref().unwrap_or(&empty)),
            Kind::Result => (ScopeKind::Report, file.report.as_ref().unwrap_or(&empty)),
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
                            if field_kind(kind, ScopeKind::Aoe, f).is_none() {
                                return Err(invalid(format!("[aoe] template: unknown field {f:?}")));
                            }
                        }
                    }
                }
                let mut aoe_scope = scope(ScopeKind::Aoe, &a.fields, &a.constants)?;
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
            message,
            insurance: scope(ScopeKind::Insurance, &ins.fields, &ins.constants)?,
            diagnosis: scope(ScopeKind::Diagnosis, &dg.fields, &dg.constants)?,
            group: scope(group_kind, &group_spec.fields, &group_spec.constants)?,
            aoe,
            observation: scope(ScopeKind::Observation, &obs.fields, &obs.constants)?,
            maps,
            layout_message: layout.message.unwrap_or_default(),
            layout_group: group_layout.unwrap_or_default(),
            layout_observation: layout.observation.unwrap_or_else(|| vec!["OBX".into(), "NTE".into()]),
            name,
        })
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

fn compile_scope(
    kind: Kind,
    scope: ScopeKind,
    rules: &BTreeMap<String, RuleSpec>,
    consts: &BTreeMap<String, String>,
    maps: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Scope, String> {
    let mut out = Scope::default();
    for (field, spec) in rules {
        let fk = field_kind(kind, scope, field).ok_or_else(|| format!("unknown contract field {field:?}"))?;
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
            kind: fk,
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

// ------------------------------------------------------------------ reading (HL7 -> contract)

/// Leaf key: segment index, field, repetition, component, subcomponent (0 = whole).
type Mark = (usize, u32, u32, u32, u32);

/// What rules read, per segment: a handful of entries each, so a linear scan
/// beats hashing.
#[derive(Debug, Default)]
struct Marks {
    by_segment: Vec<Vec<[u32; 4]>>,
}

impl Marks {
    fn insert(&mut self, m: Mark) {
        if self.by_segment.len() <= m.0 {
            self.by_segment.resize_with(m.0 + 1, Vec::new);
        }
        let key = [m.1, m.2, m.3, m.4];
        let v = &mut self.by_segment[m.0];
        if !v.contains(&key) {
            v.push(key);
        }
    }

    fn contains(&self, m: &Mark) -> bool {
        self.by_segment.get(m.0).is_some_and(|v| v.contains(&[m.1, m.2, m.3, m.4]))
    }

    fn any_for(&self, seg: usize) -> &[[u32; 4]] {
        self.by_segment.get(seg).map_or(&[], Vec::as_slice)
    }
}

const SET_ID: &[&str] = &["PID", "PV1", "IN1", "DG1", "OBR", "OBX", "NTE", "SPM", "NK1", "GT1", "AL1", "TQ1"];

struct Reader<'p, 'm> {
    profile: &'p Profile,
    _msg: std::marker::PhantomData<&'m ()>,
    marks: Marks,
    problems: Vec<Problem>,
    /// Name every unread location (for `check`), not only keep the segments.
    want_unread: bool,
}

/// Segments a scope reads from, with a parent to fall back on.
struct Ctx<'c, 'm> {
    /// Where single values are looked up.
    segs: Vec<Segment<'m>>,
    /// The scope's own segments, for list fields (notes).
    own: Vec<Segment<'m>>,
    parent: Option<&'c Ctx<'c, 'm>>,
    /// Prefix of contract fields in this scope, e.g. `tests[1].`.
    prefix: String,
}

impl<'c, 'm> Ctx<'c, 'm> {
    fn find(&self, path: &Path) -> Option<Segment<'m>> {
        let occ = path.occurrence() as usize;
        let found = self.segs.iter().filter(|s| s.name() == path.segment()).nth(occ - 1).copied();
        found.or_else(|| self.parent.and_then(|p| p.find_own(path)))
    }

    /// Looks in the scope's own segments only: a group falling back on the
    /// message must not find another group's segments.
    fn find_own(&self, path: &Path) -> Option<Segment<'m>> {
        let occ = path.occurrence() as usize;
        let found = self.own.iter().filter(|s| s.name() == path.segment()).nth(occ - 1).copied();
        found.or_else(|| self.parent.and_then(|p| p.find_own(path)))
    }
}

/// Where a value was read; the path is rendered only if a problem needs it.
struct Located<'m> {
    text: Option<String>,
    loc: Option<(Option<Segment<'m>>, Path)>,
    offset: Option<u64>,
}

impl Located<'_> {
    fn nowhere() -> Self {
        Located { text: None, loc: None, offset: None }
    }

    fn path_string(&self) -> Option<String> {
        self.loc.as_ref().map(|(seg, p)| match seg {
            Some(seg) => seg_path_of(seg, p),
            None => p.to_string(),
        })
    }
}

fn seg_path_of(seg: &Segment<'_>, path: &Path) -> String {
    let mut p = seg.path();
    if let Some(f) = path.field() {
        p = p.at_field(f);
    }
    let mut s = p.to_string();
    if path.repetition() != 1 {
        s.push_str(&format!("({})", path.repetition()));
    }
    if let Some(c) = path.component() {
        s.push_str(&format!("-{c}"));
        if let Some(sc) = path.subcomponent() {
            s.push_str(&format!("-{sc}"));
        }
    }
    s
}

/// The element of `seg` at the field/repetition/component/subcomponent of `path`.
fn element<'m>(seg: &Segment<'m>, path: &Path) -> Option<crate::Element<'m>> {
    let f = seg.field(path.field()? as usize)?;
    let r = f.repetition(path.repetition() as usize)?;
    let Some(c) = path.component() else {
        return Some(crate::Element::from_repetition(r));
    };
    let comp = r.component(c as usize)?;
    let Some(s) = path.subcomponent() else {
        return Some(crate::Element::from_component(comp));
    };
    comp.subcomponent(s as usize).map(crate::Element::from_subcomponent)
}

/// `path`, extended to the first leaf when it stops at an element with children.
fn leaf_path(seg: &Segment<'_>, path: &Path) -> Path {
    let Some(el) = element(seg, path) else { return path.clone() };
    if !el.has_children() || (seg.name() == "MSH" && path.field().is_some_and(|f| f <= 2)) {
        return path.clone();
    }
    match (path.component(), path.subcomponent()) {
        (None, _) => {
            let p = path.clone().with_component(1).unwrap_or_else(|_| path.clone());
            leaf_path(seg, &p)
        }
        (Some(_), None) => path.clone().with_subcomponent(1).unwrap_or_else(|_| path.clone()),
        _ => path.clone(),
    }
}

fn mark_of(seg: &Segment<'_>, path: &Path) -> Mark {
    (
        seg.index(),
        path.field().unwrap_or(0),
        if path.field().is_some() { path.repetition() } else { 0 },
        path.component().unwrap_or(0),
        path.subcomponent().unwrap_or(0),
    )
}

impl<'p, 'm> Reader<'p, 'm> {
    fn locate(&mut self, ctx: &Ctx<'_, 'm>, path: &Path) -> Located<'m> {
        match ctx.find(path) {
            None => Located { text: None, loc: Some((None, path.clone())), offset: None },
            Some(seg) => {
                // A string is a leaf: a path that stops at a composite reads
                // its first leaf, and the rest stays unread (kept raw).
                let leaf = leaf_path(&seg, path);
                let path = &leaf;
                let el = element(&seg, path);
                let mut mark = mark_of(&seg, path);
                if path.field().is_some() && path.component().is_none() && path.repetition() == 1 {
                    // a whole field read reads every repetition only if it has one
                    if seg.field(path.field().unwrap_or(0) as usize).is_some_and(|f| f.repetitions().count() == 1) {
                        mark.2 = 0;
                    }
                }
                self.marks.insert(mark);
                Located {
                    text: el.and_then(|e| e.value()).map(|v| v.into_owned()),
                    loc: Some((Some(seg), path.clone())),
                    offset: el.map(|e| e.offset()).or(Some(seg.offset())),
                }
            }
        }
    }

    /// MSH-9, MSH-11 and MSH-12 are what the profile writes; reading them is
    /// recognising the message, not data to keep.
    fn mark_structure(&mut self, msg: &Message<'_>, profile: &Profile) {
        let msh = msg.msh();
        let idx = msh.index();
        let (code, trigger, structure) = msg.message_type();
        let want: Vec<&str> = profile.message_type.split('^').collect();
        if want.first() == Some(&code)
            && want.get(1) == Some(&trigger)
            && (structure.is_empty() || want.get(2) == Some(&structure))
        {
            self.marks.insert((idx, 9, 0, 0, 0));
        }
        if msh.field(11).is_some_and(|f| f.raw() == "P") {
            self.marks.insert((idx, 11, 0, 0, 0));
        }
        if msg.version() == Some(profile.version.as_str()) {
            self.marks.insert((idx, 12, 0, 0, 0));
        }
    }

    fn problem(&mut self, kind: ProblemKind, field: String, at: &Located<'_>, message: String) {
        self.problems.push(Problem { kind, field, path: at.path_string(), offset: at.offset, message });
    }

    /// The string value of a rule, after split, transforms, map and default.
    fn rule_text(&mut self, ctx: &Ctx<'_, 'm>, rule: &Rule) -> (Option<String>, Located<'m>) {
        let (text, at) = match &rule.source {
            Source::Path(p) => {
                let at = self.locate(ctx, p);
                (at.text.clone(), at)
            }
            Source::Const(v) => (Some(v.clone()), Located::nowhere()),
            Source::Template(pieces) => {
                let mut s = String::new();
                let mut any = false;
                let mut first: Option<Located<'m>> = None;
                for piece in pieces {
                    match piece {
                        Piece::Lit(l) => s.push_str(l),
                        Piece::Path(p) => {
                            let at = self.locate(ctx, p);
                            if let Some(t) = &at.text {
                                any = true;
                                s.push_str(t);
                            }
                            first.get_or_insert(at);
                        }
                        Piece::Field(_) => {}
                    }
                }
                (any.then_some(s), first.unwrap_or_else(Located::nowhere))
            }
        };
        let mut text = text;
        if let (Some(t), Some((sep, part))) = (&text, &rule.split) {
            text = t.split(sep.as_str()).nth(part - 1).map(|p| p.trim().to_owned()).filter(|p| !p.is_empty());
        }
        if let Some(t) = &mut text {
            for tr in &rule.transforms {
                *t = match tr {
                    Transform::Trim => t.trim().to_owned(),
                    Transform::Upper => t.to_uppercase(),
                    Transform::Lower => t.to_lowercase(),
                };
            }
            if t.is_empty() {
                text = None;
            }
        }
        if let (Some(t), Some(m)) = (&text, &rule.map) {
            match self.profile.maps.get(m).and_then(|map| map.get(t)) {
                Some(v) => text = Some(v.clone()),
                None => {
                    let msg = format!("code {t:?} has no entry in map {m}");
                    self.problem(ProblemKind::UnmappedCode, format!("{}{}", ctx.prefix, rule.field), &at, msg);
                }
            }
        }
        if text.is_none() {
            text = rule.default.clone();
        }
        (text, at)
    }

    fn apply(&mut self, ctx: &Ctx<'_, 'm>, scope: &Scope, out: &mut Json, skip: &HashSet<usize>) {
        for (path, value) in &scope.constants {
            if let Some(seg) = ctx.find(path) {
                let el = element(&seg, path).and_then(|e| e.value()).map(|v| v.into_owned());
                if el.as_deref() == Some(value.as_str()) || (value.is_empty() && el.is_none()) {
                    self.marks.insert(mark_of(&seg, path));
                }
            }
        }
        for rule in &scope.rules {
            let field = || format!("{}{}", ctx.prefix, rule.field);
            let value = match rule.kind {
                FieldKind::SegList => {
                    let Source::Path(p) = &rule.source else { continue };
                    let mut items = Vec::new();
                    for seg in ctx.own.iter().filter(|s| s.name() == p.segment() && !skip.contains(&s.index())) {
                        self.marks.insert(mark_of(seg, p));
                        if let Some(v) = element(seg, p).and_then(|e| e.value()) {
                            items.push(Json::String(v.into_owned()));
                        }
                    }
                    (!items.is_empty()).then_some(Json::Array(items))
                }
                FieldKind::RepList => {
                    let Source::Path(p) = &rule.source else { continue };
                    let Some(seg) = ctx.find(p) else { continue };
                    let Some(f) = seg.field(p.field().unwrap_or(0) as usize) else { continue };
                    self.marks.insert((seg.index(), p.field().unwrap_or(0), 0, 0, 0));
                    let items: Vec<Json> = f
                        .repetitions()
                        .filter_map(|r| crate::Element::from_repetition(r).value())
                        .map(|v| Json::String(v.into_owned()))
                        .collect();
                    (!items.is_empty()).then_some(Json::Array(items))
                }
                FieldKind::ObsValue => {
                    let Source::Path(p) = &rule.source else { continue };
                    let Some(seg) = ctx.find(p) else { continue };
                    self.marks.insert((seg.index(), p.field().unwrap_or(0), 0, 0, 0));
                    let vt = seg.field(2).map(|f| f.raw().to_owned()).unwrap_or_default();
                    seg.field(p.field().unwrap_or(5) as usize).and_then(|f| obs_value(&f, &vt))
                }
                _ => {
                    let before = self.problems.len();
                    let (text, at) = self.rule_text(ctx, rule);
                    for p in &rule.also {
                        for seg in ctx.segs.iter().filter(|s| s.name() == p.segment()) {
                            let v = element(seg, p).and_then(|e| e.value()).map(|v| v.into_owned());
                            if v.is_some() && v == at.text {
                                self.marks.insert(mark_of(seg, p));
                            }
                        }
                    }
                    let value = match text {
                        None => None,
                        Some(t) => self.typed(rule, &ctx.prefix, t, &at),
                    };
                    if value.is_none() && self.problems.len() > before {
                        continue; // already reported, more precisely
                    }
                    value
                }
            };
            match value {
                Some(v) => set_json(out, &rule.field, v),
                None if rule.required => {
                    let at = match &rule.source {
                        Source::Path(p) => Located { text: None, loc: Some((None, p.clone())), offset: None },
                        _ => Located::nowhere(),
                    };
                    self.problem(ProblemKind::RequiredMissing, field(), &at, "required field is missing".into());
                }
                None => {}
            }
        }
    }

    fn typed(&mut self, rule: &Rule, prefix: &str, t: String, at: &Located<'_>) -> Option<Json> {
        if rule.kind == FieldKind::Str {
            return Some(Json::String(t));
        }
        let field = format!("{prefix}{}", rule.field);
        let field = field.as_str();
        match rule.kind {
            FieldKind::Str => Some(Json::String(t)),
            FieldKind::Time => {
                let parsed = match &rule.date_format {
                    Some(fmt) => parse_with_format(&t, fmt),
                    None => Timestamp::parse_hl7(&t).ok(),
                };
                match parsed {
                    Some(ts) => Some(Json::String(ts.to_iso())),
                    None => {
                        self.problem(ProblemKind::InvalidDate, field.into(), at, format!("invalid date/time {t:?}"));
                        None
                    }
                }
            }
            FieldKind::Status => match ResultStatus::from_hl7(&t) {
                Some(s) if self.profile.accept_status.as_ref().is_none_or(|a| a.contains(&s)) => {
                    serde_json::to_value(s).ok()
                }
                Some(_) => {
                    self.problem(
                        ProblemKind::InvalidValue,
                        field.into(),
                        at,
                        format!("status {t:?} is not accepted by this profile"),
                    );
                    None
                }
                None => {
                    self.problem(ProblemKind::InvalidValue, field.into(), at, format!("unknown result status {t:?}"));
                    None
                }
            },
            FieldKind::BillTo => match t.as_str() {
                "client" | "patient" | "insurance" => Some(Json::String(t)),
                _ => {
                    self.problem(
                        ProblemKind::InvalidValue,
                        field.into(),
                        at,
                        format!("bill-to {t:?} is not client, patient or insurance"),
                    );
                    None
                }
            },
            _ => None,
        }
    }

    /// Segments with data no rule read, as raw segments with scope-relative paths.
    fn unread(&self, segs: &[Segment<'m>]) -> (Vec<RawSegment>, Vec<String>) {
        let mut raws = Vec::new();
        let mut paths = Vec::new();
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for seg in segs {
            let occ = {
                let c = counts.entry(seg.name()).or_insert(0);
                *c += 1;
                *c
            };
            let idx = seg.index();
            let is_msh = seg.name() == "MSH";
            let set_id = SET_ID.contains(&seg.name());
            let read = self.marks.any_for(idx);
            let mut missing = Vec::new();
            let mut seg_path: Option<String> = None;
            for (fi, f) in seg.fields().enumerate() {
                let fno = fi as u32 + 1;
                if (is_msh && fno <= 2) || (set_id && fno == 1) || f.is_empty() {
                    continue;
                }
                if !read.iter().any(|m| m[0] == fno) {
                    // nothing of this field was read: the whole field is unread
                    if !self.want_unread {
                        missing.push(String::new());
                        break;
                    }
                    let p = seg_path.get_or_insert_with(|| seg.path().to_string());
                    missing.push(format!("{p}-{fno}"));
                    continue;
                }
                if self.marks.contains(&(idx, fno, 0, 0, 0)) {
                    continue;
                }
                for (ri, r) in f.repetitions().enumerate() {
                    let rno = ri as u32 + 1;
                    if self.marks.contains(&(idx, fno, rno, 0, 0)) {
                        continue;
                    }
                    for (ci, c) in r.components().enumerate() {
                        let cno = ci as u32 + 1;
                        if self.marks.contains(&(idx, fno, rno, cno, 0)) {
                            continue;
                        }
                        for (si, s) in c.subcomponents().enumerate() {
                            let sno = si as u32 + 1;
                            if s.is_empty() || self.marks.contains(&(idx, fno, rno, cno, sno)) {
                                continue;
                            }
                            if !self.want_unread {
                                missing.push(String::new());
                                break;
                            }
                            let sp = seg_path.get_or_insert_with(|| seg.path().to_string());
                            let mut p = format!("{sp}-{fno}");
                            if rno > 1 {
                                p.push_str(&format!("({rno})"));
                            }
                            if r.has_children() {
                                p.push_str(&format!("-{cno}"));
                                if c.has_children() {
                                    p.push_str(&format!("-{sno}"));
                                }
                            }
                            missing.push(p);
                        }
                    }
                }
            }
            if !missing.is_empty() {
                let path = if occ == 1 { seg.name().to_owned() } else { format!("{}({occ})", seg.name()) };
                raws.push(RawSegment { path, text: seg.raw().to_owned() });
                paths.extend(missing);
            }
        }
        (raws, paths)
    }
}

fn parse_with_format(t: &str, fmt: &str) -> Option<Timestamp> {
    use chrono::{NaiveDate, NaiveDateTime};
    if fmt.contains("%H") {
        let dt = NaiveDateTime::parse_from_str(t, fmt).ok()?;
        let p = if fmt.contains("%S") { Precision::Second } else { Precision::Minute };
        Some(Timestamp::new(dt, p, None))
    } else {
        NaiveDate::parse_from_str(t, fmt).ok().map(Timestamp::date)
    }
}

fn obs_value(f: &crate::Field<'_>, value_type: &str) -> Option<Json> {
    if f.is_empty() {
        return None;
    }
    if f.repetitions().count() > 1 {
        return Some(json!({"type": "raw", "text": f.raw()}));
    }
    let comp =
        |n: usize| f.component(n).and_then(|c| crate::Element::from_component(c).value()).map(|v| v.into_owned());
    let opt = |v: Option<String>| v.map_or(Json::Null, Json::String);
    let mut v = match value_type {
        "NM" if !f.has_children() => json!({"type": "number", "text": f.decoded()}),
        "ST" | "TX" | "FT" if !f.has_children() => json!({"type": "text", "text": f.decoded()}),
        "CE" | "CWE" | "CNE" | "CF" => {
            json!({"type": "coded", "code": opt(comp(1)), "name": opt(comp(2)), "system": opt(comp(3))})
        }
        "SN" => {
            json!({"type": "structured_numeric", "comparator": opt(comp(1)), "num1": opt(comp(2)), "separator": opt(comp(3)), "num2": opt(comp(4))})
        }
        _ => json!({"type": "raw", "text": f.raw()}),
    };
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, x| !x.is_null());
    }
    Some(v)
}

fn set_json(root: &mut Json, dotted: &str, value: Json) {
    let mut cur = root;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        if !cur.is_object() {
            *cur = Json::Object(Map::new());
        }
        let Some(obj) = cur.as_object_mut() else { return };
        if parts.peek().is_none() {
            obj.insert(part.to_owned(), value);
            return;
        }
        // Allocate the key only when the object does not have it yet.
        if !obj.contains_key(part) {
            obj.insert(part.to_owned(), Json::Object(Map::new()));
        }
        match obj.get_mut(part) {
            Some(next) => cur = next,
            None => return,
        }
    }
}

fn get_json<'j>(root: &'j Json, dotted: &str) -> Option<&'j Json> {
    let mut cur = root;
    for part in dotted.split('.') {
        cur = cur.get(part)?;
    }
    (!cur.is_null()).then_some(cur)
}

fn push_json(root: &mut Json, key: &str, item: Json) {
    set_json_default_array(root, key);
    if let Some(arr) = get_json_mut(root, key).and_then(Json::as_array_mut) {
        arr.push(item);
    }
}

fn set_json_default_array(root: &mut Json, dotted: &str) {
    if get_json(root, dotted).is_none() {
        set_json(root, dotted, Json::Array(Vec::new()));
    }
}

fn get_json_mut<'j>(root: &'j mut Json, dotted: &str) -> Option<&'j mut Json> {
    let mut cur = root;
    for part in dotted.split('.') {
        cur = cur.get_mut(part)?;
    }
    Some(cur)
}

/// What [`Profile::map_message`] found: the contract value (as JSON), its
/// problems, and the locations holding data no rule reads.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// The contract value as JSON (a `LabOrder` or a `LabResult`).
    pub value: Json,
    /// Every problem.
    pub problems: Vec<Problem>,
    /// Paths with data that no rule reads (kept in `unmapped`).
    pub unread: Vec<String>,
}

impl Profile {
    /// Maps a message to the contract as JSON, collecting every problem
    /// rather than stopping at the first.
    pub fn map_message(&self, msg: &Message<'_>) -> Mapped {
        self.map_inner(msg, true)
    }

    /// [`map_message`](Profile::map_message) without the list of unread
    /// locations (`unread` is left empty): what a running connection needs,
    /// and faster. Unmapped data is still kept on the value.
    pub fn map_value(&self, msg: &Message<'_>) -> Mapped {
        self.map_inner(msg, false)
    }

    fn map_inner(&self, msg: &Message<'_>, want_unread: bool) -> Mapped {
        let mut r = Reader {
            profile: self,
            _msg: std::marker::PhantomData,
            marks: Marks::default(),
            problems: Vec::new(),
            want_unread,
        };
        let mut root = Json::Object(Map::new());
        let (code, trigger, _) = msg.message_type();
        let want: Vec<&str> = self.message_type.split('^').collect();
        let view = match LabView::new(msg) {
            Ok(v) if want.first() == Some(&code) && want.get(1) == Some(&trigger) => v,
            _ => {
                let at = msg.msh().field(9);
                r.problems.push(Problem {
                    kind: ProblemKind::WrongMessageType,
                    field: "message_type".into(),
                    path: Some("MSH-9".into()),
                    offset: at.map(|f| f.offset()),
                    message: format!(
                        "message type {code}^{trigger}, profile {} expects {}",
                        self.name, self.message_type
                    ),
                });
                return Mapped { value: root, problems: r.problems, unread: Vec::new() };
            }
        };
        let all: Vec<Segment<'_>> = msg.segments().collect();
        let grouped: HashSet<usize> = view
            .orders()
            .flat_map(|o| {
                let mut v: Vec<usize> = Vec::new();
                v.extend(o.orc.iter().chain(o.obr.iter()).map(|s| s.index()));
                v.extend(o.timing.iter().chain(&o.notes).chain(&o.diagnoses).chain(&o.other).map(|s| s.index()));
                for x in &o.observations {
                    v.push(x.obx.index());
                    v.extend(x.notes.iter().chain(&x.other).map(|s| s.index()));
                }
                for sp in &o.specimens {
                    v.push(sp.spm.index());
                    v.extend(sp.observations.iter().chain(&sp.containers).chain(&sp.other).map(|s| s.index()));
                }
                v
            })
            .collect();
        let outside: Vec<Segment<'_>> = all.iter().filter(|s| !grouped.contains(&s.index())).copied().collect();
        let message_ctx = Ctx { segs: all.clone(), own: outside.clone(), parent: None, prefix: String::new() };
        r.apply(&message_ctx, &self.message, &mut root, &HashSet::new());
        r.mark_structure(msg, self);
        // A message-level value read from the first ORC/OBR is also what the
        // other groups carry when they say the same.
        for rule in &self.message.rules {
            if let Source::Path(p) = &rule.source {
                let same: Vec<Segment<'_>> = all.iter().filter(|s| s.name() == p.segment()).copied().collect();
                if same.len() > 1 {
                    let first = element(&same[0], p).and_then(|e| e.value()).map(|v| v.into_owned());
                    for seg in &same[1..] {
                        if element(seg, p).and_then(|e| e.value()).map(|v| v.into_owned()) == first {
                            r.marks.insert(mark_of(seg, p));
                        }
                    }
                }
            }
        }

        if self.kind == Kind::Order {
            for ins in view.patient().map(|p| p.insurances.as_slice()).unwrap_or_default() {
                let mut segs = vec![ins.in1];
                segs.extend(ins.in2);
                segs.extend(ins.in3.iter().copied());
                let n = get_json(&root, "billing.insurances").and_then(Json::as_array).map_or(0, Vec::len);
                let ctx = Ctx {
                    own: segs.clone(),
                    segs,
                    parent: Some(&message_ctx),
                    prefix: format!("billing.insurances[{n}]."),
                };
                let mut obj = Json::Object(Map::new());
                r.apply(&ctx, &self.insurance, &mut obj, &HashSet::new());
                push_json(&mut root, "billing.insurances", obj);
            }
            let dg1s: Vec<Segment<'_>> = all.iter().filter(|s| s.name() == "DG1").copied().collect();
            for (i, dg) in dg1s.into_iter().enumerate() {
                let ctx = Ctx { segs: vec![dg], own: vec![dg], parent: None, prefix: format!("diagnoses[{i}].") };
                let mut obj = Json::Object(Map::new());
                r.apply(&ctx, &self.diagnosis, &mut obj, &HashSet::new());
                push_json(&mut root, "diagnoses", obj);
            }
        }

        let group_key = if self.kind == Kind::Order { "tests" } else { "reports" };
        let mut in_groups: HashSet<usize> = HashSet::new();
        let mut groups: Vec<(Json, Vec<Segment<'_>>)> = Vec::new();
        for (gi, order) in view.orders().enumerate() {
            let mut own: Vec<Segment<'_>> = Vec::new();
            own.extend(order.orc);
            own.extend(order.timing.iter().copied());
            own.extend(order.obr);
            own.extend(order.notes.iter().copied());
            own.extend(order.diagnoses.iter().copied());
            for s in &order.specimens {
                own.push(s.spm);
                own.extend(s.observations.iter().copied());
                own.extend(s.containers.iter().copied());
                own.extend(s.other.iter().copied());
            }
            own.extend(order.other.iter().copied());
            let mut every = own.clone();
            for o in &order.observations {
                every.push(o.obx);
                every.extend(o.notes.iter().copied());
                every.extend(o.other.iter().copied());
            }
            every.sort_by_key(|s| s.index());
            in_groups.extend(every.iter().map(|s| s.index()));
            let prefix = format!("{group_key}[{gi}].");
            let ctx = Ctx { segs: own.clone(), own, parent: Some(&message_ctx), prefix: prefix.clone() };
            let mut obj = Json::Object(Map::new());
            let mut consumed: HashSet<usize> = HashSet::new();
            if self.kind == Kind::Order {
                if let Some(aoe) = &self.aoe {
                    let candidates: Vec<Vec<Segment<'_>>> = if aoe.from_nte {
                        order.notes.iter().map(|n| vec![*n]).collect()
                    } else {
                        order
                            .observations
                            .iter()
                            .map(|o| std::iter::once(o.obx).chain(o.notes.iter().copied()).collect())
                            .collect()
                    };
                    let mut k = 0;
                    for cand in candidates {
                        let cctx = Ctx {
                            segs: cand.clone(),
                            own: cand.clone(),
                            parent: None,
                            prefix: format!("{prefix}aoe[{k}]."),
                        };
                        if !aoe_matches(self, aoe, &cctx) {
                            continue;
                        }
                        consumed.extend(cand.iter().map(|s| s.index()));
                        let mut item = Json::Object(Map::new());
                        if let Some(cond) = &aoe.when {
                            let p = match cond {
                                Cond::In(p, _) | Cond::InMap(p, _) | Cond::Prefix(p, _) => p,
                            };
                            if let Some(seg) = cctx.find(p) {
                                if !matches!(cond, Cond::Prefix(..)) {
                                    r.marks.insert(mark_of(&seg, p));
                                }
                            }
                        }
                        if let (Some(tpl), Some(seg)) = (&aoe.template, cand.first()) {
                            let text = seg.field(3).map(|f| f.decoded().into_owned()).unwrap_or_default();
                            r.marks.insert((seg.index(), 3, 0, 0, 0));
                            for (f, v) in match_template(tpl, &text) {
                                set_json(&mut item, &f, Json::String(v));
                            }
                        }
                        r.apply(&cctx, &aoe.scope, &mut item, &HashSet::new());
                        // notes of an AOE OBX belong to the answer
                        for n in cand.iter().skip(1) {
                            r.marks.insert((n.index(), 3, 0, 0, 0));
                        }
                        push_json(&mut obj, "aoe", item);
                        k += 1;
                    }
                }
            } else {
                for (oi, o) in order.observations.iter().enumerate() {
                    let segs: Vec<Segment<'_>> =
                        std::iter::once(o.obx).chain(o.notes.iter().copied()).chain(o.other.iter().copied()).collect();
                    let octx =
                        Ctx { own: segs.clone(), segs, parent: None, prefix: format!("{prefix}observations[{oi}].") };
                    let mut item = Json::Object(Map::new());
                    r.apply(&octx, &self.observation, &mut item, &HashSet::new());
                    push_json(&mut obj, "observations", item);
                }
            }
            r.apply(&ctx, &self.group, &mut obj, &consumed);
            groups.push((obj, every));
        }

        // What no rule read stays on the value, in the order the writer puts it back.
        let group_order = self.flat_layout(&self.layout_group);
        let message_order = self.flat_layout(&self.layout_message);
        let mut unread_all = Vec::new();
        for (obj, every) in &mut groups {
            let (mut raws, unread) = r.unread(every);
            sort_raws(&mut raws, &group_order);
            if !raws.is_empty() {
                set_json(obj, "unmapped", serde_json::to_value(raws).unwrap_or_default());
            }
            if r.want_unread {
                unread_all.extend(unread);
            }
        }
        let _ = &in_groups;
        let (mut raws, unread) = r.unread(&outside);
        sort_raws(&mut raws, &message_order);
        if !raws.is_empty() {
            set_json(&mut root, "unmapped", serde_json::to_value(raws).unwrap_or_default());
        }
        if r.want_unread {
            unread_all.splice(0..0, unread);
        }
        let needs_delims =
            get_json(&root, "unmapped").is_some() || groups.iter().any(|(o, _)| o.get("unmapped").is_some());
        if needs_delims {
            set_json(&mut root, "delimiters", Json::String(msg.delimiters().to_string()));
        }
        let items: Vec<Json> = groups.into_iter().map(|(o, _)| o).collect();
        if !items.is_empty() {
            set_json(&mut root, group_key, Json::Array(items));
        }
        r.problems.sort_by_key(|p| p.offset.unwrap_or(u64::MAX));
        Mapped { value: root, problems: r.problems, unread: unread_all }
    }

    /// Maps an order message to a [`LabOrder`].
    ///
    /// # Errors
    ///
    /// A [`MapError`] with every problem of the message (missing required
    /// fields, codes without a map entry, bad dates …), or a wrong message type.
    pub fn to_order(&self, msg: &Message<'_>) -> Result<LabOrder, MapError> {
        self.to_contract(msg, Kind::Order)
    }

    /// Maps a result message to a [`LabResult`].
    ///
    /// # Errors
    ///
    /// As [`Profile::to_order`].
    pub fn to_result(&self, msg: &Message<'_>) -> Result<LabResult, MapError> {
        self.to_contract(msg, Kind::Result)
    }

    fn to_contract<T: serde::de::DeserializeOwned>(&self, msg: &Message<'_>, want: Kind) -> Result<T, MapError> {
        if self.kind != want {
            return Err(MapError {
                problems: vec![Problem {
                    kind: ProblemKind::WrongMessageType,
                    field: "profile".into(),
                    path: None,
                    offset: None,
                    message: format!("profile {} maps {:?}s", self.name, self.kind).to_lowercase(),
                }],
            });
        }
        let mapped = self.map_value(msg);
        if !mapped.problems.is_empty() {
            return Err(MapError { problems: mapped.problems });
        }
        serde_json::from_value(mapped.value).map_err(|e| MapError {
            problems: vec![Problem {
                kind: ProblemKind::InvalidValue,
                field: "".into(),
                path: None,
                offset: None,
                message: e.to_string(),
            }],
        })
    }
}

fn sort_raws(raws: &mut [RawSegment], order: &[String]) {
    let key = |r: &RawSegment| {
        let p: Option<Path> = r.path.parse().ok();
        let name = p.as_ref().map_or("", |p| p.segment());
        (order.iter().position(|n| n == name).unwrap_or(usize::MAX), name.to_owned(), p.map_or(0, |p| p.occurrence()))
    };
    raws.sort_by_key(key);
}

impl Profile {
    /// A layout with its `@sub-scope` markers expanded to segment names.
    fn flat_layout(&self, layout: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for name in layout {
            match name.as_str() {
                "@insurance" => out.extend(["IN1", "IN2", "IN3"].map(String::from)),
                "@diagnosis" => out.push("DG1".into()),
                "@aoe" => out.extend(["OBX", "NTE"].map(String::from)),
                "@observation" => out.extend(self.layout_observation.iter().cloned()),
                n => out.push(n.to_owned()),
            }
        }
        out
    }
}

fn aoe_matches(profile: &Profile, aoe: &Aoe, ctx: &Ctx<'_, '_>) -> bool {
    let Some(cond) = &aoe.when else { return true };
    let value = |p: &Path| ctx.find(p).and_then(|s| element(&s, p)).and_then(|e| e.value()).map(|v| v.into_owned());
    match cond {
        Cond::In(p, vals) => value(p).is_some_and(|v| vals.contains(&v)),
        Cond::InMap(p, m) => value(p).is_some_and(|v| profile.maps.get(m).is_some_and(|map| map.contains_key(&v))),
        Cond::Prefix(p, pre) => value(p).is_some_and(|v| v.starts_with(pre.as_str())),
    }
}

/// Matches `text` against a template of literals and `{field}` placeholders.
fn match_template(pieces: &[Piece], text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut i = 0;
    while i < pieces.len() {
        match &pieces[i] {
            Piece::Lit(l) => match rest.strip_prefix(l.as_str()) {
                Some(r) => rest = r,
                None => return out,
            },
            Piece::Field(f) => {
                let (value, r) = match pieces.get(i + 1) {
                    Some(Piece::Lit(next)) => match rest.find(next.as_str()) {
                        Some(at) => (&rest[..at], &rest[at..]),
                        None => return out,
                    },
                    _ => (rest, ""),
                };
                if !value.is_empty() {
                    out.push((f.clone(), value.to_owned()));
                }
                rest = r;
            }
            Piece::Path(_) => return out,
        }
        i += 1;
    }
    out
}

// ------------------------------------------------------------------ writing (contract -> HL7)

/// One write into a segment.
#[derive(Debug, Clone)]
enum Op {
    /// A leaf or a whole field/repetition/component (indexes 1-based; `None` = whole).
    Set { field: usize, rep: usize, comp: Option<usize>, sub: Option<usize>, value: String },
    /// Every repetition of a field.
    Reps { field: usize, values: Vec<String> },
    /// A field written as raw ER7.
    Raw { field: usize, text: String },
}

/// A segment as a tree of leaves, materialized from a raw base and ops.
/// Leaves hold ER7 text, already escaped for the output delimiters (which
/// are the source message's), so a raw base is written back byte for byte.
#[derive(Debug, Clone, Default)]
struct Tree {
    /// fields[f-1][rep-1][comp-1][sub-1]
    fields: Vec<Vec<Vec<Vec<String>>>>,
    raw: BTreeMap<usize, String>,
    delims: Delimiters,
}

fn empty_field() -> Vec<Vec<Vec<String>>> {
    vec![vec![vec![String::new()]]]
}

impl Tree {
    fn new(delims: Delimiters) -> Tree {
        Tree { delims, ..Tree::default() }
    }

    fn from_segment(seg: &Segment<'_>, delims: Delimiters) -> Tree {
        let mut t = Tree::new(delims);
        for (i, f) in seg.fields().enumerate() {
            if seg.name() == "MSH" && i < 2 {
                t.fields.push(empty_field());
                continue;
            }
            t.fields.push(
                f.repetitions()
                    .map(|r| r.components().map(|c| c.subcomponents().map(|s| s.raw().to_owned()).collect()).collect())
                    .collect(),
            );
        }
        t
    }

    fn field_mut(&mut self, f: usize) -> &mut Vec<Vec<Vec<String>>> {
        if self.fields.len() < f {
            self.fields.resize(f, empty_field());
        }
        &mut self.fields[f - 1]
    }

    fn get(&self, field: usize, rep: usize, comp: Option<usize>, sub: Option<usize>) -> String {
        let r = self.fields.get(field - 1).and_then(|x| x.get(rep - 1));
        match (r, comp) {
            (None, _) => String::new(),
            (Some(r), None) => r.iter().map(|c| c.join("")).collect(),
            (Some(r), Some(c)) => match (r.get(c - 1), sub) {
                (None, _) => String::new(),
                (Some(c), None) => c.join(""),
                (Some(c), Some(s)) => c.get(s - 1).cloned().unwrap_or_default(),
            },
        }
    }

    fn apply(&mut self, op: &Op, weak: bool) {
        let d = self.delims;
        let esc = |v: &str| escape::encode(v, &d).into_owned();
        match op {
            Op::Set { field, rep, comp, sub, value } => {
                if weak && (!self.get(*field, *rep, *comp, *sub).is_empty() || self.raw.contains_key(field)) {
                    return;
                }
                self.raw.remove(field);
                let value = esc(value);
                let f = self.field_mut(*field);
                if f.len() < *rep {
                    f.resize(*rep, vec![vec![String::new()]]);
                }
                let r = &mut f[*rep - 1];
                // Mirror the reader: a value for an element that has children
                // in the base goes to its first leaf.
                let (comp, sub) = match (comp, sub) {
                    (None, _) if r.len() > 1 || r.first().is_some_and(|c| c.len() > 1) => (Some(1), Some(1)),
                    (Some(c), None) if r.get(*c - 1).is_some_and(|x| x.len() > 1) => (Some(*c), Some(1)),
                    other => (*other.0, *other.1),
                };
                match comp {
                    None => *r = vec![vec![value]],
                    Some(c) => {
                        if r.len() < c {
                            r.resize(c, vec![String::new()]);
                        }
                        let comp = &mut r[c - 1];
                        match sub {
                            None => *comp = vec![value],
                            Some(s) => {
                                if comp.len() < s {
                                    comp.resize(s, String::new());
                                }
                                comp[s - 1] = value;
                            }
                        }
                    }
                }
            }
            Op::Reps { field, values } => {
                if weak && !self.get(*field, 1, None, None).is_empty() {
                    return;
                }
                self.raw.remove(field);
                *self.field_mut(*field) = values.iter().map(|v| vec![vec![esc(v)]]).collect();
            }
            Op::Raw { field, text } => {
                if weak && !self.get(*field, 1, None, None).is_empty() {
                    return;
                }
                *self.field_mut(*field) = empty_field();
                self.raw.insert(*field, text.clone());
            }
        }
    }

    fn encode(&self, name: &str, d: &Delimiters) -> String {
        let mut out = name.to_owned();
        let start = if name == "MSH" {
            out.push_str(&d.to_string());
            2
        } else {
            0
        };
        let mut fields: Vec<String> = Vec::new();
        for (i, f) in self.fields.iter().enumerate().skip(start) {
            if let Some(raw) = self.raw.get(&(i + 1)) {
                fields.push(raw.clone());
                continue;
            }
            let reps: Vec<String> = f
                .iter()
                .map(|r| {
                    let comps: Vec<String> = r.iter().map(|c| trim_join(c, d.subcomponent)).collect();
                    trim_join(&comps, d.component)
                })
                .collect();
            fields.push(trim_join(&reps, d.repetition));
        }
        while fields.last().is_some_and(String::is_empty) {
            fields.pop();
        }
        for f in &fields {
            out.push(d.field as char);
            out.push_str(f);
        }
        out
    }
}

/// A segment being written: its name and the writes to make on top of its
/// raw base (if the contract kept one).
#[derive(Debug, Clone, Default)]
struct SegBuf {
    name: String,
    /// Written under a raw base rather than over it (message-level values
    /// copied into the second and later order groups).
    weak: bool,
    /// Each write, and whether it is weak (a constant: only where the base is empty).
    ops: Vec<(Op, bool)>,
}

impl SegBuf {
    fn new(name: &str) -> SegBuf {
        SegBuf { name: name.to_owned(), ..SegBuf::default() }
    }

    fn set_weak(&mut self, path: &Path, value: &str) {
        self.set(path, value);
        if let Some(last) = self.ops.last_mut() {
            last.1 = true;
        }
    }

    fn set(&mut self, path: &Path, value: &str) {
        let Some(f) = path.field() else { return };
        self.ops.push((
            Op::Set {
                field: f as usize,
                rep: path.repetition() as usize,
                comp: path.component().map(|c| c as usize),
                sub: path.subcomponent().map(|s| s as usize),
                value: value.to_owned(),
            },
            false,
        ));
    }

    fn set_reps(&mut self, field: usize, values: &[String]) {
        self.ops.push((Op::Reps { field, values: values.to_vec() }, false));
    }

    fn set_raw(&mut self, field: usize, text: &str) {
        self.ops.push((Op::Raw { field, text: text.to_owned() }, false));
    }

    /// The value written so far at `path` (for split parts), unescaped.
    fn current(&self, path: &Path) -> String {
        let d = Delimiters::default();
        let mut t = Tree::new(d);
        for (op, _) in &self.ops {
            t.apply(op, false);
        }
        let raw = t.get(
            path.field().unwrap_or(1) as usize,
            path.repetition() as usize,
            path.component().map(|c| c as usize),
            path.subcomponent().map(|s| s as usize),
        );
        escape::decode(&raw, &d, crate::Charset::UTF_8).into_owned()
    }

    fn build(&self, base: Option<Tree>, d: &Delimiters) -> String {
        // Constants fill a fresh segment; a kept segment already says what
        // the source said at those places.
        let kept = base.is_some();
        let mut t = base.unwrap_or_else(|| Tree::new(*d));
        for (op, constant) in &self.ops {
            if *constant && kept {
                continue;
            }
            t.apply(op, self.weak || *constant);
        }
        t.encode(&self.name, d)
    }
}

fn trim_join(parts: &[String], sep: u8) -> String {
    let n = parts.iter().rposition(|p| !p.is_empty()).map_or(0, |i| i + 1);
    parts[..n].join(&(sep as char).to_string())
}

/// The segments of one scope being written, in first-written order.
#[derive(Debug, Default)]
struct Bag {
    segs: Vec<SegBuf>,
}

impl Bag {
    fn get(&mut self, name: &str, occurrence: u32) -> &mut SegBuf {
        let have = self.segs.iter().filter(|s| s.name == name).count() as u32;
        for _ in have..occurrence {
            self.segs.push(SegBuf::new(name));
        }
        let idx = self
            .segs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.name == name)
            .nth(occurrence as usize - 1)
            .map(|(i, _)| i)
            .unwrap_or(0);
        &mut self.segs[idx]
    }

    fn take(&mut self, name: &str) -> Vec<SegBuf> {
        let (taken, kept): (Vec<SegBuf>, Vec<SegBuf>) =
            std::mem::take(&mut self.segs).into_iter().partition(|s| s.name == name);
        self.segs = kept;
        taken
    }
}

/// Raw segments waiting to serve as bases, by (name, occurrence in scope).
struct Raws {
    items: Vec<(String, u32, Tree, bool)>,
    counts: HashMap<String, u32>,
}

impl Raws {
    fn new(list: Option<&Json>, delims: &Delimiters) -> Raws {
        let mut items = Vec::new();
        for item in list.and_then(Json::as_array).into_iter().flatten() {
            let (Some(path), Some(text)) =
                (item.get("path").and_then(Json::as_str), item.get("text").and_then(Json::as_str))
            else {
                continue;
            };
            let Ok(p) = path.parse::<Path>() else { continue };
            let msh = format!("MSH{delims}\r");
            let full = if text.starts_with("MSH") { text.to_owned() } else { format!("{msh}{text}") };
            let Ok(m) = Message::parse(full.as_bytes()) else { continue };
            let Some(seg) = m.segments().next_back() else { continue };
            items.push((p.segment().to_owned(), p.occurrence(), Tree::from_segment(&seg, *delims), false));
        }
        Raws { items, counts: HashMap::new() }
    }

    /// The base for the next segment of this name written in the scope.
    fn base_for(&mut self, name: &str) -> Option<Tree> {
        let c = self.counts.entry(name.to_owned()).or_insert(0);
        *c += 1;
        let n = *c;
        self.items.iter_mut().find(|(nm, occ, _, used)| nm == name && *occ == n && !*used).map(|item| {
            item.3 = true;
            item.2.clone()
        })
    }

    fn leftovers_named(&mut self, name: &str, d: &Delimiters) -> Vec<String> {
        self.items
            .iter_mut()
            .filter(|i| !i.3 && i.0 == name)
            .map(|i| {
                i.3 = true;
                i.2.encode(&i.0, d)
            })
            .collect()
    }

    fn leftovers(&mut self, d: &Delimiters) -> Vec<String> {
        self.items
            .iter_mut()
            .filter(|i| !i.3)
            .map(|i| {
                i.3 = true;
                i.2.encode(&i.0, d)
            })
            .collect()
    }
}

/// Writes the `@name` sub-scopes of a layout (insurances, AOE answers …).
type SubScopes<'a, 'p> = dyn FnMut(&str, &mut Vec<String>, &mut Raws, &mut Writer<'p>) + 'a;

struct Writer<'p> {
    profile: &'p Profile,
    delims: Delimiters,
    problems: Vec<Problem>,
}

impl<'p> Writer<'p> {
    fn write_scope(&mut self, scope: &Scope, value: &Json, prefix: &str, bag: &mut Bag) {
        for (path, v) in &scope.constants {
            bag.get(path.segment(), path.occurrence()).set_weak(path, v);
        }
        for rule in &scope.rules {
            let Some(v) = get_json(value, &rule.field) else { continue };
            let Source::Path(path) = &rule.source else {
                if let (Source::Template(pieces), Some(s)) = (&rule.source, v.as_str()) {
                    self.write_template(pieces, s, bag);
                }
                continue;
            };
            match rule.kind {
                FieldKind::SegList => {
                    for (i, item) in v.as_array().into_iter().flatten().enumerate() {
                        if let Some(s) = item.as_str() {
                            bag.get(path.segment(), i as u32 + 1).set(path, s);
                        }
                    }
                }
                FieldKind::RepList => {
                    let items: Vec<String> =
                        v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_owned)).collect();
                    bag.get(path.segment(), path.occurrence()).set_reps(path.field().unwrap_or(1) as usize, &items);
                }
                FieldKind::ObsValue => self.write_value(path, v, bag),
                _ => {
                    let Some(text) = self.outbound_text(rule, v, prefix) else { continue };
                    match &rule.split {
                        Some((sep, part)) => {
                            let seg = bag.get(path.segment(), path.occurrence());
                            let current = seg.current(path);
                            let mut parts: Vec<String> =
                                current.split(sep.as_str()).map(|s| s.trim().to_owned()).collect();
                            if parts.len() < *part {
                                parts.resize(*part, String::new());
                            }
                            parts[part - 1] = text.clone();
                            let joiner = if sep.trim().is_empty() { sep.clone() } else { format!("{sep} ") };
                            seg.set(path, parts.join(&joiner).trim_end_matches([' ', ',']));
                        }
                        None => bag.get(path.segment(), path.occurrence()).set(path, &text),
                    }
                    for p in &rule.also {
                        bag.get(p.segment(), p.occurrence()).set(p, &text);
                    }
                }
            }
        }
    }

    fn write_template(&mut self, pieces: &[Piece], s: &str, bag: &mut Bag) {
        // Split the value on the template's literals, in order.
        let mut rest = s;
        for (i, piece) in pieces.iter().enumerate() {
            match piece {
                Piece::Lit(l) => rest = rest.strip_prefix(l.as_str()).unwrap_or(rest),
                Piece::Path(p) => {
                    let (v, r) = match pieces.get(i + 1) {
                        Some(Piece::Lit(next)) => match rest.find(next.as_str()) {
                            Some(at) => (&rest[..at], &rest[at..]),
                            None => (rest, ""),
                        },
                        _ => (rest, ""),
                    };
                    bag.get(p.segment(), p.occurrence()).set(p, v);
                    rest = r;
                }
                Piece::Field(_) => {}
            }
        }
    }

    fn write_value(&mut self, path: &Path, v: &Json, bag: &mut Bag) {
        let seg = bag.get(path.segment(), path.occurrence());
        let f = path.field().unwrap_or(5);
        let s = |k: &str| v.get(k).and_then(Json::as_str).unwrap_or("").to_owned();
        let mut p = path.clone();
        match v.get("type").and_then(Json::as_str) {
            Some("number") | Some("text") => seg.set(&p, &s("text")),
            Some("coded") => {
                for (i, k) in ["code", "name", "system"].iter().enumerate() {
                    p = Path::new_unchecked([0, 0, 0], 1, Some(f), None, Some(i as u32 + 1), None);
                    seg.set(&p, &s(k));
                }
            }
            Some("structured_numeric") => {
                for (i, k) in ["comparator", "num1", "separator", "num2"].iter().enumerate() {
                    p = Path::new_unchecked([0, 0, 0], 1, Some(f), None, Some(i as u32 + 1), None);
                    seg.set(&p, &s(k));
                }
            }
            _ => seg.set_raw(f as usize, &s("text")),
        }
    }

    fn outbound_text(&mut self, rule: &Rule, v: &Json, prefix: &str) -> Option<String> {
        let mut text = match rule.kind {
            FieldKind::Time => {
                let ts: Timestamp = v.as_str()?.parse().ok()?;
                match &rule.date_format {
                    Some(fmt) => ts.naive().format(fmt).to_string(),
                    None => ts.to_hl7(),
                }
            }
            FieldKind::Status => {
                let st: ResultStatus = serde_json::from_value(v.clone()).ok()?;
                st.to_hl7().to_owned()
            }
            _ => v.as_str()?.to_owned(),
        };
        if let Some(m) = &rule.map {
            let map = self.profile.maps.get(m)?;
            match map.iter().find(|(_, lab)| **lab == text) {
                Some((emr, _)) => text = emr.clone(),
                None => self.problems.push(Problem {
                    kind: ProblemKind::UnmappedCode,
                    field: format!("{prefix}{}", rule.field),
                    path: match &rule.source {
                        Source::Path(p) => Some(p.to_string()),
                        _ => None,
                    },
                    offset: None,
                    message: format!("code {text:?} has no entry in map {m}"),
                }),
            }
        }
        Some(text)
    }

    /// Emits a scope's segments in layout order: raw bases first, then rule
    /// values on top, set IDs renumbered, unknown segments at the end.
    fn emit(
        &mut self,
        out: &mut Vec<String>,
        layout: &[String],
        bag: &mut Bag,
        raws: &mut Raws,
        flush: bool,
        subs: &mut SubScopes<'_, 'p>,
    ) {
        // Segments that sub-scopes also write (NTE after an OBX) take their
        // kept bases there; flush the unclaimed ones at the end, not here.
        let in_subs: Vec<String> = layout
            .iter()
            .filter(|n| n.starts_with('@'))
            .flat_map(|n| self.profile.flat_layout(std::slice::from_ref(n)))
            .collect();
        for name in layout {
            if let Some(sub) = name.strip_prefix('@') {
                subs(sub, out, raws, self);
                continue;
            }
            for seg in bag.take(name) {
                self.emit_one(out, seg, raws);
            }
            if flush && !in_subs.contains(name) {
                out.extend(raws.leftovers_named(name, &self.delims));
            }
        }
        let rest = std::mem::take(&mut bag.segs);
        for seg in rest {
            self.emit_one(out, seg, raws);
        }
    }

    fn emit_one(&mut self, out: &mut Vec<String>, seg: SegBuf, raws: &mut Raws) {
        let base = raws.base_for(&seg.name);
        out.push(seg.build(base, &self.delims));
    }
}

/// Renumbers set IDs (field 1 of PID, OBR, OBX, NTE, …) within each scope.
fn renumber(segments: &mut [String], from: usize, d: &Delimiters) {
    let mut counts: HashMap<String, u32> = HashMap::new();
    for s in segments.iter_mut().skip(from) {
        let name = s.get(..3).unwrap_or("").to_owned();
        if !SET_ID.contains(&name.as_str()) || name == "MSH" {
            continue;
        }
        let c = counts.entry(name.clone()).or_insert(0);
        *c += 1;
        let sep = d.field as char;
        let rest = s.get(3..).unwrap_or("");
        let after_f1 = rest.strip_prefix(sep).map(|r| r.find(sep).map_or("", |i| &r[i..])).unwrap_or("");
        *s = format!("{name}{sep}{c}{after_f1}");
    }
}

impl Profile {
    /// Writes a [`LabOrder`] as HL7 in this profile's dialect.
    ///
    /// # Errors
    ///
    /// A [`MapError`] listing every value that cannot be written (a lab code
    /// without an entry in the EMR's map …).
    pub fn order_to_hl7(&self, order: &LabOrder) -> Result<String, MapError> {
        let json = serde_json::to_value(order).unwrap_or_default();
        self.write(&json, Kind::Order)
    }

    /// Writes a [`LabResult`] as HL7 (ORU^R01) in this profile's dialect.
    ///
    /// # Errors
    ///
    /// As [`Profile::order_to_hl7`].
    pub fn result_to_hl7(&self, result: &LabResult) -> Result<String, MapError> {
        let json = serde_json::to_value(result).unwrap_or_default();
        self.write(&json, Kind::Result)
    }

    fn write(&self, json: &Json, kind: Kind) -> Result<String, MapError> {
        if kind != self.kind {
            return Err(MapError {
                problems: vec![Problem {
                    kind: ProblemKind::WrongMessageType,
                    field: "profile".into(),
                    path: None,
                    offset: None,
                    message: format!("profile {} maps {:?}s", self.name, self.kind).to_lowercase(),
                }],
            });
        }
        let source_delims = json
            .get("delimiters")
            .and_then(Json::as_str)
            .and_then(|s| {
                let b = s.as_bytes();
                (b.len() >= 5)
                    .then(|| Delimiters::new(b[0], [b[1], b[2], b[3], b[4]], b.get(5).copied()).ok())
                    .flatten()
            })
            .unwrap_or_default();
        // Write in the source message's delimiters so kept segments are exact.
        let d = source_delims;
        let mut w = Writer { profile: self, delims: d, problems: Vec::new() };
        let mut msg_raws = Raws::new(json.get("unmapped"), &source_delims);

        // MSH: defaults, then raw base, then rules.
        let mut bag = Bag::default();
        {
            let msh = bag.get("MSH", 1);
            let set = |m: &mut SegBuf, n: u32, v: &str| {
                m.set_weak(&Path::new_unchecked(*b"MSH", 1, Some(n), None, None, None), v)
            };
            set(msh, 7, &format_timestamp(&chrono::Local::now().fixed_offset()));
            let mt: Vec<&str> = self.message_type.split('^').collect();
            for (i, part) in mt.iter().enumerate() {
                msh.set_weak(&Path::new_unchecked(*b"MSH", 1, Some(9), None, Some(i as u32 + 1), None), part);
            }
            set(msh, 10, &new_control_id());
            set(msh, 11, "P");
            set(msh, 12, &self.version);
        }
        w.write_scope(&self.message, json, "", &mut bag);
        let group_key = if kind == Kind::Order { "tests" } else { "reports" };
        let groups: Vec<Json> = json.get(group_key).and_then(Json::as_array).cloned().unwrap_or_default();
        // Segments that live only in order groups (ORC, OBR …), not those the
        // message level writes too (NTE).
        let group_names: HashSet<&str> = self
            .layout_group
            .iter()
            .map(String::as_str)
            .filter(|n| !self.layout_message.iter().any(|m| m == n))
            .collect();
        // Message-level values for segments that live in order groups (ORC-2 …)
        // are written into every group.
        let mut broadcast: Vec<SegBuf> = Vec::new();
        for name in &group_names {
            broadcast.extend(bag.take(name));
        }

        let mut out: Vec<String> = Vec::new();
        let msh = bag.take("MSH").into_iter().next().unwrap_or_else(|| SegBuf::new("MSH"));
        out.push(msh.build(msg_raws.base_for("MSH"), &d));

        let insurances: Vec<Json> =
            json.pointer("/billing/insurances").and_then(Json::as_array).cloned().unwrap_or_default();
        let diagnoses: Vec<Json> = json.get("diagnoses").and_then(Json::as_array).cloned().unwrap_or_default();
        let mut diagnoses_written = false;
        let write_diagnoses = |w: &mut Writer<'_>, out: &mut Vec<String>, raws: &mut Raws| {
            for (i, dg) in diagnoses.iter().enumerate() {
                let mut b = Bag::default();
                w.write_scope(&self.diagnosis, dg, &format!("diagnoses[{i}]."), &mut b);
                for seg in std::mem::take(&mut b.segs) {
                    w.emit_one(out, seg, raws);
                }
            }
        };
        let diag_in_message = self.layout_message.iter().any(|n| n == "@diagnosis");
        {
            let mut subs = |name: &str, out: &mut Vec<String>, raws: &mut Raws, w: &mut Writer<'_>| match name {
                "insurance" => {
                    for (i, ins) in insurances.iter().enumerate() {
                        let mut b = Bag::default();
                        w.write_scope(&self.insurance, ins, &format!("billing.insurances[{i}]."), &mut b);
                        for seg in std::mem::take(&mut b.segs) {
                            w.emit_one(out, seg, raws);
                        }
                    }
                }
                "diagnosis" if diag_in_message => write_diagnoses(w, out, raws),
                _ => {}
            };
            let layout = self.layout_message.clone();
            w.emit(&mut out, &layout, &mut bag, &mut msg_raws, true, &mut subs);
        }
        if diag_in_message {
            diagnoses_written = true;
        }
        out.extend(msg_raws.leftovers(&d));
        renumber(&mut out, 1, &d);

        for (gi, g) in groups.iter().enumerate() {
            let prefix = format!("{group_key}[{gi}].");
            let mut gbag = Bag::default();
            for b in &broadcast {
                let mut copy = b.clone();
                copy.weak = gi > 0;
                gbag.segs.push(copy);
            }
            w.write_scope(&self.group, g, &prefix, &mut gbag);
            let mut raws = Raws::new(g.get("unmapped"), &source_delims);
            let start = out.len();
            let aoe_items: Vec<Json> = g.get("aoe").and_then(Json::as_array).cloned().unwrap_or_default();
            let observations: Vec<Json> = g.get("observations").and_then(Json::as_array).cloned().unwrap_or_default();
            let layout = self.layout_group.clone();
            let first = !diagnoses_written;
            let mut subs = |name: &str, out: &mut Vec<String>, raws: &mut Raws, w: &mut Writer<'_>| match name {
                "diagnosis" if first => write_diagnoses(w, out, raws),
                "aoe" => {
                    let Some(aoe) = &self.aoe else { return };
                    for (k, item) in aoe_items.iter().enumerate() {
                        let mut b = Bag::default();
                        if let (Some(tpl), true) = (&aoe.template, aoe.from_nte) {
                            let mut text = String::new();
                            for piece in tpl {
                                match piece {
                                    Piece::Lit(l) => text.push_str(l),
                                    Piece::Field(f) => {
                                        text.push_str(get_json(item, f).and_then(Json::as_str).unwrap_or(""))
                                    }
                                    Piece::Path(_) => {}
                                }
                            }
                            b.get("NTE", 1).set(&Path::new_unchecked(*b"NTE", 1, Some(3), None, None, None), &text);
                        }
                        w.write_scope(&aoe.scope, item, &format!("{prefix}aoe[{k}]."), &mut b);
                        if let Some(Cond::In(p, vals)) = &aoe.when {
                            if let Some(v) = vals.first() {
                                let seg = b.get(p.segment(), p.occurrence());
                                if seg.current(p).is_empty() {
                                    seg.set(p, v);
                                }
                            }
                        }
                        for seg in std::mem::take(&mut b.segs) {
                            w.emit_one(out, seg, raws);
                        }
                    }
                }
                "observation" => {
                    for (k, item) in observations.iter().enumerate() {
                        let mut b = Bag::default();
                        w.write_scope(&self.observation, item, &format!("{prefix}observations[{k}]."), &mut b);
                        let layout = self.layout_observation.clone();
                        w.emit(out, &layout, &mut b, raws, false, &mut |_, _, _, _| {});
                    }
                }
                _ => {}
            };
            w.emit(&mut out, &layout, &mut gbag, &mut raws, true, &mut subs);
            out.extend(raws.leftovers(&d));
            renumber_group(&mut out, start, &d);
            diagnoses_written = true;
        }
        // OBR set IDs count across the message.
        let mut obr = 0;
        for s in out.iter_mut() {
            if s.starts_with("OBR|") {
                obr += 1;
                let rest = s[4..].find('|').map_or(String::new(), |i| s[4 + i..].to_owned());
                *s = format!("OBR|{obr}{rest}");
            }
        }
        if !w.problems.is_empty() {
            return Err(MapError { problems: w.problems });
        }
        let mut text = out.join("\r");
        text.push('\r');
        Ok(text)
    }
}

/// Within an order group: OBX and DG1 count through the group, NTE restarts
/// after each OBX (notes of the order, then of each observation).
fn renumber_group(segments: &mut [String], from: usize, d: &Delimiters) {
    let sep = d.field as char;
    let mut obx = 0;
    let mut nte = 0;
    let mut dg1 = 0;
    let mut spm = 0;
    let mut tq1 = 0;
    for s in segments.iter_mut().skip(from) {
        let name = s.get(..3).unwrap_or("").to_owned();
        let n = match name.as_str() {
            "OBX" => {
                obx += 1;
                nte = 0;
                obx
            }
            "NTE" => {
                nte += 1;
                nte
            }
            "DG1" => {
                dg1 += 1;
                dg1
            }
            "SPM" => {
                spm += 1;
                spm
            }
            "TQ1" => {
                tq1 += 1;
                tq1
            }
            _ => continue,
        };
        let rest = s.get(3..).unwrap_or("");
        let after_f1 = rest.strip_prefix(sep).map(|r| r.find(sep).map_or("", |i| &r[i..])).unwrap_or("");
        *s = format!("{name}{sep}{n}{after_f1}");
    }
}

// ------------------------------------------------------------------ profile check

/// What [`Profile::check`] found in one sample message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SampleReport {
    /// Which message of the file (1-based).
    pub message: usize,
    /// MSH-10, when readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_id: Option<String>,
    /// The message could not be parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
    /// Required-field, code-map and value problems.
    pub problems: Vec<Problem>,
    /// Locations with data no rule reads.
    pub unmapped: Vec<String>,
    /// HL7 → contract → HL7 → contract gives the same contract value.
    pub round_trips: bool,
}

impl SampleReport {
    /// The report for a sample that does not parse.
    pub fn unparsable(message: usize, error: String) -> SampleReport {
        SampleReport {
            message,
            control_id: None,
            parse_error: Some(error),
            problems: Vec::new(),
            unmapped: Vec::new(),
            round_trips: false,
        }
    }

    /// True when the sample passes the go-live gate: it parses, maps without
    /// problems and round-trips.
    pub fn passed(&self) -> bool {
        self.parse_error.is_none() && self.problems.is_empty() && self.round_trips
    }
}

impl Profile {
    /// Runs the profile over one sample message: problems, unmapped data and
    /// whether the message round-trips.
    ///
    /// # Examples
    ///
    /// ```
    /// use hl7_core::{Message, profile::Profile};
    ///
    /// let profile = Profile::load("v23-orm-o01")?;
    /// let msg = Message::parse(b"MSH|^~\\&|EHR||LIS||20240101||ORM^O01|M1|P|2.3\rPID|1||P1||DOE||19700101|F||||||||||ACCT9\rORC|NW|PL1\rOBR|1|PL1||85025||||||||||||1234567893\r")?;
    /// let report = profile.check(&msg, 1);
    /// assert!(report.problems.is_empty());
    /// assert_eq!(report.unmapped, ["PID-18"]); // the account number no rule reads
    /// assert!(report.round_trips);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check(&self, msg: &Message<'_>, n: usize) -> SampleReport {
        let mapped = self.map_message(msg);
        let control_id = msg.control_id().map(|c| c.into_owned());
        let round_trips = mapped.problems.is_empty() && self.round_trips(&mapped.value);
        SampleReport {
            message: n,
            control_id,
            parse_error: None,
            problems: mapped.problems,
            unmapped: mapped.unread,
            round_trips,
        }
    }

    fn round_trips(&self, value: &Json) -> bool {
        let again = self.write(value, self.kind).ok().and_then(|text| {
            let msg = Message::parse(text.as_bytes()).ok()?;
            let m = self.map_value(&msg);
            m.problems.is_empty().then_some(m.value)
        });
        match again {
            Some(mut v) => {
                // A value the contract did not have is generated on the way out.
                for key in ["message_control_id", "sent_at"] {
                    if value.get(key).is_none() {
                        if let Some(o) = v.as_object_mut() {
                            o.remove(key);
                        }
                    }
                }
                v == *value
            }
            None => false,
        }
    }
}
