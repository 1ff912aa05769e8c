//! Writing: the lab contract → HL7 in a profile's dialect.
//!
//! The writer starts from the segments the contract kept (`unmapped`), so
//! what no rule maps goes back byte for byte, and writes each rule's value
//! on top, in the order the profile's layout gives.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value as Json;

use super::{Cond, FieldKind, Kind, MapError, Piece, Problem, ProblemKind, Profile, Rule, Scope, Source, SET_ID};
use crate::builder::{format_timestamp, new_control_id};
use crate::contract::{LabOrder, LabResult, ResultStatus};
use crate::datetime::Timestamp;
use crate::escape;
use crate::message::{Message, Segment};
use crate::{Delimiters, Path};

fn get_json<'j>(root: &'j Json, dotted: &str) -> Option<&'j Json> {
    let mut cur = root;
    for part in dotted.split('.') {
        cur = cur.get(part)?;
    }
    (!cur.is_null()).then_some(cur)
}

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
    /// The source text of each field of a kept segment, until a write
    /// touches it: an untouched field goes back byte for byte (`^~X` keeps
    /// its empty components, which the tree would trim).
    pristine: Vec<Option<String>>,
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
            t.pristine.resize(i, None);
            t.pristine.push(Some(f.raw().to_owned()));
        }
        t
    }

    /// A write reaches field `f` (1-based): it is no longer the source's.
    fn touch(&mut self, f: usize) {
        if let Some(p) = f.checked_sub(1).and_then(|i| self.pristine.get_mut(i)) {
            *p = None;
        }
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

    /// The decoded text of the leaf a value for this place goes to (as
    /// [`apply`](Tree::apply) resolves it); `None` for a raw field.
    fn leaf(&self, field: usize, rep: usize, comp: Option<usize>, sub: Option<usize>) -> Option<String> {
        if self.raw.contains_key(&field) || field == 0 || rep == 0 {
            return None;
        }
        let r = self.fields.get(field - 1)?.get(rep - 1)?;
        let (comp, sub) = match (comp, sub) {
            (None, _) if r.len() > 1 || r.first().is_some_and(|c| c.len() > 1) => (Some(1), Some(1)),
            (Some(c), None) if c > 0 && r.get(c - 1).is_some_and(|x| x.len() > 1) => (Some(c), Some(1)),
            other => other,
        };
        if comp == Some(0) || sub == Some(0) {
            return None;
        }
        let raw = self.get(field, rep, comp, sub);
        Some(escape::decode(&raw, &self.delims, crate::Charset::UTF_8).into_owned())
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
                self.touch(*field);
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
                self.touch(*field);
                *self.field_mut(*field) = values.iter().map(|v| vec![vec![esc(v)]]).collect();
            }
            Op::Raw { field, text } => {
                if weak && !self.get(*field, 1, None, None).is_empty() {
                    return;
                }
                self.touch(*field);
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
            if let Some(Some(raw)) = self.pristine.get(i) {
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
    /// For a write of a rule's value: how the reader reads that place, by
    /// index into `ops`. A kept base whose text there already reads as the
    /// same value keeps its own spelling ("female" stays "female" rather
    /// than becoming the map's "FEMALE").
    inbound: Vec<(usize, Inbound)>,
}

/// A place in a segment: field, repetition, component, subcomponent (1-based).
type Place = (usize, usize, Option<usize>, Option<usize>);

/// How the reader turns the text at one place into a contract value.
#[derive(Debug, Clone)]
struct Inbound {
    kind: FieldKind,
    transforms: Vec<super::Transform>,
    map: Option<String>,
    date_format: Option<String>,
    /// The contract value being written, as JSON.
    value: Json,
    /// A split rule's separator: the place holds several parts.
    split: Option<String>,
    /// What the reader takes for an empty place.
    default: Option<String>,
    /// For a template rule (without split, transforms or map): its pieces,
    /// read back from the whole kept segment rather than one place.
    template: Option<Vec<Piece>>,
}

/// The parts of a split value as the reader sees them.
fn parts<'t>(text: &'t str, sep: &str) -> Vec<&'t str> {
    let mut v: Vec<&str> = text.split(sep).map(str::trim).collect();
    while v.last() == Some(&"") {
        v.pop();
    }
    v
}

impl Inbound {
    fn of<T>(rule: &Rule<T>, value: &Json) -> Inbound {
        Inbound {
            kind: rule.kind(),
            transforms: rule.transforms.clone(),
            map: rule.map.clone(),
            date_format: rule.date_format.clone(),
            value: value.clone(),
            split: rule.split.as_ref().map(|(sep, _)| sep.clone()),
            default: rule.default.clone(),
            template: match &rule.source {
                Source::Template(p) if rule.split.is_none() && rule.transforms.is_empty() && rule.map.is_none() => {
                    Some(p.clone())
                }
                _ => None,
            },
        }
    }

