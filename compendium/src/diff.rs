//! Comparing two catalogs: what was added, removed, discontinued,
//! reactivated or changed, field by field.
//!
//! A diff borrows the two catalogs it compares, so that an export of the
//! diff ([`crate::mfn::export_diff`]) can send the full new record of each
//! changed test, as a master-file update must, while the diff itself lists
//! only what changed. Its JSON form ([`Diff::to_json`]) and its table
//! ([`Diff::to_table`]) carry the field changes only.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use crate::model::{format_aoe_item, AoeQuestion, Catalog, CustomPanel, Test};

/// What happened to a test, panel or AOE question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// New in the newer catalog.
    Added,
    /// Gone from the newer catalog.
    Removed,
    /// Active before, discontinued now (other fields may have changed too).
    Discontinued,
    /// Discontinued before, active now.
    Reactivated,
    /// Some fields changed.
    Changed,
}

impl ChangeKind {
    /// `added`, `removed` …
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Discontinued => "discontinued",
            ChangeKind::Reactivated => "reactivated",
            ChangeKind::Changed => "changed",
        }
    }
}

/// One field that changed: its name and both values as text (`None` when
/// the field had or has no value). AOE questions are fields named
/// `aoe.CODE`, with the CSV form of the question as value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// The field (`price`, `status`, `aoe.FAST`, `components` …).
    pub field: String,
    /// The value before.
    pub before: Option<String>,
    /// The value after.
    pub after: Option<String>,
}

/// The change of one test, panel or question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The code.
    pub code: String,
    /// The name (or question), as it is now, or was for a removed record.
    pub name: String,
    /// The fields that changed (empty for added and removed records).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
}

/// Counts of changes by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Added.
    pub added: usize,
    /// Removed.
    pub removed: usize,
    /// Discontinued.
    pub discontinued: usize,
    /// Reactivated.
    pub reactivated: usize,
    /// Changed.
    pub changed: usize,
}

impl Counts {
    fn of(changes: &[Change]) -> Counts {
        let mut c = Counts::default();
        for ch in changes {
            *match ch.kind {
                ChangeKind::Added => &mut c.added,
                ChangeKind::Removed => &mut c.removed,
                ChangeKind::Discontinued => &mut c.discontinued,
                ChangeKind::Reactivated => &mut c.reactivated,
                ChangeKind::Changed => &mut c.changed,
            } += 1;
        }
        c
    }
}

/// The changes between two catalogs.
#[derive(Debug, Clone, Serialize)]
pub struct Diff<'a> {
    /// The older version's number, when the catalogs are versions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<u32>,
    /// The newer version's number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<u32>,
    /// Test changes, in code order.
    pub tests: Vec<Change>,
    /// Panel changes, in code order.
    pub panels: Vec<Change>,
    /// AOE question definitions (question, type, answers) added, removed or
    /// changed, in code order.
    pub questions: Vec<Change>,
    #[serde(skip)]
    old: &'a Catalog,
    #[serde(skip)]
    new: &'a Catalog,
}

