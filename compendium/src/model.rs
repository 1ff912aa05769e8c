//! The catalog: tests (orderables) with their AOE questions, and client
//! custom panels.
//!
//! Every value is checked once, when it enters (CSV, JSON or
//! [`Catalog::new`]): codes are codes, prices are exact decimals, dates are
//! dates, a replacement and a panel's components name tests of the same
//! catalog, and an AOE question code means one question everywhere. So the
//! exports and the order validation never meet a half-valid catalog.
//!
//! Text values are trimmed and an empty text is "no value" (`None`): a CSV
//! cell cannot tell them apart, so the model does not either, and a round
//! trip through CSV or JSON gives back the same catalog.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Location};

/// How an AOE question is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerType {
    /// Free text (HL7 ST).
    Text,
    /// A number (HL7 NM): `12`, `-0.5`.
    Number,
    /// A date (HL7 DT), `YYYYMMDD` or `YYYY-MM-DD`.
    Date,
    /// Yes or no (HL7 table 0136: `Y`, `N`).
    YesNo,
    /// One of a list of answers (HL7 CWE), given in [`AoeQuestion::allowed`].
    List,
}

impl AnswerType {
    /// The token used in CSV and JSON: `text`, `number`, `date`, `yes_no`, `list`.
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerType::Text => "text",
            AnswerType::Number => "number",
            AnswerType::Date => "date",
            AnswerType::YesNo => "yes_no",
            AnswerType::List => "list",
        }
    }

    /// The HL7 data type of the answer (OM1-3, OM3-7).
    pub fn hl7_type(self) -> &'static str {
        match self {
            AnswerType::Text => "ST",
            AnswerType::Number => "NM",
            AnswerType::Date => "DT",
            AnswerType::YesNo | AnswerType::List => "CWE",
        }
    }

    fn parse(s: &str) -> Option<AnswerType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "text" | "st" => AnswerType::Text,
            "number" | "nm" => AnswerType::Number,
            "date" | "dt" => AnswerType::Date,
            "yes_no" | "yn" => AnswerType::YesNo,
            "list" | "cwe" => AnswerType::List,
            _ => return None,
        })
    }
}

impl fmt::Display for AnswerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An ask-at-order-entry question of a test.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AoeQuestion {
    /// The question's code (OBX-3-1 of the answer in an order; often LOINC).
    pub code: String,
    /// The question as the EMR shows it.
    pub question: String,
    /// How it is answered.
    pub answer_type: AnswerType,
    /// The allowed answers of a [`AnswerType::List`] question (empty for the
    /// other types; `Y`/`N` are implied for [`AnswerType::YesNo`]).
    pub allowed: Vec<String>,
    /// Whether the order must answer it.
    pub required: bool,
}

impl AoeQuestion {
    /// Whether `answer` is a valid answer: a number for `number`, a date for
    /// `date`, `Y`/`N`/`yes`/`no` for `yes_no`, one of [`AoeQuestion::allowed`]
    /// for `list` (compared without case; for a coded answer `CODE^Text`,
    /// its code), anything non-empty for `text`.
    ///
    /// # Examples
    ///
    /// ```
    /// use compendium::{AnswerType, AoeQuestion};
    ///
    /// let q = AoeQuestion {
    ///     code: "SRC".into(),
    ///     question: "Source".into(),
    ///     answer_type: AnswerType::List,
    ///     allowed: vec!["THROAT".into(), "NASAL".into()],
    ///     required: true,
    /// };
    /// assert!(q.accepts("nasal"));
    /// assert!(q.accepts("THROAT^Throat swab^L"));
    /// assert!(!q.accepts("EAR"));
    /// ```
    pub fn accepts(&self, answer: &str) -> bool {
        let a = answer.trim();
        if a.is_empty() {
            return false;
        }
        match self.answer_type {
            AnswerType::Text => true,
            AnswerType::Number => is_number(a),
            AnswerType::Date => hl7_core::datetime::Timestamp::from_str(a).is_ok(),
            AnswerType::YesNo => {
                let code = a.split('^').next().unwrap_or(a);
                ["Y", "N", "YES", "NO"].iter().any(|y| y.eq_ignore_ascii_case(code.trim()))
            }
            AnswerType::List => {
                let code = a.split('^').next().unwrap_or(a).trim();
                self.allowed.iter().any(|x| x.eq_ignore_ascii_case(a) || x.eq_ignore_ascii_case(code))
            }
        }
    }

    /// The same question, ignoring whether it is required: what must agree
    /// between two tests that ask it.
    pub(crate) fn same_definition(&self, other: &AoeQuestion) -> bool {
        self.code == other.code
            && self.question == other.question
            && self.answer_type == other.answer_type
            && self.allowed == other.allowed
    }
}

fn is_number(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !s.ends_with('.')
}

/// Whether a test can be ordered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Status {
    /// Orderable.
    #[default]
    Active,
    /// No longer orderable; order the replacement instead, when there is one.
    Discontinued {
        /// The code of the test to order instead.
        replaced_by: Option<String>,
    },
}

impl Status {
    /// `active` or `discontinued`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Discontinued { .. } => "discontinued",
        }
    }

    /// The replacement of a discontinued test.
    pub fn replaced_by(&self) -> Option<&str> {
        match self {
            Status::Active => None,
            Status::Discontinued { replaced_by } => replaced_by.as_deref(),
        }
    }

    /// True for [`Status::Active`].
    pub fn is_active(&self) -> bool {
        matches!(self, Status::Active)
    }
}