    /// Whether a template rule's pieces, read from the kept segment `name`
    /// (occurrence 1), give this value.
    fn template_reads_as(&self, tree: &Tree, name: &str) -> bool {
        let Some(pieces) = &self.template else { return false };
        let mut s = String::new();
        for piece in pieces {
            match piece {
                Piece::Lit(l) => s.push_str(l),
                Piece::Path(p) => {
                    if p.segment() != name || p.occurrence() != 1 {
                        return false;
                    }
                    let (Some(f), r) = (p.field(), p.repetition()) else { return false };
                    let at = (
                        f as usize,
                        r as usize,
                        p.component().map(|c| c as usize),
                        p.subcomponent().map(|c| c as usize),
                    );
                    s.push_str(&tree.leaf(at.0, at.1, at.2, at.3).unwrap_or_default());
                }
                Piece::Field(_) => return false,
            }
        }
        Some(s.as_str()) == self.value.as_str()
    }

    /// Whether `text` (decoded, from the kept segment) reads as this value;
    /// `written` is what the writer would put there.
    fn reads_as(&self, profile: &Profile, text: &str, written: &str) -> bool {
        if let Some(sep) = &self.split {
            // every part, not only this rule's, is in `written`
            return parts(text, sep) == parts(written, sep);
        }
        match self.kind {
            FieldKind::Time => {
                let ts = match &self.date_format {
                    Some(f) => super::read::parse_with_format(text, f),
                    None => Timestamp::parse_hl7(text).ok(),
                };
                ts.map(|t| t.to_iso()).as_deref() == self.value.as_str()
            }
            FieldKind::Status => {
                ResultStatus::from_hl7(text).and_then(|s| serde_json::to_value(s).ok()).as_ref() == Some(&self.value)
            }
            _ if text.trim().is_empty() => self.default.is_some() && self.default.as_deref() == self.value.as_str(),
            FieldKind::Str | FieldKind::BillTo => {
                let mut t = std::borrow::Cow::Borrowed(text);
                for tr in &self.transforms {
                    t = tr.apply(t);
                }
                let t = match &self.map {
                    None => t.as_ref(),
                    Some(m) => match profile.maps.get(m).and_then(|m| m.get(t.as_ref())) {
                        Some(v) => v.as_str(),
                        None => return false,
                    },
                };
                !t.is_empty() && Some(t) == self.value.as_str()
            }
            FieldKind::SegList | FieldKind::RepList | FieldKind::ObsValue => false,
        }
    }
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

    /// A rule's value, with how the reader reads it back.
    fn set_value(&mut self, path: &Path, text: &str, inbound: Option<Inbound>) {
        let at = self.ops.len();
        self.set(path, text);
        if let (Some(i), true) = (inbound, self.ops.len() > at) {
            self.inbound.push((at, i));
        }
    }