/// The changes from `old` to `new`.
///
/// # Examples
///
/// ```
/// use compendium::{diff, Catalog, ChangeKind, Status, Test};
///
/// let d = "2024-01-01".parse()?;
/// let old = Catalog::new([Test::new("1001", "Glucose", "42.00".parse()?, d),
///                         Test::new("1002", "Iron", "20.00".parse()?, d)], [])?;
/// let new = Catalog::new([Test::new("1001", "Glucose", "45.00".parse()?, d),
///                         Test::new("1002", "Iron", "20.00".parse()?, d)
///                             .with_status(Status::Discontinued { replaced_by: Some("1001".into()) })], [])?;
/// let changes = diff(&old, &new);
/// assert_eq!(changes.tests[0].fields[0].before.as_deref(), Some("42.00"));
/// assert_eq!(changes.tests[0].fields[0].after.as_deref(), Some("45.00"));
/// assert_eq!(changes.tests[1].kind, ChangeKind::Discontinued);
/// assert!(changes.to_json().contains(r#""field":"price","before":"42.00","after":"45.00""#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn diff<'a>(old: &'a Catalog, new: &'a Catalog) -> Diff<'a> {
    let mut tests = Vec::new();
    merge(old.tests(), new.tests(), |t| &t.code, |a, b| tests.extend(test_change(a, b)));
    let mut panels = Vec::new();
    merge(old.panels(), new.panels(), |p| &p.code, |a, b| panels.extend(panel_change(a, b)));
    let mut questions = Vec::new();
    let (qa, qb) = (old.questions(), new.questions());
    merge(qa.values().copied(), qb.values().copied(), |q| &q.code, |a, b| questions.extend(question_change(a, b)));
    Diff { from: None, to: None, tests, panels, questions, old, new }
}

/// Walks two code-ordered sequences together.
fn merge<'x, T: 'x>(
    a: impl Iterator<Item = &'x T>,
    b: impl Iterator<Item = &'x T>,
    key: impl Fn(&T) -> &String,
    mut f: impl FnMut(Option<&'x T>, Option<&'x T>),
) {
    let mut a = a.peekable();
    let mut b = b.peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => f(a.next(), None),
            (None, Some(_)) => f(None, b.next()),
            (Some(x), Some(y)) => match key(x).cmp(key(y)) {
                std::cmp::Ordering::Less => f(a.next(), None),
                std::cmp::Ordering::Greater => f(None, b.next()),
                std::cmp::Ordering::Equal => f(a.next(), b.next()),
            },
        }
    }
}

fn fields_of(changes: &mut Vec<FieldChange>, before: Vec<(&str, Option<String>)>, after: Vec<(&str, Option<String>)>) {
    for ((name, x), (_, y)) in before.into_iter().zip(after) {
        if x != y {
            changes.push(FieldChange { field: name.to_owned(), before: x, after: y });
        }
    }
}

fn test_values(t: &Test) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("name", Some(t.name.clone())),
        ("loinc", t.loinc.clone()),
        ("cpt", t.cpt.clone()),
        ("specimen", t.specimen.clone()),
        ("container", t.container.clone()),
        ("volume", t.volume.clone()),
        ("storage", t.storage.clone()),
        ("turnaround", t.turnaround.clone()),
        ("price", Some(t.price.to_string())),
        ("status", Some(t.status.as_str().to_owned())),
        ("replaced_by", t.status.replaced_by().map(str::to_owned)),
        ("effective_from", Some(t.effective_from.format("%Y-%m-%d").to_string())),
    ]
}

fn test_change(a: Option<&Test>, b: Option<&Test>) -> Option<Change> {
    match (a, b) {
        (None, Some(b)) => {
            Some(Change { kind: ChangeKind::Added, code: b.code.clone(), name: b.name.clone(), fields: vec![] })
        }
        (Some(a), None) => {
            Some(Change { kind: ChangeKind::Removed, code: a.code.clone(), name: a.name.clone(), fields: vec![] })
        }
        (Some(a), Some(b)) if a != b => {
            let mut fields = Vec::new();
            fields_of(&mut fields, test_values(a), test_values(b));
            aoe_changes(&mut fields, &a.aoe, &b.aoe);
            if fields.is_empty() {
                return None;
            }
            let kind = match (a.status.is_active(), b.status.is_active()) {
                (true, false) => ChangeKind::Discontinued,
                (false, true) => ChangeKind::Reactivated,
                _ => ChangeKind::Changed,
            };
            Some(Change { kind, code: b.code.clone(), name: b.name.clone(), fields })
        }
        _ => None,
    }
}