/// A test (an orderable) of the lab.
///
/// # Examples
///
/// ```
/// use compendium::{Status, Test};
///
/// let t = Test::new("1001", "Glucose", "12.50".parse()?, "2024-01-01".parse()?)
///     .with_loinc("2345-7")
///     .with_specimen("SER");
/// assert_eq!(t.price.to_string(), "12.50");
/// assert_eq!(t.status, Status::Active);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Test {
    /// The lab's code (the orderable code, OM1-2).
    pub code: String,
    /// The name.
    pub name: String,
    /// The LOINC code of the order.
    pub loinc: Option<String>,
    /// The CPT (billing) code.
    pub cpt: Option<String>,
    /// The specimen type, an HL7 table 0487 code (`SER`, `WB`, `UR` …) or a name.
    pub specimen: Option<String>,
    /// The container (`SST (gold top)` …).
    pub container: Option<String>,
    /// The volume to collect (`1 mL`).
    pub volume: Option<String>,
    /// How to store and transport it (`Refrigerated` …).
    pub storage: Option<String>,
    /// The typical turnaround (`2 days`, `4 hours`).
    pub turnaround: Option<String>,
    /// The price: an exact decimal, never a float.
    pub price: Decimal,
    /// Active, or discontinued with its replacement.
    pub status: Status,
    /// From when this definition holds.
    pub effective_from: NaiveDate,
    /// The ask-at-order-entry questions, in the order they are asked.
    pub aoe: Vec<AoeQuestion>,
}

impl Test {
    /// An active test with no optional data.
    pub fn new(code: impl Into<String>, name: impl Into<String>, price: Decimal, effective_from: NaiveDate) -> Test {
        Test {
            code: code.into(),
            name: name.into(),
            loinc: None,
            cpt: None,
            specimen: None,
            container: None,
            volume: None,
            storage: None,
            turnaround: None,
            price,
            status: Status::Active,
            effective_from,
            aoe: Vec::new(),
        }
    }

    /// With a LOINC code.
    pub fn with_loinc(mut self, loinc: impl Into<String>) -> Test {
        self.loinc = Some(loinc.into());
        self
    }

    /// With a CPT code.
    pub fn with_cpt(mut self, cpt: impl Into<String>) -> Test {
        self.cpt = Some(cpt.into());
        self
    }

    /// With a specimen type.
    pub fn with_specimen(mut self, specimen: impl Into<String>) -> Test {
        self.specimen = Some(specimen.into());
        self
    }

    /// With a container.
    pub fn with_container(mut self, container: impl Into<String>) -> Test {
        self.container = Some(container.into());
        self
    }

    /// With an AOE question (appended).
    pub fn with_aoe(mut self, q: AoeQuestion) -> Test {
        self.aoe.push(q);
        self
    }

    /// With a status.
    pub fn with_status(mut self, status: Status) -> Test {
        self.status = status;
        self
    }
}

/// A client's custom panel: its own code, name and price, ordered in one
/// click, expanded to its component tests toward the lab.
///
/// # Examples
///
/// ```
/// use compendium::CustomPanel;
///
/// let p = CustomPanel::new("CP100", "Annual physical", "ACCT1", ["1001", "1002"], "55.00".parse()?);
/// assert_eq!(p.components, ["1001", "1002"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CustomPanel {
    /// The panel's own code.
    pub code: String,
    /// Its name.
    pub name: String,
    /// The client account that owns it.
    pub client_account: String,
    /// The codes of its component tests, in order.
    pub components: Vec<String>,
    /// The client's price for the panel.
    pub price: Decimal,
}

impl CustomPanel {
    /// A panel.
    pub fn new<S: Into<String>>(
        code: impl Into<String>,
        name: impl Into<String>,
        client_account: impl Into<String>,
        components: impl IntoIterator<Item = S>,
        price: Decimal,
    ) -> CustomPanel {
        CustomPanel {
            code: code.into(),
            name: name.into(),
            client_account: client_account.into(),
            components: components.into_iter().map(Into::into).collect(),
            price,
        }
    }
}

/// The content of one compendium version: tests and custom panels, each
/// keyed by its code (a code is a test or a panel, never both).
///
/// # Examples
///
/// ```
/// use compendium::{Catalog, CustomPanel, Status, Test};
///
/// let d = "2024-01-01".parse()?;
/// let catalog = Catalog::new(
///     [
///         Test::new("1001", "Glucose", "12.50".parse()?, d),
///         Test::new("1000", "Old glucose", "12.00".parse()?, d)
///             .with_status(Status::Discontinued { replaced_by: Some("1001".into()) }),
///     ],
///     [CustomPanel::new("CP1", "Sugar", "ACCT1", ["1001"], "10.00".parse()?)],
/// )?;
/// assert_eq!(catalog.test("1000").unwrap().status.replaced_by(), Some("1001"));
/// assert_eq!(catalog.tests().count(), 2);
///
/// // a panel of an unknown test is refused
/// let bad = Catalog::new([], [CustomPanel::new("CP1", "X", "A", ["9999"], "1".parse()?)]);
/// assert_eq!(bad.unwrap_err().rows()[0].to_string(), r#"unknown component test "9999""#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    tests: BTreeMap<String, Test>,
    panels: BTreeMap<String, CustomPanel>,
}