    fn build(&self, base: Option<Tree>, d: &Delimiters, profile: &Profile) -> String {
        // Constants fill a fresh segment; a kept segment already says what
        // the source said at those places.
        let kept = base.is_some();
        let mut t = base.unwrap_or_else(|| Tree::new(*d));
        // Places of a kept segment whose text already reads as the value
        // written last there: they keep the source's own spelling.
        let mut same: Vec<Place> = Vec::new();
        if kept {
            let mut last: Vec<(Place, usize)> = Vec::new();
            for (k, (op, _)) in self.ops.iter().enumerate() {
                if let Op::Set { field, rep, comp, sub, .. } = op {
                    let at = (*field, *rep, *comp, *sub);
                    match last.iter_mut().find(|(l, _)| *l == at) {
                        Some(e) => e.1 = k,
                        None => last.push((at, k)),
                    }
                }
            }
            for ((f, r, c, s), k) in last {
                let (Some((_, inb)), (Op::Set { value, .. }, false)) =
                    (self.inbound.iter().find(|(i, _)| *i == k), &self.ops[k])
                else {
                    continue;
                };
                let reads_same = match inb.template {
                    Some(_) => inb.template_reads_as(&t, &self.name),
                    None => t.leaf(f, r, c, s).is_some_and(|text| inb.reads_as(profile, &text, value)),
                };
                if reads_same {
                    same.push((f, r, c, s));
                }
            }
        }
        for (op, constant) in &self.ops {
            if *constant && kept {
                continue;
            }
            if let Op::Set { field, rep, comp, sub, .. } = op {
                if same.contains(&(*field, *rep, *comp, *sub)) {
                    continue;
                }
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

/// A kept segment: a base for the segment written in its place, or written
/// back as it is.
struct RawItem {
    name: String,
    occurrence: u32,
    tree: Tree,
    used: bool,
    /// The sub-group it belongs to ([`RawSegment::within`](crate::contract::RawSegment::within)).
    within: Option<String>,
}

/// Raw segments waiting to serve as bases, by (name, occurrence in scope).
struct Raws {
    items: Vec<RawItem>,
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
            items.push(RawItem {
                name: p.segment().to_owned(),
                occurrence: p.occurrence(),
                tree: Tree::from_segment(&seg, *delims),
                used: false,
                within: item.get("within").and_then(Json::as_str).map(str::to_owned),
            });
        }
        Raws { items, counts: HashMap::new() }
    }

    /// The kept segments of one sub-group, taken out of this scope: inside
    /// it they are bases and leftovers at its own level.
    fn sub(&mut self, label: &str) -> Raws {
        let mut items = Vec::new();
        for i in self.items.iter_mut().filter(|i| !i.used && i.within.as_deref() == Some(label)) {
            i.used = true;
            items.push(RawItem {
                name: i.name.clone(),
                occurrence: i.occurrence,
                tree: i.tree.clone(),
                used: false,
                within: None,
            });
        }
        Raws { items, counts: HashMap::new() }
    }

    /// The base for the next segment of this name written in the scope.
    fn base_for(&mut self, name: &str) -> Option<Tree> {
        let c = self.counts.entry(name.to_owned()).or_insert(0);
        *c += 1;
        let n = *c;
        self.items.iter_mut().find(|i| i.name == name && i.occurrence == n && !i.used && i.within.is_none()).map(
            |item| {
                item.used = true;
                item.tree.clone()
            },
        )
    }

    /// What was kept under the `n`-th SPM of the scope.
    fn specimen_children(&mut self, n: u32, d: &Delimiters) -> Vec<String> {
        self.sub(&format!("SPM({n})")).leftovers(d)
    }

    fn leftovers_named(&mut self, name: &str, d: &Delimiters) -> Vec<String> {
        let mut out = Vec::new();
        for k in 0..self.items.len() {
            let i = &mut self.items[k];
            if i.used || i.within.is_some() || i.name != name {
                continue;
            }
            i.used = true;
            out.push(i.tree.encode(&i.name, d));
            if name == "SPM" {
                let occ = i.occurrence;
                out.extend(self.specimen_children(occ, d));
            }
        }
        out
    }

    /// Everything not yet written: the scope's own segments, then (so that
    /// nothing is ever dropped) those of sub-groups that were not written
    /// in their place.
    fn leftovers(&mut self, d: &Delimiters) -> Vec<String> {
        let mut out = Vec::new();
        for k in 0..self.items.len() {
            let i = &mut self.items[k];
            if i.used || i.within.is_some() {
                continue;
            }
            i.used = true;
            out.push(i.tree.encode(&i.name, d));
            if i.name == "SPM" {
                let occ = i.occurrence;
                out.extend(self.specimen_children(occ, d));
            }
        }
        for i in self.items.iter_mut().filter(|i| !i.used) {
            i.used = true;
            out.push(i.tree.encode(&i.name, d));
        }
        out
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
    fn write_scope<T>(&mut self, scope: &Scope<T>, value: &Json, prefix: &str, bag: &mut Bag) {
        for (path, v) in &scope.constants {
            bag.get(path.segment(), path.occurrence()).set_weak(path, v);
        }
        for rule in &scope.rules {
            let Some(v) = get_json(value, &rule.field) else { continue };
            let Source::Path(path) = &rule.source else {
                if let (Source::Template(pieces), Some(s)) = (&rule.source, v.as_str()) {
                    self.write_template(pieces, s, bag, Inbound::of(rule, v));
                }
                continue;
            };
            match rule.kind() {
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
                            let joined = parts.join(&joiner);
                            seg.set_value(path, joined.trim_end_matches([' ', ',']), Some(Inbound::of(rule, v)));
                        }
                        None => bag.get(path.segment(), path.occurrence()).set_value(
                            path,
                            &text,
                            Some(Inbound::of(rule, v)),
                        ),
                    }
                    // Copies (OBR-16 beside ORC-12) fill a fresh segment; a kept
                    // segment already says what the source had there, which may
                    // differ from the value and must not be lost.
                    for p in &rule.also {
                        bag.get(p.segment(), p.occurrence()).set_weak(p, &text);
                    }
                }
            }
        }
    }