fn aoe_changes(out: &mut Vec<FieldChange>, a: &[AoeQuestion], b: &[AoeQuestion]) {
    let mut codes: Vec<&str> = a.iter().map(|q| q.code.as_str()).collect();
    codes.extend(b.iter().map(|q| q.code.as_str()).filter(|c| !a.iter().any(|q| q.code == *c)));
    for code in codes {
        let x = a.iter().find(|q| q.code == code).map(format_aoe_item);
        let y = b.iter().find(|q| q.code == code).map(format_aoe_item);
        if x != y {
            out.push(FieldChange { field: format!("aoe.{code}"), before: x, after: y });
        }
    }
    let order = |l: &[AoeQuestion]| l.iter().map(|q| q.code.as_str()).collect::<Vec<_>>().join(";");
    let same_set = a.len() == b.len() && a.iter().all(|q| b.iter().any(|r| r.code == q.code));
    if same_set && order(a) != order(b) {
        out.push(FieldChange { field: "aoe order".to_owned(), before: Some(order(a)), after: Some(order(b)) });
    }
}

fn panel_values(p: &CustomPanel) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("name", Some(p.name.clone())),
        ("client_account", Some(p.client_account.clone())),
        ("price", Some(p.price.to_string())),
        ("components", Some(p.components.join(";"))),
    ]
}

fn panel_change(a: Option<&CustomPanel>, b: Option<&CustomPanel>) -> Option<Change> {
    match (a, b) {
        (None, Some(b)) => {
            Some(Change { kind: ChangeKind::Added, code: b.code.clone(), name: b.name.clone(), fields: vec![] })
        }
        (Some(a), None) => {
            Some(Change { kind: ChangeKind::Removed, code: a.code.clone(), name: a.name.clone(), fields: vec![] })
        }
        (Some(a), Some(b)) => {
            let mut fields = Vec::new();
            fields_of(&mut fields, panel_values(a), panel_values(b));
            (!fields.is_empty()).then(|| Change {
                kind: ChangeKind::Changed,
                code: b.code.clone(),
                name: b.name.clone(),
                fields,
            })
        }
        (None, None) => None,
    }
}

fn question_values(q: &AoeQuestion) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("question", Some(q.question.clone())),
        ("type", Some(q.answer_type.as_str().to_owned())),
        ("allowed", (!q.allowed.is_empty()).then(|| q.allowed.join("|"))),
    ]
}

fn question_change(a: Option<&AoeQuestion>, b: Option<&AoeQuestion>) -> Option<Change> {
    let change =
        |kind, q: &AoeQuestion, fields| Change { kind, code: q.code.clone(), name: q.question.clone(), fields };
    match (a, b) {
        (None, Some(b)) => Some(change(ChangeKind::Added, b, vec![])),
        (Some(a), None) => Some(change(ChangeKind::Removed, a, vec![])),
        (Some(a), Some(b)) if !a.same_definition(b) => {
            let mut fields = Vec::new();
            fields_of(&mut fields, question_values(a), question_values(b));
            Some(change(ChangeKind::Changed, b, fields))
        }
        _ => None,
    }
}