impl Catalog {
    /// A catalog of these tests and panels, checked as an import checks them.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Rejected`] with one error per problem (an invalid code,
    /// a duplicate code, an unknown replacement or component, an AOE
    /// question defined twice differently …), without locations.
    pub fn new(
        tests: impl IntoIterator<Item = Test>,
        panels: impl IntoIterator<Item = CustomPanel>,
    ) -> Result<Catalog, Error> {
        let mut errors = Vec::new();
        let mut ts = Vec::new();
        for t in tests {
            match normalize_test(t) {
                Ok(t) => ts.push(Row { item: t, at: None }),
                Err(es) => errors.extend(es.into_iter().map(|(_, k)| Error::new(k))),
            }
        }
        let mut ps = Vec::new();
        for p in panels {
            match normalize_panel(p) {
                Ok(p) => ps.push(Row { item: p, at: None }),
                Err(es) => errors.extend(es.into_iter().map(|(_, k)| Error::new(k))),
            }
        }
        let catalog = assemble(ts, ps, &mut errors);
        if errors.is_empty() {
            Ok(catalog)
        } else {
            Err(Error::new(ErrorKind::Rejected(errors)))
        }
    }

    /// The tests, in code order.
    pub fn tests(&self) -> impl ExactSizeIterator<Item = &Test> + '_ {
        self.tests.values()
    }

    /// The custom panels, in code order.
    pub fn panels(&self) -> impl ExactSizeIterator<Item = &CustomPanel> + '_ {
        self.panels.values()
    }

    /// The test with this code.
    pub fn test(&self, code: &str) -> Option<&Test> {
        self.tests.get(code)
    }

    /// The panel with this code.
    pub fn panel(&self, code: &str) -> Option<&CustomPanel> {
        self.panels.get(code)
    }

    /// Whether the catalog has neither tests nor panels.
    pub fn is_empty(&self) -> bool {
        self.tests.is_empty() && self.panels.is_empty()
    }

    /// Every distinct AOE question, by code (its first test's definition;
    /// the catalog guarantees they agree but for `required`).
    pub fn questions(&self) -> BTreeMap<&str, &AoeQuestion> {
        let mut out = BTreeMap::new();
        for t in self.tests.values() {
            for q in &t.aoe {
                out.entry(q.code.as_str()).or_insert(q);
            }
        }
        out
    }

    /// The tests and panels, to change them and build a new catalog.
    pub fn into_parts(self) -> (Vec<Test>, Vec<CustomPanel>) {
        (self.tests.into_values().collect(), self.panels.into_values().collect())
    }

    /// A copy with every test and panel code, component and replacement
    /// passed through `f` (an EMR's codes), other fields unchanged.
    ///
    /// # Errors
    ///
    /// As [`Catalog::new`], when two codes become one.
    pub fn map_codes(&self, f: impl Fn(&str) -> String) -> Result<Catalog, Error> {
        let tests = self.tests.values().map(|t| {
            let mut t = t.clone();
            t.code = f(&t.code);
            if let Status::Discontinued { replaced_by: Some(r) } = &mut t.status {
                *r = f(r);
            }
            t
        });
        let panels = self.panels.values().map(|p| {
            let mut p = p.clone();
            p.code = f(&p.code);
            p.components = p.components.iter().map(|c| f(c)).collect();
            p
        });
        Catalog::new(tests.collect::<Vec<_>>(), panels.collect::<Vec<_>>())
    }

    /// A copy with only the panels `keep` says yes to (one EMR's clients).
    pub fn filter_panels(&self, keep: impl Fn(&CustomPanel) -> bool) -> Catalog {
        Catalog {
            tests: self.tests.clone(),
            panels: self.panels.iter().filter(|(_, p)| keep(p)).map(|(k, p)| (k.clone(), p.clone())).collect(),
        }
    }
}

/// Where a row came from, to locate errors found after reading it.
#[derive(Debug, Clone)]
pub(crate) struct RowAt {
    pub(crate) source: Option<String>,
    pub(crate) line: u64,
    pub(crate) column: u64,
    /// CSV: the header, so a field name gives its column number.
    pub(crate) columns: Option<Arc<Vec<String>>>,
}

impl RowAt {
    pub(crate) fn loc(&self, field: &str) -> Location {
        let column =
            self.columns.as_ref().and_then(|c| c.iter().position(|n| n == field)).map_or(self.column, |i| i as u64 + 1);
        Location { source: self.source.clone(), line: self.line, column, field: Some(field.to_owned()) }
    }
}

#[derive(Debug)]
pub(crate) struct Row<T> {
    pub(crate) item: T,
    pub(crate) at: Option<RowAt>,
}

fn row_error(at: &Option<RowAt>, field: &str, kind: ErrorKind) -> Error {
    match at {
        Some(at) => Error::new(kind).at(at.loc(field)),
        None => Error::new(kind),
    }
}

