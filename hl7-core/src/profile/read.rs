//! Reading: an HL7 message → the lab contract, through a compiled profile.
//!
//! The reader writes each value straight into the typed contract struct
//! through the rule's [`Slot`], keeps a per-segment record of what it read
//! (marks), and keeps every segment holding data no rule read as a
//! [`RawSegment`]. Fields of a segment are indexed once, on first use, so a
//! scope with a dozen rules on OBX walks the OBX's delimiters once, not a
//! dozen times.

use std::borrow::Cow;

use super::slots::{Fields, Slot};
use super::{Aoe, Cond, Kind, Piece, Problem, ProblemKind, Profile, Rule, Scope, Source, SET_ID};
use crate::contract::{
    AoeAnswer, BillTo, Coded, Contract, LabOrder, LabResult, Observation, OrderedTest, RawSegment, Report,
    ResultStatus, Value,
};
use crate::datetime::{Precision, Timestamp};
use crate::lab::{LabView, Order};
use crate::message::{Field, Message, Segment};
use crate::{Element, Path};

/// What [`Profile::map_message`] found: the contract value, its problems,
/// and the locations holding data no rule reads.
///
/// # Examples
///
/// ```
/// use hl7_core::{Message, profile::Profile};
///
/// let profile = Profile::load("v23-orm-o01")?;
/// let msg = Message::parse(b"MSH|^~\\&|EHR||LIS||20240101||ORM^O01|M1|P|2.3\r\
///     PID|1||P1||DOE||19700101|F||||||||||ACCT9\rORC|NW|PL1\rOBR|1|PL1||85025||||||||||||1234567893\r")?;
/// let mapped = profile.map_message(&msg);
/// assert!(mapped.problems.is_empty());
/// assert_eq!(mapped.value.as_order().unwrap().patient.family_name.as_deref(), Some("DOE"));
/// assert_eq!(mapped.unread, ["PID-18"]); // kept on the value as a raw PID
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The contract value (a [`LabOrder`] or a [`LabResult`], by the
    /// profile's kind); as complete as the message allows even when there
    /// are problems.
    pub value: Contract,
    /// Every problem, in message order.
    pub problems: Vec<Problem>,
    /// Paths with data that no rule reads (kept in `unmapped`); empty from
    /// [`Profile::map_value`].
    pub unread: Vec<String>,
}

// ------------------------------------------------------------------ marks

/// What a rule read: field, repetition (0 = every), component (0 = whole),
/// subcomponent (0 = whole), all 1-based.
type Key = [u32; 4];

fn key_of(path: &Path) -> Key {
    [
        path.field().unwrap_or(0),
        if path.field().is_some() { path.repetition() } else { 0 },
        path.component().unwrap_or(0),
        path.subcomponent().unwrap_or(0),
    ]
}

/// Marks per segment, as short linked lists in one vector: a segment has a
/// handful of marks, so a walk beats hashing, and a message costs a few
/// allocations rather than one per segment. Two bitmasks per segment answer
/// the common questions — was anything of field F read, was all of it —
/// without a walk (fields past 64 fall back to the walk).
#[derive(Debug, Default)]
struct Marks {
    /// Per segment index: 1 + the index of its newest mark, 0 for none.
    head: Vec<u32>,
    /// Per segment: bit F-1 set when something of field F was read.
    any: Vec<u64>,
    /// Per segment: bit F-1 set when all of field F was read.
    whole: Vec<u64>,
    /// Each mark and 1 + the index of the previous mark of its segment.
    marks: Vec<(Key, u32)>,
}

fn bit(field: u32) -> Option<u64> {
    (1..=64).contains(&field).then(|| 1u64 << (field - 1))
}

impl Marks {
    fn new(segments: usize) -> Marks {
        Marks {
            head: vec![0; segments],
            any: vec![0; segments],
            whole: vec![0; segments],
            marks: Vec::with_capacity(segments * 8),
        }
    }

    fn of(&self, seg: usize) -> impl Iterator<Item = Key> + '_ {
        let mut at = self.head.get(seg).copied().unwrap_or(0);
        std::iter::from_fn(move || {
            let (k, prev) = *self.marks.get(at.checked_sub(1)? as usize)?;
            at = prev;
            Some(k)
        })
    }

    fn insert(&mut self, seg: usize, key: Key) {
        // Duplicates (a place read by two rules) are harmless to the
        // queries, and cheaper than a walk per insert.
        let Some(&head) = self.head.get(seg) else { return };
        if let Some(b) = bit(key[0]) {
            self.any[seg] |= b;
            if key[1..] == [0, 0, 0] {
                self.whole[seg] |= b;
            }
        }
        self.marks.push((key, head));
        self.head[seg] = self.marks.len() as u32;
    }

    fn contains(&self, seg: usize, key: Key) -> bool {
        if key[1..] == [0, 0, 0] {
            if let (Some(b), Some(w)) = (bit(key[0]), self.whole.get(seg)) {
                return w & b != 0;
            }
        }
        self.of(seg).any(|k| k == key)
    }

    /// Whether anything of field `f` of the segment was read.
    fn field_read(&self, seg: usize, f: u32) -> bool {
        match (bit(f), self.any.get(seg)) {
            (Some(b), Some(a)) => a & b != 0,
            _ => self.of(seg).any(|m| m[0] == f),
        }
    }
}

// ------------------------------------------------------------------ field index

/// The fields of each segment a rule touched, found in one pass over the
/// segment and then looked up by number.
#[derive(Debug)]
struct FieldCache<'m> {
    /// Per segment index: (start in `fields`, count), or `u32::MAX` when not yet indexed.
    range: Vec<(u32, u32)>,
    fields: Vec<Field<'m>>,
}