impl<'a> Diff<'a> {
    /// The same diff, labelled with the version numbers it compares.
    pub fn with_versions(mut self, from: u32, to: u32) -> Diff<'a> {
        self.from = Some(from);
        self.to = Some(to);
        self
    }

    /// The older catalog.
    pub fn old(&self) -> &'a Catalog {
        self.old
    }

    /// The newer catalog.
    pub fn new_catalog(&self) -> &'a Catalog {
        self.new
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.tests.is_empty() && self.panels.is_empty() && self.questions.is_empty()
    }

    /// Counts of test changes by kind.
    pub fn test_counts(&self) -> Counts {
        Counts::of(&self.tests)
    }

    /// Counts of panel changes by kind.
    pub fn panel_counts(&self) -> Counts {
        Counts::of(&self.panels)
    }

    /// One line: `tests: 2 added, 1 removed, 1 discontinued, 0 reactivated, 5 changed; panels: …; questions: …`.
    pub fn summary(&self) -> String {
        let line = |c: Counts| {
            format!(
                "{} added, {} removed, {} discontinued, {} reactivated, {} changed",
                c.added, c.removed, c.discontinued, c.reactivated, c.changed
            )
        };
        format!(
            "tests: {}; panels: {}; questions: {}",
            line(self.test_counts()),
            line(self.panel_counts()),
            line(Counts::of(&self.questions))
        )
    }

    /// The diff as one line of JSON: `{"from":1,"to":2,"tests":[{"kind":"changed","code":"1001",
    /// "name":"Glucose","fields":[{"field":"price","before":"42.00","after":"45.00"}]}],"panels":[],"questions":[]}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The diff as a plain-text table, one line per field change (one per
    /// added or removed record), columns aligned, a header first:
    ///
    /// ```text
    /// change        record  code  field        before  after
    /// changed       test    1001  price        42.00   45.00
    /// discontinued  test    1002  status       active  discontinued
    /// discontinued  test    1002  replaced_by  -       1001
    /// added         panel   CP9   -            -       Lipids and sugar
    /// ```
    pub fn to_table(&self) -> String {
        let mut rows: Vec<[String; 6]> =
            vec![["change", "record", "code", "field", "before", "after"].map(str::to_owned)];
        let flat = |s: &str| s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>();
        let dash = |v: &Option<String>| v.as_deref().map_or("-".to_owned(), flat);
        for (record, changes) in [("test", &self.tests), ("panel", &self.panels), ("question", &self.questions)] {
            for ch in changes {
                let head = [ch.kind.as_str().to_owned(), record.to_owned(), ch.code.clone()];
                if ch.fields.is_empty() {
                    let (before, after) = match ch.kind {
                        ChangeKind::Removed => (flat(&ch.name), "-".to_owned()),
                        _ => ("-".to_owned(), flat(&ch.name)),
                    };
                    let [a, b, c] = head.clone();
                    rows.push([a, b, c, "-".to_owned(), before, after]);
                }
                for f in &ch.fields {
                    let [a, b, c] = head.clone();
                    rows.push([a, b, c, f.field.clone(), dash(&f.before), dash(&f.after)]);
                }
            }
        }
        let mut widths = [0usize; 6];
        for r in &rows {
            for (w, v) in widths.iter_mut().zip(r) {
                *w = (*w).max(v.chars().count());
            }
        }
        let mut out = String::new();
        for r in &rows {
            let mut line = String::new();
            for (i, (v, w)) in r.iter().zip(widths).enumerate() {
                if i == 5 {
                    line.push_str(v);
                } else {
                    let _ = write!(line, "{v}{}  ", " ".repeat(w - v.chars().count()));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// The test codes whose records an update must send again in full
    /// (added, discontinued, reactivated or changed in anything but price),
    /// and those whose price message must be sent (added, removed,
    /// discontinued, reactivated, or price changed).
    pub(crate) fn test_codes_touched(&self) -> (BTreeSet<&str>, BTreeSet<&str>) {
        split_touched(&self.tests)
    }

    pub(crate) fn panel_codes_touched(&self) -> (BTreeSet<&str>, BTreeSet<&str>) {
        split_touched(&self.panels)
    }
}

fn split_touched(changes: &[Change]) -> (BTreeSet<&str>, BTreeSet<&str>) {
    let mut definition = BTreeSet::new();
    let mut price = BTreeSet::new();
    for ch in changes {
        let price_only = ch.kind == ChangeKind::Changed && ch.fields.iter().all(|f| f.field == "price");
        let touches_price = ch.kind != ChangeKind::Changed || ch.fields.iter().any(|f| f.field == "price");
        if !price_only {
            definition.insert(ch.code.as_str());
        }
        if touches_price {
            price.insert(ch.code.as_str());
        }
    }
    (definition, price)
}