/// The checks across rows: duplicate codes, AOE definitions that disagree,
/// replacements and components that are not tests. A row that fails is left
/// out, and so, in turn, is a row that named it.
pub(crate) fn assemble(tests: Vec<Row<Test>>, panels: Vec<Row<CustomPanel>>, errors: &mut Vec<Error>) -> Catalog {
    let line = |at: &Option<RowAt>| at.as_ref().map_or(0, |a| a.line);
    let mut kept: BTreeMap<String, Row<Test>> = BTreeMap::new();
    let mut questions: BTreeMap<String, AoeQuestion> = BTreeMap::new();
    for row in tests {
        if let Some(first) = kept.get(&row.item.code) {
            let kind = ErrorKind::DuplicateCode { code: row.item.code.clone(), first_line: line(&first.at) };
            errors.push(row_error(&row.at, "code", kind));
            continue;
        }
        let conflict = row.item.aoe.iter().find(|q| questions.get(&q.code).is_some_and(|d| !d.same_definition(q)));
        if let Some(q) = conflict {
            errors.push(row_error(&row.at, "aoe", ErrorKind::ConflictingAoe(q.code.clone())));
            continue;
        }
        for q in &row.item.aoe {
            questions.entry(q.code.clone()).or_insert_with(|| q.clone());
        }
        kept.insert(row.item.code.clone(), row);
    }
    // A replacement must be another test that stays; dropping one test can
    // orphan another's replacement, hence the loop.
    loop {
        let bad: Vec<String> = kept
            .values()
            .filter(|r| r.item.status.replaced_by().is_some_and(|rep| rep == r.item.code || !kept.contains_key(rep)))
            .map(|r| r.item.code.clone())
            .collect();
        if bad.is_empty() {
            break;
        }
        for code in bad {
            if let Some(r) = kept.remove(&code) {
                let rep = r.item.status.replaced_by().unwrap_or_default().to_owned();
                errors.push(row_error(&r.at, "replaced_by", ErrorKind::UnknownReplacement(rep)));
            }
        }
    }
    let mut kept_panels: BTreeMap<String, Row<CustomPanel>> = BTreeMap::new();
    for row in panels {
        let code = &row.item.code;
        if let Some(first) = kept_panels.get(code) {
            let kind = ErrorKind::DuplicateCode { code: code.clone(), first_line: line(&first.at) };
            errors.push(row_error(&row.at, "code", kind));
            continue;
        }
        if let Some(t) = kept.get(code) {
            let kind = ErrorKind::DuplicateCode { code: code.clone(), first_line: line(&t.at) };
            errors.push(row_error(&row.at, "code", kind));
            continue;
        }
        if let Some(c) = row.item.components.iter().find(|c| !kept.contains_key(*c)) {
            errors.push(row_error(&row.at, "components", ErrorKind::UnknownComponent(c.clone())));
            continue;
        }
        kept_panels.insert(code.clone(), row);
    }
    Catalog {
        tests: kept.into_iter().map(|(k, r)| (k, r.item)).collect(),
        panels: kept_panels.into_iter().map(|(k, r)| (k, r.item)).collect(),
    }
}

// ---------------------------------------------------------------------------
// Checking single values: shared by CSV, JSON and `Catalog::new`.

pub(crate) type FieldErrors = Vec<(&'static str, ErrorKind)>;

/// A valid code: 1 to 64 characters, no whitespace or control characters,
/// none of `; : | ^ ~ \ &` (list separators here, delimiters in HL7).
pub(crate) fn check_code(s: &str) -> Result<(), ErrorKind> {
    let ok = !s.is_empty()
        && s.chars().count() <= 64
        && s.chars().all(|c| !c.is_whitespace() && !c.is_control() && !";:|^~\\&".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ErrorKind::InvalidCode(s.to_owned()))
    }
}

/// A price: digits, optionally `.` and 1 to 4 decimals; the scale is kept
/// (`42.00` prints as `42.00`).
pub(crate) fn parse_price(s: &str) -> Result<Decimal, ErrorKind> {
    let bad = || ErrorKind::InvalidPrice(s.to_owned());
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || int.len() > 15 || frac.is_some_and(|f| !digits(f) || f.len() > 4) {
        return Err(bad());
    }
    Decimal::from_str(s).map_err(|_| bad())
}

/// `YYYY-MM-DD` or `YYYYMMDD`.
pub(crate) fn parse_date(s: &str) -> Result<NaiveDate, ErrorKind> {
    let bad = || ErrorKind::InvalidDate(s.to_owned());
    let b = s.as_bytes();
    let fmt = match b.len() {
        10 if b[4] == b'-' && b[7] == b'-' => "%Y-%m-%d",
        8 => "%Y%m%d",
        _ => return Err(bad()),
    };
    if !b.iter().enumerate().all(|(i, c)| c.is_ascii_digit() || (fmt.len() == 8 && (i == 4 || i == 7))) {
        return Err(bad());
    }
    NaiveDate::parse_from_str(s, fmt).map_err(|_| bad())
}

fn parse_required(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "required" | "1" => Some(true),
        "n" | "no" | "false" | "optional" | "0" => Some(false),
        _ => None,
    }
}

/// Trims, and turns an empty text into `None`.
pub(crate) fn clean(s: Option<&str>) -> Option<String> {
    s.map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// A test's fields as text, before checking (a CSV row, a JSON object).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTest {
    #[serde(default)]
    pub(crate) code: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) loinc: Option<String>,
    #[serde(default)]
    pub(crate) cpt: Option<String>,
    #[serde(default)]
    pub(crate) specimen: Option<String>,
    #[serde(default)]
    pub(crate) container: Option<String>,
    #[serde(default)]
    pub(crate) volume: Option<String>,
    #[serde(default)]
    pub(crate) storage: Option<String>,
    #[serde(default)]
    pub(crate) turnaround: Option<String>,
    #[serde(default)]
    pub(crate) price: Option<RawPrice>,
    #[serde(default)]
    pub(crate) status: Option<String>,
    #[serde(default)]
    pub(crate) effective_from: Option<String>,
    #[serde(default)]
    pub(crate) replaced_by: Option<String>,
    #[serde(default)]
    pub(crate) aoe: RawAoe,
}