    fn write_template(&mut self, pieces: &[Piece], s: &str, bag: &mut Bag, inbound: Inbound) {
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
                    let check = inbound.template.is_some().then(|| inbound.clone());
                    bag.get(p.segment(), p.occurrence()).set_value(p, v, check);
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

    fn outbound_text<T>(&mut self, rule: &Rule<T>, v: &Json, prefix: &str) -> Option<String> {
        let mut text = match rule.kind() {
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
        out.push(seg.build(base, &self.delims, self.profile));
        if seg.name == "SPM" {
            let n = raws.counts.get("SPM").copied().unwrap_or(0);
            out.extend(raws.specimen_children(n, &self.delims));
        }
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

    pub(super) fn write(&self, json: &Json, kind: Kind) -> Result<String, MapError> {
        if kind != self.kind {
            return Err(self.wrong_kind());
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
        match kind {
            Kind::Order => w.write_scope(&self.order, json, "", &mut bag),
            Kind::Result => w.write_scope(&self.result, json, "", &mut bag),
        }
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
        out.push(msh.build(msg_raws.base_for("MSH"), &d, self));

        let insurances: Vec<Json> =
            json.pointer("/billing/insurances").and_then(Json::as_array).cloned().unwrap_or_default();
        let diagnoses: Vec<Json> = json.get("diagnoses").and_then(Json::as_array).cloned().unwrap_or_default();
        let mut diagnoses_written = false;
        // What was kept of each diagnosis (in or out of an order group) is
        // written with that diagnosis, wherever the layout puts diagnoses.
        let dg_raws: std::cell::RefCell<Vec<Raws>> =
            std::cell::RefCell::new((0..diagnoses.len()).map(|i| msg_raws.sub(&format!("diagnoses[{i}]"))).collect());
        let write_diagnoses = |w: &mut Writer<'_>, out: &mut Vec<String>, _: &mut Raws| {
            let mut kept = dg_raws.borrow_mut();
            for (i, (dg, own)) in diagnoses.iter().zip(kept.iter_mut()).enumerate() {
                let mut b = Bag::default();
                w.write_scope(&self.diagnosis, dg, &format!("diagnoses[{i}]."), &mut b);
                for seg in std::mem::take(&mut b.segs) {
                    w.emit_one(out, seg, own);
                }
                out.extend(own.leftovers(&w.delims));
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
            match kind {
                Kind::Order => w.write_scope(&self.test, g, &prefix, &mut gbag),
                Kind::Result => w.write_scope(&self.report, g, &prefix, &mut gbag),
            }
            let mut raws = Raws::new(g.get("unmapped"), &source_delims);
            let start = out.len();
            let aoe_items: Vec<Json> = g.get("aoe").and_then(Json::as_array).cloned().unwrap_or_default();
            let observations: Vec<Json> = g.get("observations").and_then(Json::as_array).cloned().unwrap_or_default();
            let layout = self.layout_group.clone();
            let first = !diagnoses_written;
            let mut subs = |name: &str, out: &mut Vec<String>, raws: &mut Raws, w: &mut Writer<'_>| match name {
                "diagnosis" if first => write_diagnoses(w, out, raws),
                "aoe" => {
                    // observations kept before the first answer (or of a dialect without AOE)
                    out.extend(raws.sub("aoe").leftovers(&w.delims));
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
                        let mut own = raws.sub(&format!("aoe[{k}]"));
                        for seg in std::mem::take(&mut b.segs) {
                            w.emit_one(out, seg, &mut own);
                        }
                        out.extend(own.leftovers(&w.delims));
                    }
                }
                "observation" => {
                    for (k, item) in observations.iter().enumerate() {
                        let mut b = Bag::default();
                        w.write_scope(&self.observation, item, &format!("{prefix}observations[{k}]."), &mut b);
                        let layout = self.layout_observation.clone();
                        let mut own = raws.sub(&format!("observations[{k}]"));
                        w.emit(out, &layout, &mut b, &mut own, false, &mut |_, _, _, _| {});
                        out.extend(own.leftovers(&w.delims));
                    }
                }
                _ => {}
            };
            w.emit(&mut out, &layout, &mut gbag, &mut raws, true, &mut subs);
            out.extend(raws.leftovers(&d));
            renumber_group(&mut out, start, &d);
            diagnoses_written = true;
        }
        // Diagnoses the layout never wrote still keep what was kept of them.
        for own in dg_raws.borrow_mut().iter_mut() {
            out.extend(own.leftovers(&d));
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
                // a specimen's observations count from 1 under their SPM
                obx = 0;
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