impl<'m> FieldCache<'m> {
    fn new(segments: usize) -> FieldCache<'m> {
        FieldCache { range: vec![(u32::MAX, 0); segments], fields: Vec::with_capacity(segments * 32) }
    }

    fn field(&mut self, seg: &Segment<'m>, n: usize) -> Option<Field<'m>> {
        if n == 0 {
            return None;
        }
        let (start, len) = match self.range.get(seg.index()) {
            None => return seg.field(n),
            Some(&(u32::MAX, _)) => {
                let start = self.fields.len();
                self.fields.extend(seg.fields());
                let r = (start as u32, (self.fields.len() - start) as u32);
                self.range[seg.index()] = r;
                r
            }
            Some(&r) => r,
        };
        (n <= len as usize).then(|| self.fields[start as usize + n - 1])
    }
}

// ------------------------------------------------------------------ scopes

/// Where in the contract a scope writes, for naming fields in problems;
/// rendered only when there is a problem.
#[derive(Debug, Clone, Copy)]
enum At {
    Message,
    Insurance(usize),
    Diagnosis(usize),
    Group(usize),
    Aoe(usize, usize),
    Observation(usize, usize),
}

impl At {
    fn field(self, kind: Kind, name: &str) -> String {
        let g = if kind == Kind::Order { "tests" } else { "reports" };
        match self {
            At::Message => name.to_owned(),
            At::Insurance(i) => format!("billing.insurances[{i}].{name}"),
            At::Diagnosis(i) => format!("diagnoses[{i}].{name}"),
            At::Group(i) => format!("{g}[{i}].{name}"),
            At::Aoe(i, k) => format!("{g}[{i}].aoe[{k}].{name}"),
            At::Observation(i, k) => format!("{g}[{i}].observations[{k}].{name}"),
        }
    }
}

/// The sub-group of an order group a segment belongs to, so a kept segment
/// goes back where it was (see [`RawSegment::within`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Within {
    /// The group's own level (ORC, OBR, its notes, SPM …), or the message's.
    Group,
    /// Observation k (0-based) of a report.
    Observation(usize),
    /// After ask-at-order-entry answer j (0-based); `None`: before the first.
    Aoe(Option<usize>),
    /// Under specimen j (1-based, as the SPM's occurrence in the group).
    Specimen(usize),
    /// Diagnosis i (0-based) of an order: kept at the message level, as
    /// the contract lists diagnoses, wherever the DG1 was.
    Diagnosis(usize),
}

impl Within {
    fn label(self) -> Option<String> {
        match self {
            Within::Group => None,
            Within::Observation(k) => Some(format!("observations[{k}]")),
            Within::Aoe(None) => Some("aoe".into()),
            Within::Aoe(Some(j)) => Some(format!("aoe[{j}]")),
            Within::Specimen(j) => Some(format!("SPM({j})")),
            Within::Diagnosis(i) => Some(format!("diagnoses[{i}]")),
        }
    }
}

/// Segments a scope reads from, with a parent to fall back on.
struct Ctx<'c, 'm> {
    /// Where single values are looked up.
    segs: &'c [Segment<'m>],
    /// The scope's own segments, for list fields (notes).
    own: &'c [Segment<'m>],
    parent: Option<&'c Ctx<'c, 'm>>,
    at: At,
}

fn nth_named<'m>(segs: &[Segment<'m>], path: &Path) -> Option<Segment<'m>> {
    let name = path.segment();
    segs.iter().filter(|s| s.name() == name).nth(path.occurrence() as usize - 1).copied()
}

impl<'m> Ctx<'_, 'm> {
    fn find(&self, path: &Path) -> Option<Segment<'m>> {
        nth_named(self.segs, path).or_else(|| self.parent.and_then(|p| p.find_own(path)))
    }

    /// Looks in the scope's own segments only: a group falling back on the
    /// message must not find another group's segments.
    fn find_own(&self, path: &Path) -> Option<Segment<'m>> {
        nth_named(self.own, path).or_else(|| self.parent.and_then(|p| p.find_own(path)))
    }
}

/// Where a value was read; the path and offset are worked out only if a
/// problem needs them.
struct Located<'m> {
    seg: Option<Segment<'m>>,
    /// The rule's path, and the component/subcomponent it was extended to
    /// (a path that stops at a composite reads its first leaf).
    path: Option<(Path, Option<u32>, Option<u32>)>,
    el: Option<Element<'m>>,
}