/// A price as given: text (CSV, JSON string) or a JSON number, which is
/// accepted only when it is an integer (a JSON fraction is a float).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawPrice {
    Text(String),
    Number(serde_json::Number),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawAoe {
    /// The CSV form, `code:question:type:required;…`.
    Text(String),
    /// The JSON form.
    Items(Vec<RawAoeItem>),
}

impl Default for RawAoe {
    fn default() -> Self {
        RawAoe::Items(Vec::new())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAoeItem {
    code: String,
    question: String,
    #[serde(rename = "type")]
    answer_type: String,
    #[serde(default)]
    allowed: Vec<String>,
    #[serde(default)]
    required: bool,
}

impl RawTest {
    /// The checked test, or every bad field.
    pub(crate) fn check(self) -> Result<Test, FieldErrors> {
        let mut errs: FieldErrors = Vec::new();
        let code = match clean(self.code.as_deref()) {
            None => {
                errs.push(("code", ErrorKind::Required));
                String::new()
            }
            Some(c) => {
                if let Err(e) = check_code(&c) {
                    errs.push(("code", e));
                }
                c
            }
        };
        let name = clean(self.name.as_deref()).unwrap_or_else(|| {
            errs.push(("name", ErrorKind::Required));
            String::new()
        });
        let price = match self.price {
            None => Err(ErrorKind::Required),
            Some(RawPrice::Text(s)) if s.trim().is_empty() => Err(ErrorKind::Required),
            Some(RawPrice::Text(s)) => parse_price(s.trim()),
            Some(RawPrice::Number(n)) if n.is_u64() => parse_price(&n.to_string()),
            Some(RawPrice::Number(n)) => Err(ErrorKind::InvalidPrice(n.to_string())),
        }
        .unwrap_or_else(|e| {
            errs.push(("price", e));
            Decimal::ZERO
        });
        let effective_from = match clean(self.effective_from.as_deref()) {
            None => Err(ErrorKind::Required),
            Some(s) => parse_date(&s),
        }
        .unwrap_or_else(|e| {
            errs.push(("effective_from", e));
            NaiveDate::MIN
        });
        let replaced_by = clean(self.replaced_by.as_deref());
        if let Some(r) = &replaced_by {
            if let Err(e) = check_code(r) {
                errs.push(("replaced_by", e));
            }
        }
        let status = match clean(self.status.as_deref()).map(|s| s.to_ascii_lowercase()).as_deref() {
            None | Some("active") => {
                if replaced_by.is_some() {
                    errs.push(("replaced_by", ErrorKind::ReplacementOnActive));
                }
                Status::Active
            }
            Some("discontinued") => Status::Discontinued { replaced_by },
            Some(_) => {
                errs.push(("status", ErrorKind::InvalidStatus(self.status.unwrap_or_default().trim().to_owned())));
                Status::Active
            }
        };
        let aoe = match self.aoe {
            RawAoe::Text(s) => parse_aoe_text(&s),
            RawAoe::Items(items) => items.into_iter().map(check_aoe_item).collect(),
        };
        let aoe = aoe.and_then(check_aoe_list).unwrap_or_else(|e| {
            errs.push(("aoe", e));
            Vec::new()
        });
        let test = Test {
            code,
            name,
            loinc: clean(self.loinc.as_deref()),
            cpt: clean(self.cpt.as_deref()),
            specimen: clean(self.specimen.as_deref()),
            container: clean(self.container.as_deref()),
            volume: clean(self.volume.as_deref()),
            storage: clean(self.storage.as_deref()),
            turnaround: clean(self.turnaround.as_deref()),
            price,
            status,
            effective_from,
            aoe,
        };
        if errs.is_empty() {
            Ok(test)
        } else {
            Err(errs)
        }
    }
}

fn check_aoe_item(i: RawAoeItem) -> Result<AoeQuestion, ErrorKind> {
    let item = i.code.clone();
    let answer_type =
        AnswerType::parse(i.answer_type.trim()).ok_or(ErrorKind::InvalidAoe { item, reason: "unknown type" })?;
    build_question(&i.code, &i.question, answer_type, i.allowed.iter().map(String::as_str).collect(), i.required)
}

fn build_question(
    code: &str,
    question: &str,
    answer_type: AnswerType,
    allowed: Vec<&str>,
    required: bool,
) -> Result<AoeQuestion, ErrorKind> {
    let bad = |reason| ErrorKind::InvalidAoe { item: code.trim().to_owned(), reason };
    let code = code.trim();
    check_code(code).map_err(|_| bad("invalid question code"))?;
    let question = question.trim();
    if question.is_empty() {
        return Err(bad("empty question"));
    }
    let allowed: Vec<String> = allowed.iter().map(|a| a.trim().to_owned()).collect();
    match answer_type {
        AnswerType::List if allowed.is_empty() => return Err(bad("a list question needs its answers")),
        AnswerType::List => {
            if allowed.iter().any(String::is_empty) {
                return Err(bad("empty answer"));
            }
            let mut seen = std::collections::HashSet::new();
            if !allowed.iter().all(|a| seen.insert(a.to_ascii_lowercase())) {
                return Err(bad("duplicate answer"));
            }
        }
        _ if !allowed.is_empty() => return Err(bad("answers are only for list questions")),
        _ => {}
    }
    Ok(AoeQuestion { code: code.to_owned(), question: question.to_owned(), answer_type, allowed, required })
}

fn check_aoe_list(list: Vec<AoeQuestion>) -> Result<Vec<AoeQuestion>, ErrorKind> {
    for (i, q) in list.iter().enumerate() {
        if list[..i].iter().any(|p| p.code == q.code) {
            return Err(ErrorKind::InvalidAoe { item: q.code.clone(), reason: "question asked twice" });
        }
    }
    Ok(list)
}

/// Splits on `sep` where it is not escaped by a backslash; escapes stay.
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Escapes the separators of the AOE cell (`\ ; : | =`) with a backslash.
pub(crate) fn escape_aoe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\;:|=".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The CSV `aoe` cell: `code:question:type:required` items separated by
/// `;`; `type` is `text`, `number`, `date`, `yes_no` or `list=A|B|C`;
/// `required` is `Y` or `N`; a backslash escapes the next character.
pub(crate) fn parse_aoe_text(s: &str) -> Result<Vec<AoeQuestion>, ErrorKind> {
    let mut out = Vec::new();
    for raw in split_unescaped(s, ';') {
        if raw.trim().is_empty() {
            continue;
        }
        let bad = |reason| ErrorKind::InvalidAoe { item: raw.trim().to_owned(), reason };
        let parts = split_unescaped(raw, ':');
        if parts.len() != 4 {
            return Err(bad("expected code:question:type:required"));
        }
        let un = |p: &str| unescape(p).ok_or_else(|| bad("dangling backslash"));
        let code = un(parts[0])?;
        let question = un(parts[1])?;
        let (type_name, answers) = match split_unescaped(parts[2], '=').as_slice() {
            [t] => (un(t)?, None),
            [t, a] => (un(t)?, Some(*a)),
            _ => return Err(bad("more than one '=' in the type")),
        };
        let answer_type = AnswerType::parse(type_name.trim()).ok_or_else(|| bad("unknown type"))?;
        let allowed: Vec<String> = match answers {
            Some(a) => split_unescaped(a, '|').into_iter().map(un).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let required = parse_required(un(parts[3])?.trim()).ok_or_else(|| bad("required must be Y or N"))?;
        out.push(build_question(
            &code,
            &question,
            answer_type,
            allowed.iter().map(String::as_str).collect(),
            required,
        )?);
    }
    Ok(out)
}

/// The CSV `aoe` cell of these questions (the inverse of [`parse_aoe_text`]).
pub(crate) fn format_aoe_text(list: &[AoeQuestion]) -> String {
    list.iter().map(format_aoe_item).collect::<Vec<_>>().join(";")
}

pub(crate) fn format_aoe_item(q: &AoeQuestion) -> String {
    let mut t = q.answer_type.as_str().to_owned();
    if q.answer_type == AnswerType::List {
        t.push('=');
        t.push_str(&q.allowed.iter().map(|a| escape_aoe(a)).collect::<Vec<_>>().join("|"));
    }
    format!("{}:{}:{}:{}", escape_aoe(&q.code), escape_aoe(&q.question), t, if q.required { "Y" } else { "N" })
}

/// A panel's fields as text, before checking.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPanel {
    #[serde(default)]
    pub(crate) code: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) client_account: Option<String>,
    #[serde(default)]
    pub(crate) price: Option<RawPrice>,
    #[serde(default)]
    pub(crate) components: RawComponents,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawComponents {
    Text(String),
    Items(Vec<String>),
}

impl Default for RawComponents {
    fn default() -> Self {
        RawComponents::Items(Vec::new())
    }
}

impl RawPanel {
    pub(crate) fn check(self) -> Result<CustomPanel, FieldErrors> {
        let mut errs: FieldErrors = Vec::new();
        let mut code_of = |field: &'static str, v: Option<&str>| match clean(v) {
            None => {
                errs.push((field, ErrorKind::Required));
                String::new()
            }
            Some(c) => {
                if let Err(e) = check_code(&c) {
                    errs.push((field, e));
                }
                c
            }
        };
        let code = code_of("code", self.code.as_deref());
        let client_account = code_of("client_account", self.client_account.as_deref());
        let name = clean(self.name.as_deref()).unwrap_or_else(|| {
            errs.push(("name", ErrorKind::Required));
            String::new()
        });
        let price = match self.price {
            None => Err(ErrorKind::Required),
            Some(RawPrice::Text(s)) if s.trim().is_empty() => Err(ErrorKind::Required),
            Some(RawPrice::Text(s)) => parse_price(s.trim()),
            Some(RawPrice::Number(n)) if n.is_u64() => parse_price(&n.to_string()),
            Some(RawPrice::Number(n)) => Err(ErrorKind::InvalidPrice(n.to_string())),
        }
        .unwrap_or_else(|e| {
            errs.push(("price", e));
            Decimal::ZERO
        });
        let list: Vec<String> = match &self.components {
            RawComponents::Text(s) => s.split(';').map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect(),
            RawComponents::Items(v) => v.iter().map(|c| c.trim().to_owned()).collect(),
        };
        let components = check_components(list).unwrap_or_else(|e| {
            errs.push(("components", e));
            Vec::new()
        });
        if errs.is_empty() {
            Ok(CustomPanel { code, name, client_account, components, price })
        } else {
            Err(errs)
        }
    }
}

fn check_components(list: Vec<String>) -> Result<Vec<String>, ErrorKind> {
    if list.is_empty() {
        return Err(ErrorKind::InvalidComponents("a panel needs at least one test"));
    }
    for (i, c) in list.iter().enumerate() {
        check_code(c)?;
        if list[..i].contains(c) {
            return Err(ErrorKind::InvalidComponents("a test is listed twice"));
        }
    }
    Ok(list)
}

/// A test built in code goes through the same checks as an imported one.
fn normalize_test(t: Test) -> Result<Test, FieldErrors> {
    let (status, replaced_by) = match t.status {
        Status::Active => (Some("active".to_owned()), None),
        Status::Discontinued { replaced_by } => (Some("discontinued".to_owned()), replaced_by),
    };
    let mut aoe_errs = Vec::new();
    let aoe = t
        .aoe
        .into_iter()
        .map(|q| {
            build_question(
                &q.code,
                &q.question,
                q.answer_type,
                q.allowed.iter().map(String::as_str).collect(),
                q.required,
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(check_aoe_list)
        .unwrap_or_else(|e| {
            aoe_errs.push(("aoe", e));
            Vec::new()
        });
    let raw = RawTest {
        code: Some(t.code),
        name: Some(t.name),
        loinc: t.loinc,
        cpt: t.cpt,
        specimen: t.specimen,
        container: t.container,
        volume: t.volume,
        storage: t.storage,
        turnaround: t.turnaround,
        price: Some(RawPrice::Text(t.price.to_string())),
        status,
        effective_from: Some(t.effective_from.format("%Y-%m-%d").to_string()),
        replaced_by,
        aoe: RawAoe::Items(Vec::new()),
    };
    let mut checked = raw.check();
    match (&mut checked, aoe_errs.is_empty()) {
        (Ok(test), true) => test.aoe = aoe,
        (Ok(_), false) => checked = Err(aoe_errs),
        (Err(e), _) => e.extend(aoe_errs),
    }
    checked
}

fn normalize_panel(p: CustomPanel) -> Result<CustomPanel, FieldErrors> {
    RawPanel {
        code: Some(p.code),
        name: Some(p.name),
        client_account: Some(p.client_account),
        price: Some(RawPrice::Text(p.price.to_string())),
        components: RawComponents::Items(p.components),
    }
    .check()
}

// ---------------------------------------------------------------------------
// JSON: the same shape the JSON import reads.

#[derive(Serialize)]
struct AoeOut<'a> {
    code: &'a str,
    question: &'a str,
    #[serde(rename = "type")]
    answer_type: AnswerType,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    allowed: &'a [String],
    required: bool,
}

#[derive(Serialize)]
struct TestOut<'a> {
    code: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    loinc: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    specimen: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    turnaround: Option<&'a str>,
    price: String,
    status: &'static str,
    effective_from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    replaced_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    aoe: Vec<AoeOut<'a>>,
}

impl Serialize for Test {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TestOut {
            code: &self.code,
            name: &self.name,
            loinc: self.loinc.as_deref(),
            cpt: self.cpt.as_deref(),
            specimen: self.specimen.as_deref(),
            container: self.container.as_deref(),
            volume: self.volume.as_deref(),
            storage: self.storage.as_deref(),
            turnaround: self.turnaround.as_deref(),
            price: self.price.to_string(),
            status: self.status.as_str(),
            effective_from: self.effective_from.format("%Y-%m-%d").to_string(),
            replaced_by: self.status.replaced_by(),
            aoe: self
                .aoe
                .iter()
                .map(|q| AoeOut {
                    code: &q.code,
                    question: &q.question,
                    answer_type: q.answer_type,
                    allowed: &q.allowed,
                    required: q.required,
                })
                .collect(),
        }
        .serialize(s)
    }
}

fn field_errors<E: serde::de::Error>(errs: FieldErrors) -> E {
    let text: Vec<String> = errs.iter().map(|(f, k)| format!("{f}: {k}")).collect();
    E::custom(text.join("; "))
}

impl<'de> Deserialize<'de> for Test {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Test, D::Error> {
        RawTest::deserialize(d)?.check().map_err(field_errors)
    }
}

#[derive(Serialize)]
struct PanelOut<'a> {
    code: &'a str,
    name: &'a str,
    client_account: &'a str,
    price: String,
    components: &'a [String],
}

impl Serialize for CustomPanel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PanelOut {
            code: &self.code,
            name: &self.name,
            client_account: &self.client_account,
            price: self.price.to_string(),
            components: &self.components,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for CustomPanel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CustomPanel, D::Error> {
        RawPanel::deserialize(d)?.check().map_err(field_errors)
    }
}

#[derive(Serialize)]
struct CatalogOut<'a> {
    tests: Vec<&'a Test>,
    panels: Vec<&'a CustomPanel>,
}

impl Serialize for Catalog {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        CatalogOut { tests: self.tests.values().collect(), panels: self.panels.values().collect() }.serialize(s)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogIn {
    #[serde(default)]
    tests: Vec<Test>,
    #[serde(default)]
    panels: Vec<CustomPanel>,
}

impl<'de> Deserialize<'de> for Catalog {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Catalog, D::Error> {
        let c = CatalogIn::deserialize(d)?;
        Catalog::new(c.tests, c.panels).map_err(|e| {
            let rows: Vec<String> = e.rows().iter().map(ToString::to_string).collect();
            serde::de::Error::custom(rows.join("; "))
        })
    }
}

/// Names of HL7 table 0487 specimen types the sample data and most labs use.
const SPECIMENS: &[(&str, &str)] = &[
    ("BLD", "Whole blood"),
    ("BLDA", "Blood arterial"),
    ("BLDV", "Blood venous"),
    ("CSF", "Cerebrospinal fluid"),
    ("PLAS", "Plasma"),
    ("PLS", "Plasma"),
    ("SER", "Serum"),
    ("SAL", "Saliva"),
    ("STL", "Stool"),
    ("SWT", "Sweat"),
    ("THRT", "Throat"),
    ("NASP", "Nasopharyngeal"),
    ("UR", "Urine"),
    ("URNS", "Urine"),
    ("WB", "Whole blood"),
    ("SPT", "Sputum"),
    ("GENV", "Vaginal"),
    ("SKN", "Skin"),
];

/// The name of an HL7 table 0487 specimen code this crate knows (`SER` →
/// `Serum`).
///
/// # Examples
///
/// ```
/// assert_eq!(compendium::specimen_name("ser"), Some("Serum"));
/// assert_eq!(compendium::specimen_name("XYZ"), None);
/// ```
pub fn specimen_name(code: &str) -> Option<&'static str> {
    SPECIMENS.iter().find(|(c, _)| c.eq_ignore_ascii_case(code.trim())).map(|(_, n)| *n)
}