impl Located<'_> {
    fn nowhere() -> Self {
        Located { seg: None, path: None, el: None }
    }

    fn missing(path: &Path) -> Self {
        Located { seg: None, path: Some((path.clone(), path.component(), path.subcomponent())), el: None }
    }

    fn offset(&self) -> Option<u64> {
        self.el.map(|e| e.offset()).or(self.seg.map(|s| s.offset()))
    }

    fn path_string(&self) -> Option<String> {
        let (p, c, s) = self.path.as_ref()?;
        let mut leaf = p.clone();
        if let (None, Some(c)) = (p.component(), c) {
            leaf = leaf.with_component(*c).unwrap_or_else(|_| p.clone());
        }
        if let (None, Some(s)) = (p.subcomponent(), s) {
            leaf = leaf.clone().with_subcomponent(*s).unwrap_or(leaf);
        }
        Some(match &self.seg {
            Some(seg) => seg_path_of(seg, &leaf),
            None => leaf.to_string(),
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

/// A borrowed value narrowed to a part of itself, still borrowed if it was.
fn narrow<'m>(c: Cow<'m, str>, f: impl FnOnce(&str) -> Option<&str>) -> Option<Cow<'m, str>> {
    match c {
        Cow::Borrowed(s) => f(s).map(Cow::Borrowed),
        Cow::Owned(s) => f(&s).map(|x| Cow::Owned(x.to_owned())),
    }
}

struct Reader<'p, 'm> {
    profile: &'p Profile,
    marks: Marks,
    cache: FieldCache<'m>,
    problems: Vec<Problem>,
    /// Name every unread location (for `check`), not only keep the segments.
    want_unread: bool,
}

impl<'p, 'm> Reader<'p, 'm> {
    /// The element of `seg` at the field/repetition/component/subcomponent of `path`.
    fn element(&mut self, seg: &Segment<'m>, path: &Path) -> Option<Element<'m>> {
        let f = self.cache.field(seg, path.field()? as usize)?;
        let r = f.repetition(path.repetition() as usize)?;
        let Some(c) = path.component() else {
            return Some(Element::from_repetition(r));
        };
        let comp = r.component(c as usize)?;
        let Some(s) = path.subcomponent() else {
            return Some(Element::from_component(comp));
        };
        comp.subcomponent(s as usize).map(Element::from_subcomponent)
    }

    fn value(&mut self, seg: &Segment<'m>, path: &Path) -> Option<Cow<'m, str>> {
        self.element(seg, path).and_then(|e| e.value())
    }

    /// Reads the value at `path` and marks it read. A string is a leaf: a
    /// path that stops at a composite reads its first leaf, and the rest
    /// stays unread (kept raw).
    fn locate(&mut self, ctx: &Ctx<'_, 'm>, path: &Path) -> (Option<Cow<'m, str>>, Located<'m>) {
        let Some(seg) = ctx.find(path) else {
            return (None, Located::missing(path));
        };
        let fno = path.field().unwrap_or(0);
        let field = self.cache.field(&seg, fno as usize);
        let structural = fno <= 2 && seg.name() == "MSH";
        let (mut comp_no, mut sub_no) = (path.component(), path.subcomponent());
        let mut el = None;
        if let Some(rep) = field.and_then(|f| f.repetition(path.repetition() as usize)) {
            if comp_no.is_none() && !structural && rep.has_children() {
                comp_no = Some(1);
            }
            match comp_no {
                None => el = Some(Element::from_repetition(rep)),
                Some(c) => {
                    if let Some(comp) = rep.component(c as usize) {
                        if sub_no.is_none() && !structural && comp.has_children() {
                            sub_no = Some(1);
                        }
                        el = match sub_no {
                            None => Some(Element::from_component(comp)),
                            Some(s) => comp.subcomponent(s as usize).map(Element::from_subcomponent),
                        };
                    }
                }
            }
        }
        let mut key = [fno, path.repetition(), comp_no.unwrap_or(0), sub_no.unwrap_or(0)];
        if path.field().is_none() {
            key[1] = 0;
        } else if comp_no.is_none() && path.repetition() == 1 && field.is_some_and(|f| !f.has_children()) {
            // a whole-field read reads every repetition only if it has one
            key[1] = 0;
        }
        self.marks.insert(seg.index(), key);
        let at = Located { seg: Some(seg), path: Some((path.clone(), comp_no, sub_no)), el };
        (el.and_then(|e| e.value()), at)
    }

    /// MSH-9, MSH-11 and MSH-12 are what the profile writes; reading them is
    /// recognising the message, not data to keep.
    fn mark_structure(&mut self, msg: &Message<'_>) {
        let profile = self.profile;
        let msh = msg.msh();
        let idx = msh.index();
        let (code, trigger, structure) = msg.message_type();
        let mut want = profile.message_type.split('^');
        if want.next() == Some(code)
            && want.next() == Some(trigger)
            && (structure.is_empty() || want.next() == Some(structure))
        {
            self.marks.insert(idx, [9, 0, 0, 0]);
        }
        if msh.field(11).is_some_and(|f| f.raw() == "P") {
            self.marks.insert(idx, [11, 0, 0, 0]);
        }
        if msg.version() == Some(profile.version.as_str()) {
            self.marks.insert(idx, [12, 0, 0, 0]);
        }
    }

    /// A message-level value read from the first ORC/OBR is also what the
    /// other groups carry when they say the same.
    fn mark_repeated<'r, T: 'r>(
        &mut self,
        all: &[Segment<'m>],
        repeated: &[&str],
        rules: impl Iterator<Item = &'r Rule<T>>,
    ) {
        for rule in rules {
            let Source::Path(p) = &rule.source else { continue };
            if !repeated.contains(&p.segment()) {
                continue;
            }
            let mut same = all.iter().filter(|s| s.name() == p.segment());
            let Some(first) = same.next() else { continue };
            let first = self.value(first, p);
            let key = key_of(p);
            for seg in same {
                if self.value(seg, p) == first {
                    self.marks.insert(seg.index(), key);
                }
            }
        }
    }

    fn problem(&mut self, kind: ProblemKind, field: String, at: &Located<'_>, message: String) {
        self.problems.push(Problem { kind, field, path: at.path_string(), offset: at.offset(), message });
    }

    /// The text of a rule, after split, transforms, map and default; and the
    /// value as found (for `also`).
    fn rule_text<T>(
        &mut self,
        ctx: &Ctx<'_, 'm>,
        rule: &Rule<T>,
    ) -> (Option<String>, Option<Cow<'m, str>>, Located<'m>) {
        let (text, loc): (Option<Cow<'m, str>>, Located<'m>) = match &rule.source {
            Source::Path(p) => self.locate(ctx, p),
            Source::Const(v) => (Some(Cow::Owned(v.clone())), Located::nowhere()),
            Source::Template(pieces) => {
                let mut s = String::new();
                let mut any = false;
                let mut first: Option<Located<'m>> = None;
                for piece in pieces {
                    match piece {
                        Piece::Lit(l) => s.push_str(l),
                        Piece::Path(p) => {
                            let (t, at) = self.locate(ctx, p);
                            if let Some(t) = t {
                                any = true;
                                s.push_str(&t);
                            }
                            first.get_or_insert(at);
                        }
                        Piece::Field(_) => {}
                    }
                }
                (any.then_some(Cow::Owned(s)), first.unwrap_or_else(Located::nowhere))
            }
        };
        let found = match &rule.source {
            Source::Path(_) if !rule.also.is_empty() => text.clone(),
            _ => None,
        };
        let mut text = text;
        if let Some((sep, part)) = &rule.split {
            text = text.and_then(|t| {
                narrow(t, |s| s.split(sep.as_str()).nth(part - 1).map(str::trim).filter(|p| !p.is_empty()))
            });
        }
        for tr in &rule.transforms {
            text = text.map(|t| tr.apply(t));
        }
        let mut text = text.filter(|t| !t.is_empty()).map(Cow::into_owned);
        if let (Some(t), Some(m)) = (&text, &rule.map) {
            match self.profile.maps.get(m).and_then(|map| map.get(t.as_str())) {
                Some(v) => text = Some(v.clone()),
                None => {
                    let msg = format!("code {t:?} has no entry in map {m}");
                    let field = ctx.at.field(self.profile.kind, &rule.field);
                    self.problem(ProblemKind::UnmappedCode, field, &loc, msg);
                }
            }
        }
        if text.is_none() {
            text = rule.default.clone();
        }
        (text, found, loc)
    }

    /// Puts a scalar rule's text into its slot, typed; `false` (with a
    /// problem) when the text is not a valid value of the field's type.
    fn set<T>(&mut self, ctx: &Ctx<'_, 'm>, rule: &Rule<T>, out: &mut T, t: String, at: &Located<'_>) -> bool {
        let field = || ctx.at.field(self.profile.kind, &rule.field);
        match rule.slot {
            Slot::Str(f) => *f(out) = Some(t),
            Slot::Time(f) => {
                let parsed = match &rule.date_format {
                    Some(fmt) => parse_with_format(&t, fmt),
                    None => Timestamp::parse_hl7(&t).ok(),
                };
                match parsed {
                    Some(ts) => *f(out) = Some(ts),
                    None => {
                        self.problem(ProblemKind::InvalidDate, field(), at, format!("invalid date/time {t:?}"));
                        return false;
                    }
                }
            }
            Slot::Status(f) => match ResultStatus::from_hl7(&t) {
                Some(s) if self.profile.accept_status.as_ref().is_none_or(|a| a.contains(&s)) => *f(out) = Some(s),
                Some(_) => {
                    let msg = format!("status {t:?} is not accepted by this profile");
                    self.problem(ProblemKind::InvalidValue, field(), at, msg);
                    return false;
                }
                None => {
                    self.problem(ProblemKind::InvalidValue, field(), at, format!("unknown result status {t:?}"));
                    return false;
                }
            },
            Slot::BillTo(f) => match t.as_str() {
                "client" => *f(out) = Some(BillTo::Client),
                "patient" => *f(out) = Some(BillTo::Patient),
                "insurance" => *f(out) = Some(BillTo::Insurance),
                _ => {
                    let msg = format!("bill-to {t:?} is not client, patient or insurance");
                    self.problem(ProblemKind::InvalidValue, field(), at, msg);
                    return false;
                }
            },
            Slot::SegList(_) | Slot::RepList(_) | Slot::ObsValue(_) => return false,
        }
        true
    }

    /// Applies a scope's constants and rules to its segments, writing into `out`.
    fn apply<T>(&mut self, ctx: &Ctx<'_, 'm>, scope: &Scope<T>, out: &mut T, skip: &[usize]) {
        for (path, value) in &scope.constants {
            if let Some(seg) = ctx.find(path) {
                let v = self.value(&seg, path);
                if v.as_deref() == Some(value.as_str()) || (value.is_empty() && v.is_none()) {
                    self.marks.insert(seg.index(), key_of(path));
                }
            }
        }
        for rule in &scope.rules {
            let set = match (rule.slot, &rule.source) {
                (Slot::SegList(f), Source::Path(p)) => {
                    let mut items = Vec::new();
                    for seg in ctx.own.iter().filter(|s| s.name() == p.segment() && !skip.contains(&s.index())) {
                        self.marks.insert(seg.index(), key_of(p));
                        if let Some(v) = self.value(seg, p) {
                            items.push(v.into_owned());
                        }
                    }
                    put_list(f(out), items)
                }
                (Slot::RepList(f), Source::Path(p)) => {
                    let Some(seg) = ctx.find(p) else { continue };
                    let fno = p.field().unwrap_or(0);
                    let Some(field) = self.cache.field(&seg, fno as usize) else { continue };
                    self.marks.insert(seg.index(), [fno, 0, 0, 0]);
                    let items: Vec<String> = field
                        .repetitions()
                        .filter_map(|r| Element::from_repetition(r).value())
                        .map(Cow::into_owned)
                        .collect();
                    put_list(f(out), items)
                }
                (Slot::ObsValue(f), Source::Path(p)) => {
                    let Some(seg) = ctx.find(p) else { continue };
                    let fno = p.field().unwrap_or(5);
                    self.marks.insert(seg.index(), [fno, 0, 0, 0]);
                    let vt = self.cache.field(&seg, 2).map_or("", |f| f.raw());
                    let v = self.cache.field(&seg, fno as usize).and_then(|f| obs_value(&f, vt));
                    let any = v.is_some();
                    if any {
                        *f(out) = v;
                    }
                    any
                }
                (Slot::SegList(_) | Slot::RepList(_) | Slot::ObsValue(_), _) => continue,
                _ => {
                    let before = self.problems.len();
                    let (text, found, loc) = self.rule_text(ctx, rule);
                    for p in &rule.also {
                        let key = key_of(p);
                        for seg in ctx.segs.iter().filter(|s| s.name() == p.segment()) {
                            let v = self.value(seg, p);
                            if v.is_some() && v == found {
                                self.marks.insert(seg.index(), key);
                            }
                        }
                    }
                    let set = match text {
                        None => false,
                        Some(t) => self.set(ctx, rule, out, t, &loc),
                    };
                    if !set && self.problems.len() > before {
                        continue; // already reported, more precisely
                    }
                    set
                }
            };
            if !set && rule.required {
                let at = match &rule.source {
                    Source::Path(p) => Located::missing(p),
                    _ => Located::nowhere(),
                };
                let field = ctx.at.field(self.profile.kind, &rule.field);
                self.problem(ProblemKind::RequiredMissing, field, &at, "required field is missing".into());
            }
        }
    }

    /// Whether `seg` holds data no rule read; with `names`, every such
    /// location is named into it.
    fn has_unread(&self, seg: &Segment<'m>, mut names: Option<&mut Vec<String>>) -> bool {
        let idx = seg.index();
        let is_msh = seg.name() == "MSH";
        let set_id = SET_ID.contains(&seg.name());
        let mut any = false;
        let mut seg_path: Option<String> = None;
        let mut name = |names: &mut Option<&mut Vec<String>>, p: &dyn Fn(&str) -> String| {
            if let Some(n) = names.as_deref_mut() {
                let sp = seg_path.get_or_insert_with(|| seg.path().to_string());
                n.push(p(sp));
            }
        };
        for (fi, f) in seg.fields().enumerate() {
            let fno = fi as u32 + 1;
            if (is_msh && fno <= 2) || (set_id && fno == 1) || f.is_empty() {
                continue;
            }
            if !self.marks.field_read(idx, fno) {
                // nothing of this field was read: the whole field is unread
                any = true;
                if names.is_none() {
                    return true;
                }
                name(&mut names, &|sp| format!("{sp}-{fno}"));
                continue;
            }
            if self.marks.contains(idx, [fno, 0, 0, 0]) {
                continue;
            }
            for (ri, r) in f.repetitions().enumerate() {
                let rno = ri as u32 + 1;
                if self.marks.contains(idx, [fno, rno, 0, 0]) {
                    continue;
                }
                for (ci, c) in r.components().enumerate() {
                    let cno = ci as u32 + 1;
                    if self.marks.contains(idx, [fno, rno, cno, 0]) {
                        continue;
                    }
                    for (si, s) in c.subcomponents().enumerate() {
                        let sno = si as u32 + 1;
                        if s.is_empty() || self.marks.contains(idx, [fno, rno, cno, sno]) {
                            continue;
                        }
                        any = true;
                        if names.is_none() {
                            return true;
                        }
                        let (rh, ch) = (r.has_children(), c.has_children());
                        name(&mut names, &|sp| {
                            let mut p = format!("{sp}-{fno}");
                            if rno > 1 {
                                p.push_str(&format!("({rno})"));
                            }
                            if rh {
                                p.push_str(&format!("-{cno}"));
                                if ch {
                                    p.push_str(&format!("-{sno}"));
                                }
                            }
                            p
                        });
                    }
                }
            }
        }
        any
    }

    /// The segments of a scope with data no rule read, as raw segments with
    /// scope-relative paths: the scope's own in the order the writer puts
    /// them back, then those of sub-groups (`within`), in message order.
    fn kept(
        &self,
        segs: &[Segment<'m>],
        within: &[Within],
        layout: &[String],
        unread: &mut Vec<String>,
    ) -> Vec<RawSegment> {
        // (in a sub-group, layout position or message index, name, occurrence)
        type SortKey<'n> = (bool, usize, &'n str, u32);
        let mut raws: Vec<(SortKey<'m>, RawSegment)> = Vec::new();
        let mut counts: Vec<(Within, &'m str, u32)> = Vec::new();
        for seg in segs {
            let name = seg.name();
            let w = within.get(seg.index()).copied().unwrap_or(Within::Group);
            let occ = match counts.iter_mut().find(|(x, n, _)| *x == w && *n == name) {
                Some(c) => {
                    c.2 += 1;
                    c.2
                }
                None => {
                    counts.push((w, name, 1));
                    1
                }
            };
            let found = self.has_unread(seg, self.want_unread.then_some(&mut *unread));
            if found {
                let path = if occ == 1 { name.to_owned() } else { format!("{name}({occ})") };
                let key = match w {
                    Within::Group => (false, layout.iter().position(|n| n == name).unwrap_or(usize::MAX), name, occ),
                    _ => (true, seg.index(), "", 0),
                };
                raws.push((key, RawSegment { path, text: seg.raw().to_owned(), within: w.label() }));
            }
        }
        raws.sort_by(|a, b| a.0.cmp(&b.0));
        raws.into_iter().map(|r| r.1).collect()
    }
}

/// Sets a list field when there is anything to put in it; whether it did.
fn put_list(slot: &mut Vec<String>, items: Vec<String>) -> bool {
    let any = !items.is_empty();
    if any {
        *slot = items;
    }
    any
}

pub(super) fn parse_with_format(t: &str, fmt: &str) -> Option<Timestamp> {
    use chrono::{NaiveDate, NaiveDateTime};
    if fmt.contains("%H") {
        let dt = NaiveDateTime::parse_from_str(t, fmt).ok()?;
        let p = if fmt.contains("%S") { Precision::Second } else { Precision::Minute };
        Some(Timestamp::new(dt, p, None))
    } else {
        NaiveDate::parse_from_str(t, fmt).ok().map(Timestamp::date)
    }
}

/// OBX-5 as a typed value, by OBX-2.
fn obs_value(f: &Field<'_>, value_type: &str) -> Option<Value> {
    if f.is_empty() {
        return None;
    }
    if f.repetitions().nth(1).is_some() {
        return Some(Value::Raw { text: f.raw().to_owned() });
    }
    let comp = |n: usize| f.component(n).and_then(|c| Element::from_component(c).value()).map(Cow::into_owned);
    Some(match value_type {
        "NM" if !f.has_children() => Value::Number { text: f.decoded().into_owned() },
        "ST" | "TX" | "FT" if !f.has_children() => Value::Text { text: f.decoded().into_owned() },
        "CE" | "CWE" | "CNE" | "CF" => Value::Coded { coded: Coded { code: comp(1), name: comp(2), system: comp(3) } },
        "SN" => Value::StructuredNumeric { comparator: comp(1), num1: comp(2), separator: comp(3), num2: comp(4) },
        _ => Value::Raw { text: f.raw().to_owned() },
    })
}

fn aoe_matches<'m>(profile: &Profile, aoe: &Aoe, r: &mut Reader<'_, 'm>, ctx: &Ctx<'_, 'm>) -> bool {
    let Some(cond) = &aoe.when else { return true };
    let mut value = |p: &Path| ctx.find(p).and_then(|s| r.value(&s, p));
    match cond {
        Cond::In(p, vals) => value(p).is_some_and(|v| vals.iter().any(|x| *x == v)),
        Cond::InMap(p, m) => value(p).is_some_and(|v| profile.maps.get(m).is_some_and(|map| map.contains_key(&*v))),
        Cond::Prefix(p, pre) => value(p).is_some_and(|v| v.starts_with(pre.as_str())),
    }
}

/// Matches `text` against a template of literals and `{field}` placeholders.
fn match_template<'t>(pieces: &'t [Piece], text: &str) -> Vec<(&'t str, String)> {
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
                    out.push((f.as_str(), value.to_owned()));
                }
                rest = r;
            }
            Piece::Path(_) => return out,
        }
        i += 1;
    }
    out
}