/// Whether a specimen sent with an order (`got`, a code or a name, possibly
/// `CODE^Name^HL70487`) is the specimen a test asks for (`expected`): the
/// same code or name without case, or a code and its name.
///
/// # Examples
///
/// ```
/// use compendium::specimen_matches;
/// assert!(specimen_matches("SER", "Serum"));
/// assert!(specimen_matches("SER", "SER^Serum^HL70487"));
/// assert!(specimen_matches("WB", "BLD")); // both whole blood
/// assert!(!specimen_matches("SER", "UR"));
/// ```
pub fn specimen_matches(expected: &str, got: &str) -> bool {
    let norm = |s: &str| -> String {
        let s = s.trim();
        specimen_name(s).unwrap_or(s).to_ascii_lowercase()
    };
    let e = norm(expected);
    got.split('^').filter(|p| !p.trim().is_empty()).take(2).any(|g| norm(g) == e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_exact_and_keep_their_scale() {
        assert_eq!(parse_price("42.00").unwrap().to_string(), "42.00");
        assert_eq!(parse_price("0").unwrap().to_string(), "0");
        for bad in ["", "-1", "1e3", "4x", "1.", ".5", "1.23456", " 1", "+1"] {
            assert!(parse_price(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("2024-02-29").unwrap().to_string(), "2024-02-29");
        assert_eq!(parse_date("20240229").unwrap().to_string(), "2024-02-29");
        for bad in ["2023-02-29", "2024/01/01", "24-01-01", "2024-1-01", "+2024-01-0"] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn aoe_text_round_trips_with_escapes() {
        let s = r"FAST:Fasting\: 12h?:yes_no:Y;SRC:Source:list=THROAT|NA\|SAL:N;VOL:Volume (mL):number:n";
        let qs = parse_aoe_text(s).unwrap();
        assert_eq!(qs.len(), 3);
        assert_eq!(qs[0].question, "Fasting: 12h?");
        assert_eq!(qs[1].allowed, ["THROAT", "NA|SAL"]);
        assert!(!qs[2].required);
        assert_eq!(parse_aoe_text(&format_aoe_text(&qs)).unwrap(), qs);
    }

    #[test]
    fn aoe_text_errors() {
        let e = |s| parse_aoe_text(s).unwrap_err().to_string();
        assert_eq!(e("A:B:text"), r#"invalid AOE item "A:B:text": expected code:question:type:required"#);
        assert_eq!(e("A:B:color:Y"), r#"invalid AOE item "A:B:color:Y": unknown type"#);
        assert_eq!(e("A:B:list:Y"), r#"invalid AOE item "A": a list question needs its answers"#);
        assert_eq!(e("A:B:text:maybe"), r#"invalid AOE item "A:B:text:maybe": required must be Y or N"#);
        assert_eq!(e(r"A:B:text:Y\"), r#"invalid AOE item "A:B:text:Y\\": dangling backslash"#);
    }

    #[test]
    fn yes_no_and_number_answers() {
        let q =
            |t| AoeQuestion { code: "Q".into(), question: "Q".into(), answer_type: t, allowed: vec![], required: true };
        assert!(q(AnswerType::YesNo).accepts("y"));
        assert!(q(AnswerType::YesNo).accepts("N^No^HL70136"));
        assert!(!q(AnswerType::YesNo).accepts("maybe"));
        assert!(q(AnswerType::Number).accepts("-12.5"));
        assert!(!q(AnswerType::Number).accepts("12 mL"));
        assert!(!q(AnswerType::Number).accepts("."));
        assert!(q(AnswerType::Date).accepts("20240115"));
        assert!(!q(AnswerType::Date).accepts("yesterday"));
        assert!(!q(AnswerType::Text).accepts("  "));
    }
}