/// The segments of an order group other than its observations (ORC, OBR,
/// notes, timing, specimens …), in message order.
fn group_own<'m>(order: &Order<'m>) -> Vec<Segment<'m>> {
    let mut own: Vec<Segment<'m>> = Vec::new();
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
    own
}

impl Profile {
    /// Maps a message to the contract, collecting every problem rather than
    /// stopping at the first, and naming every location with data no rule
    /// reads (what `labbridge profile check` reports).
    ///
    /// # Examples
    ///
    /// ```
    /// use hl7_core::{Message, profile::Profile};
    ///
    /// let profile = Profile::load("lri-oru-r01")?;
    /// let msg = Message::parse(b"MSH|^~\\&|LIS|LAB|EHR|CLINIC|20240116||ORU^R01^ORU_R01|R1|P|2.5.1\r\
    ///     PID|1||PAT1^^^LAB^MR||DOE^JANE\rORC|RE||FIL1\r\
    ///     OBR|1||FIL1|2345-7^Glucose^LN|||||||||||||||||||||F\r\
    ///     OBX|1|NM|2345-7^Glucose^LN||95|mg/dL|70-99|N|||F\r")?;
    /// let mapped = profile.map_message(&msg);
    /// assert!(mapped.problems.is_empty(), "{:?}", mapped.problems);
    /// let result = mapped.value.as_result().unwrap();
    /// assert_eq!(result.reports[0].observations[0].value.as_ref().and_then(|v| v.as_f64()), Some(95.0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_message(&self, msg: &Message<'_>) -> Mapped {
        self.map_inner(msg, true)
    }

    /// [`map_message`](Profile::map_message) without the list of unread
    /// locations (`unread` is left empty): what a running connection needs,
    /// and faster. Unmapped data is still kept on the value.
    ///
    /// # Examples
    ///
    /// ```
    /// use hl7_core::{Message, profile::Profile};
    ///
    /// let profile = Profile::load("v23-orm-o01")?;
    /// let msg = Message::parse(b"MSH|^~\\&|EHR||LIS||20240101||ORU^R01|M1|P|2.3\r")?;
    /// let mapped = profile.map_value(&msg);
    /// assert_eq!(mapped.problems[0].path.as_deref(), Some("MSH-9")); // not an order
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_value(&self, msg: &Message<'_>) -> Mapped {
        self.map_inner(msg, false)
    }

    fn empty_contract(&self) -> Contract {
        match self.kind {
            Kind::Order => Contract::Order(LabOrder::default()),
            Kind::Result => Contract::Result(LabResult::default()),
        }
    }

    fn map_inner(&self, msg: &Message<'_>, want_unread: bool) -> Mapped {
        let (code, trigger, _) = msg.message_type();
        let mut want = self.message_type.split('^');
        let view = match LabView::new(msg) {
            Ok(v) if want.next() == Some(code) && want.next() == Some(trigger) => v,
            _ => {
                let at = msg.msh().field(9);
                let problem = Problem {
                    kind: ProblemKind::WrongMessageType,
                    field: "message_type".into(),
                    path: Some("MSH-9".into()),
                    offset: at.map(|f| f.offset()),
                    message: format!(
                        "message type {code}^{trigger}, profile {} expects {}",
                        self.name, self.message_type
                    ),
                };
                return Mapped { value: self.empty_contract(), problems: vec![problem], unread: Vec::new() };
            }
        };
        let n = msg.segment_count();
        let mut r = Reader {
            profile: self,
            marks: Marks::new(n),
            cache: FieldCache::new(n),
            problems: Vec::new(),
            want_unread,
        };
        let all: Vec<Segment<'_>> = msg.segments().collect();
        let orders: Vec<&Order<'_>> = view.orders().collect();
        // The order group (1-based) of each segment, 0 outside any.
        let mut group_of = vec![0u32; n];
        let own: Vec<Vec<Segment<'_>>> = orders.iter().map(|o| group_own(o)).collect();
        for (gi, o) in orders.iter().enumerate() {
            let observations =
                o.observations.iter().flat_map(|x| std::iter::once(&x.obx).chain(&x.notes).chain(&x.other));
            for s in own[gi].iter().chain(observations) {
                group_of[s.index()] = gi as u32 + 1;
            }
        }
        let groups: Vec<(Vec<Segment<'_>>, Vec<Segment<'_>>)> = own
            .into_iter()
            .enumerate()
            .map(|(gi, own)| {
                let every = all.iter().filter(|s| group_of[s.index()] == gi as u32 + 1).copied().collect();
                (own, every)
            })
            .collect();
        let outside: Vec<Segment<'_>> = all.iter().filter(|s| group_of[s.index()] == 0).copied().collect();
        // Segment names that occur more than once (ORC, OBR, OBX …).
        let mut seen: Vec<(&str, bool)> = Vec::with_capacity(16);
        for s in &all {
            let name = s.name();
            match seen.iter_mut().find(|(n, _)| *n == name) {
                Some(e) => e.1 = true,
                None => seen.push((name, false)),
            }
        }
        let repeated: Vec<&str> = seen.iter().filter(|(_, r)| *r).map(|(n, _)| *n).collect();
        let message_ctx = Ctx { segs: &all, own: &outside, parent: None, at: At::Message };
        let (group_layout, message_layout) = (&self.flat_group, &self.flat_message);
        let mut unread_groups = Vec::new();
        let mut unread_message = Vec::new();
        // Specimens' own segments are under their SPM, whatever the kind.
        let mut within = vec![Within::Group; n];
        for o in &orders {
            for (j, s) in o.specimens.iter().enumerate() {
                for seg in s.observations.iter().chain(&s.containers).chain(&s.other) {
                    within[seg.index()] = Within::Specimen(j + 1);
                }
            }
        }
        let value = match self.kind {
            Kind::Order => {
                let mut o = LabOrder::default();
                r.apply(&message_ctx, &self.order, &mut o, &[]);
                r.mark_structure(msg);
                r.mark_repeated(&all, &repeated, self.order.rules.iter());
                for (i, ins) in view.patient().map(|p| p.insurances.as_slice()).unwrap_or_default().iter().enumerate() {
                    let mut segs = vec![ins.in1];
                    segs.extend(ins.in2);
                    segs.extend(ins.in3.iter().copied());
                    let ctx = Ctx { segs: &segs, own: &segs, parent: Some(&message_ctx), at: At::Insurance(i) };
                    let mut item = Default::default();
                    r.apply(&ctx, &self.insurance, &mut item, &[]);
                    o.billing.insurances.push(item);
                }
                for (i, dg) in all.iter().filter(|s| s.name() == "DG1").enumerate() {
                    within[dg.index()] = Within::Diagnosis(i);
                    let segs = [*dg];
                    let ctx = Ctx { segs: &segs, own: &segs, parent: None, at: At::Diagnosis(i) };
                    let mut item = Default::default();
                    r.apply(&ctx, &self.diagnosis, &mut item, &[]);
                    o.diagnoses.push(item);
                }
                for (gi, (order, (own, _))) in orders.iter().zip(&groups).enumerate() {
                    let ctx = Ctx { segs: own, own, parent: Some(&message_ctx), at: At::Group(gi) };
                    let mut test = OrderedTest::default();
                    let answers = match &self.aoe {
                        Some(aoe) => self.read_aoe(&mut r, aoe, order, gi, &mut test),
                        None => Vec::new(),
                    };
                    let consumed: Vec<usize> = answers.iter().map(|a| a.0).collect();
                    // An observation that is no AOE answer follows the answer before it.
                    let last = test.aoe.len().checked_sub(1);
                    let from_nte = self.aoe.as_ref().is_some_and(|a| a.from_nte);
                    let mut before: Option<usize> = None;
                    for o in &order.observations {
                        let w = match answers.iter().find(|a| a.0 == o.obx.index()) {
                            Some(&(_, j)) => {
                                before = Some(j);
                                Within::Aoe(Some(j))
                            }
                            None if from_nte => Within::Aoe(last),
                            None => Within::Aoe(before),
                        };
                        for seg in std::iter::once(&o.obx).chain(&o.notes).chain(&o.other) {
                            within[seg.index()] = w;
                        }
                    }
                    if from_nte {
                        for &(idx, j) in &answers {
                            within[idx] = Within::Aoe(Some(j));
                        }
                    }
                    r.apply(&ctx, &self.test, &mut test, &consumed);
                    o.tests.push(test);
                }
                // A DG1 is kept with the message's diagnoses, in or out of a group.
                let is_dg1 = |s: &Segment<'_>| matches!(within[s.index()], Within::Diagnosis(_));
                for (test, (_, every)) in o.tests.iter_mut().zip(&groups) {
                    let every: Vec<Segment<'_>> = every.iter().filter(|s| !is_dg1(s)).copied().collect();
                    test.unmapped = r.kept(&every, &within, group_layout, &mut unread_groups);
                }
                let outside: Vec<Segment<'_>> =
                    all.iter().filter(|s| group_of[s.index()] == 0 || is_dg1(s)).copied().collect();
                o.unmapped = r.kept(&outside, &within, message_layout, &mut unread_message);
                if !o.unmapped.is_empty() || o.tests.iter().any(|t| !t.unmapped.is_empty()) {
                    o.delimiters = Some(msg.delimiters().to_string());
                }
                Contract::Order(o)
            }
            Kind::Result => {
                let mut res = LabResult::default();
                r.apply(&message_ctx, &self.result, &mut res, &[]);
                r.mark_structure(msg);
                r.mark_repeated(&all, &repeated, self.result.rules.iter());
                for (gi, (order, (own, _))) in orders.iter().zip(&groups).enumerate() {
                    let ctx = Ctx { segs: own, own, parent: Some(&message_ctx), at: At::Group(gi) };
                    let mut report = Report::default();
                    let mut segs = Vec::new();
                    for (oi, o) in order.observations.iter().enumerate() {
                        for seg in std::iter::once(&o.obx).chain(&o.notes).chain(&o.other) {
                            within[seg.index()] = Within::Observation(oi);
                        }
                        segs.clear();
                        segs.push(o.obx);
                        segs.extend(o.notes.iter().copied());
                        segs.extend(o.other.iter().copied());
                        let octx = Ctx { segs: &segs, own: &segs, parent: None, at: At::Observation(gi, oi) };
                        let mut item = Observation::default();
                        r.apply(&octx, &self.observation, &mut item, &[]);
                        report.observations.push(item);
                    }
                    r.apply(&ctx, &self.report, &mut report, &[]);
                    res.reports.push(report);
                }
                for (report, (_, every)) in res.reports.iter_mut().zip(&groups) {
                    report.unmapped = r.kept(every, &within, group_layout, &mut unread_groups);
                }
                res.unmapped = r.kept(&outside, &within, message_layout, &mut unread_message);
                if !res.unmapped.is_empty() || res.reports.iter().any(|t| !t.unmapped.is_empty()) {
                    res.delimiters = Some(msg.delimiters().to_string());
                }
                Contract::Result(res)
            }
        };
        unread_message.extend(unread_groups);
        r.problems.sort_by_key(|p| p.offset.unwrap_or(u64::MAX));
        Mapped { value, problems: r.problems, unread: unread_message }
    }

    /// The ask-at-order-entry answers of one order group; returns the
    /// segments they consumed (not the test's notes), each with the index of
    /// its answer.
    fn read_aoe<'m>(
        &self,
        r: &mut Reader<'_, 'm>,
        aoe: &Aoe,
        order: &Order<'m>,
        gi: usize,
        test: &mut OrderedTest,
    ) -> Vec<(usize, usize)> {
        let mut consumed = Vec::new();
        let candidates: Vec<Vec<Segment<'m>>> = if aoe.from_nte {
            order.notes.iter().map(|n| vec![*n]).collect()
        } else {
            order.observations.iter().map(|o| std::iter::once(o.obx).chain(o.notes.iter().copied()).collect()).collect()
        };
        for cand in candidates {
            let k = test.aoe.len();
            let cctx = Ctx { segs: &cand, own: &cand, parent: None, at: At::Aoe(gi, k) };
            if !aoe_matches(self, aoe, r, &cctx) {
                continue;
            }
            consumed.extend(cand.iter().map(|s| (s.index(), k)));
            let mut item = AoeAnswer::default();
            if let Some(cond) = &aoe.when {
                let (Cond::In(p, _) | Cond::InMap(p, _) | Cond::Prefix(p, _)) = cond;
                if let Some(seg) = cctx.find(p) {
                    if !matches!(cond, Cond::Prefix(..)) {
                        r.marks.insert(seg.index(), key_of(p));
                    }
                }
            }
            if let (Some(tpl), Some(seg)) = (&aoe.template, cand.first()) {
                let text = r.cache.field(seg, 3).map(|f| f.decoded().into_owned()).unwrap_or_default();
                r.marks.insert(seg.index(), [3, 0, 0, 0]);
                for (f, v) in match_template(tpl, &text) {
                    if let Some(Slot::Str(set)) = AoeAnswer::slot(f) {
                        *set(&mut item) = Some(v);
                    }
                }
            }
            r.apply(&cctx, &aoe.scope, &mut item, &[]);
            // notes of an AOE OBX belong to the answer
            for n in cand.iter().skip(1) {
                r.marks.insert(n.index(), [3, 0, 0, 0]);
            }
            test.aoe.push(item);
        }
        consumed
    }

    /// Maps an order message to a [`LabOrder`].
    ///
    /// # Errors
    ///
    /// A [`MapError`](super::MapError) with every problem of the message
    /// (missing required fields, codes without a map entry, bad dates …),
    /// or a wrong message type.
    pub fn to_order(&self, msg: &Message<'_>) -> Result<LabOrder, super::MapError> {
        match self.to_contract(msg, Kind::Order)? {
            Contract::Order(o) => Ok(o),
            Contract::Result(_) => Err(self.wrong_kind()),
        }
    }

    /// Maps a result message to a [`LabResult`].
    ///
    /// # Errors
    ///
    /// As [`Profile::to_order`].
    pub fn to_result(&self, msg: &Message<'_>) -> Result<LabResult, super::MapError> {
        match self.to_contract(msg, Kind::Result)? {
            Contract::Result(r) => Ok(r),
            Contract::Order(_) => Err(self.wrong_kind()),
        }
    }

    pub(super) fn wrong_kind(&self) -> super::MapError {
        super::MapError {
            problems: vec![Problem {
                kind: ProblemKind::WrongMessageType,
                field: "profile".into(),
                path: None,
                offset: None,
                message: format!("profile {} maps {:?}s", self.name, self.kind).to_lowercase(),
            }],
        }
    }

    fn to_contract(&self, msg: &Message<'_>, want: Kind) -> Result<Contract, super::MapError> {
        if self.kind != want {
            return Err(self.wrong_kind());
        }
        let mapped = self.map_value(msg);
        if !mapped.problems.is_empty() {
            return Err(super::MapError { problems: mapped.problems });
        }
        Ok(mapped.value)
    }

    /// A layout with its `@sub-scope` markers expanded to segment names.
    pub(super) fn flat_layout(&self, layout: &[String]) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_per_segment() {
        let mut m = Marks::new(3);
        m.insert(1, [5, 1, 1, 0]);
        m.insert(2, [3, 0, 0, 0]);
        m.insert(1, [7, 0, 0, 0]);
        m.insert(1, [70, 2, 0, 0]); // past the bitmasks: found by the walk
        m.insert(9, [1, 0, 0, 0]); // past the end: ignored, not a panic
        assert_eq!(m.of(1).collect::<Vec<_>>(), [[70, 2, 0, 0], [7, 0, 0, 0], [5, 1, 1, 0]]);
        assert!(m.contains(2, [3, 0, 0, 0]) && m.contains(1, [7, 0, 0, 0]) && m.contains(1, [70, 2, 0, 0]));
        assert!(!m.contains(0, [3, 0, 0, 0]) && !m.contains(1, [5, 0, 0, 0]));
        assert!(m.field_read(1, 5) && m.field_read(1, 70) && !m.field_read(1, 6) && !m.field_read(9, 1));
    }

    #[test]
    fn field_cache_agrees_with_segment_field() {
        let msg = Message::parse(b"MSH|^~\\&|A|B\rPID|1||X^Y~Z|||\rOBX|1|NM").unwrap();
        let mut cache = FieldCache::new(msg.segment_count());
        for seg in msg.segments() {
            for n in 0..10 {
                let a = cache.field(&seg, n).map(|f| f.raw());
                assert_eq!(a, seg.field(n).map(|f| f.raw()), "{}-{n}", seg.name());
            }
        }
    }

    #[test]
    fn narrow_keeps_borrowed_values_borrowed() {
        let s = String::from(" a, b ");
        let c = narrow(Cow::Borrowed(&s), |x| x.split(',').nth(1).map(str::trim));
        assert!(matches!(c, Some(Cow::Borrowed("b"))));
        let o = narrow(Cow::Owned(s.clone()), |x| Some(x.trim()));
        assert!(matches!(o, Some(Cow::Owned(ref v)) if v == "a, b"));
    }
}
