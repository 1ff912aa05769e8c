//! HL7 v2.5.1 master-file messages as the eDOS guide (the S&I Framework
//! Laboratory Test Compendium Framework) defines them, and their MFK
//! acknowledgements.
//!
//! - `MFN^M08` (MFI-1 `OMA`): per test an MFE and an OM1 (OM1-2 the
//!   orderable code, OM1-7 LOINC and CPT, OM1-31 the AOE questions, OM1-23
//!   the turnaround in minutes when it reads as a duration) and an OM4 for
//!   specimen, container, volume and storage. Each AOE question is also sent
//!   as an observation of its own (OM1-12 `N`, not orderable) with OM2 for a
//!   numeric answer or OM3 with the allowed answers for a coded one: that is
//!   the data this catalog has for OM2/OM3, and what an EMR needs to build
//!   the question.
//! - `MFN^M10` (MFI-1 `OMC`): per custom panel an MFE, an OM1 (OM1-18 `P`),
//!   an OM5 whose OM5-2 lists the component tests, and an OM4 per distinct
//!   specimen and container of the components.
//! - `MFN^M04` (MFI-1 `CDM`): per test and panel an MFE, a CDM (CDM-7 the
//!   CPT code, CDM-8 active or inactive) and a PRC (PRC-5 the price in USD,
//!   PRC-2 the client account of a panel, PRC-11 the effective date).
//!
//! A whole catalog goes out with MFI-3 `REP` and MFE-1 `MAD` (`MDC` for a
//! discontinued test); a [`Diff`] goes out with MFI-3 `UPD` and exactly its
//! changes: `MAD` added, `MUP` changed, `MDL` removed, `MDC` discontinued,
//! `MAC` reactivated. A change of price alone is sent in the M04 only, a
//! change of anything else in the M08 or M10 only. MFE-3 is the record's
//! effective date, MFE-4 its primary key (`code^name^L`).
//!
//! Each message's control ID (MSH-10) names the version it carries
//! ([`control_id`]), so an MFK acknowledging it says which version an EMR
//! accepted ([`crate::Compendium::record_ack`]).

use std::collections::BTreeSet;

use hl7_core::builder::{FieldValue, MessageBuilder, SegmentBuilder};
use hl7_core::datetime::Timestamp;
use hl7_core::Message;
use serde::Serialize;

use crate::diff::{ChangeKind, Diff};
use crate::error::{Error, ErrorKind};
use crate::model::{specimen_name, AnswerType, AoeQuestion, Catalog, CustomPanel, Test};
use crate::version::Version;

/// Which master-file message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum MfnKind {
    /// Tests and AOE questions (`MFN^M08`, MFI-1 `OMA`).
    M08,
    /// Custom panels (`MFN^M10`, MFI-1 `OMC`).
    M10,
    /// Prices (`MFN^M04`, MFI-1 `CDM`).
    M04,
}

impl MfnKind {
    /// `M08`, `M10`, `M04`.
    pub fn as_str(self) -> &'static str {
        match self {
            MfnKind::M08 => "M08",
            MfnKind::M10 => "M10",
            MfnKind::M04 => "M04",
        }
    }

    fn master_file(self) -> &'static str {
        match self {
            MfnKind::M08 => "OMA",
            MfnKind::M10 => "OMC",
            MfnKind::M04 => "CDM",
        }
    }
}

/// One master-file message, as ER7 text (segments ended by CR).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MfnMessage {
    /// Which message.
    pub kind: MfnKind,
    /// Its MSH-10.
    pub control_id: String,
    /// The number of MFE records in it.
    pub records: usize,
    /// The message.
    pub text: String,
}

/// MSH values of the messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfnOptions {
    /// MSH-3 (default `LABBRIDGE`).
    pub sending_application: String,
    /// MSH-4 (default `LAB`).
    pub sending_facility: String,
    /// MSH-5.
    pub receiving_application: Option<String>,
    /// MSH-6.
    pub receiving_facility: Option<String>,
}

impl Default for MfnOptions {
    fn default() -> Self {
        MfnOptions {
            sending_application: "LABBRIDGE".to_owned(),
            sending_facility: "LAB".to_owned(),
            receiving_application: None,
            receiving_facility: None,
        }
    }
}

/// The MSH-10 of the `kind` message of version `to`: `CMP{to}-{kind}` for
/// a whole catalog, `CMP{to}-{kind}-{from}` for the update from version `from`.
///
/// # Examples
///
/// ```
/// use compendium::mfn::{control_id, version_of_control_id, MfnKind};
/// assert_eq!(control_id(7, None, MfnKind::M08), "CMP7-M08");
/// assert_eq!(control_id(7, Some(5), MfnKind::M04), "CMP7-M04-5");
/// assert_eq!(version_of_control_id("CMP7-M04-5"), Some(7));
/// assert_eq!(version_of_control_id("MSG0001"), None);
/// ```
pub fn control_id(to: u32, from: Option<u32>, kind: MfnKind) -> String {
    match from {
        None => format!("CMP{to}-{}", kind.as_str()),
        Some(f) => format!("CMP{to}-{}-{f}", kind.as_str()),
    }
}

/// The version a control ID made by [`control_id`] names.
pub fn version_of_control_id(id: &str) -> Option<u32> {
    let rest = id.strip_prefix("CMP")?;
    let (n, kind) = rest.split_once('-')?;
    let kind = kind.split('-').next()?;
    if !["M08", "M10", "M04"].contains(&kind) {
        return None;
    }
    n.parse().ok()
}

/// The messages of a whole version (MFI-3 `REP`): M08, M10 (when there are
/// panels) and M04.
///
/// # Examples
///
/// ```
/// use compendium::{mfn, Catalog, Compendium, Test};
/// use hl7_core::Message;
///
/// let c = Catalog::new([Test::new("1001", "Glucose", "12.50".parse()?, "2024-01-01".parse()?)
///     .with_loinc("2345-7").with_cpt("82947").with_specimen("SER")], [])?;
/// let mut comp = Compendium::new();
/// let v = comp.commit(c, "ana", "", "20240101090000".parse()?);
/// let msgs = mfn::export_version(v, &Default::default());
/// let m08 = Message::parse(msgs[0].text.as_bytes())?;
/// let get = |p: &str| m08.get(&p.parse().unwrap()).and_then(|e| e.value()).map(|v| v.into_owned());
/// assert_eq!(get("MSH-9").as_deref(), Some("MFN^M08^MFN_M08"));
/// assert_eq!(get("MFI-3").as_deref(), Some("REP"));
/// assert_eq!(get("MFE-1").as_deref(), Some("MAD"));
/// assert_eq!(get("OM1-2-1").as_deref(), Some("1001"));
/// assert_eq!(get("OM1-7(2)-1").as_deref(), Some("82947"));
/// assert_eq!(get("OM4-6-2").as_deref(), Some("Serum"));
/// let m04 = Message::parse(msgs[1].text.as_bytes())?;
/// assert_eq!(m04.get(&"PRC-5-1-1".parse()?).unwrap().decoded(), "12.50");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn export_version(version: &Version, opts: &MfnOptions) -> Vec<MfnMessage> {
    export_catalog(version.catalog(), version.number(), version.created_at(), opts)
}

/// The messages of a whole catalog (MFI-3 `REP`), labelled as version
/// `number` made at `at`.
pub fn export_catalog(catalog: &Catalog, number: u32, at: &Timestamp, opts: &MfnOptions) -> Vec<MfnMessage> {
    let ctx = Ctx { at, opts, to: number, from: None };
    let questions = catalog.questions();
    let mut m08 = ctx.message(MfnKind::M08);
    for q in questions.values() {
        m08.question("MAD", q);
    }
    for t in catalog.tests() {
        m08.test(if t.status.is_active() { "MAD" } else { "MDC" }, t, &ctx);
    }
    let mut m10 = ctx.message(MfnKind::M10);
    for p in catalog.panels() {
        m10.panel("MAD", p, catalog, &ctx);
    }
    let mut m04 = ctx.message(MfnKind::M04);
    for t in catalog.tests() {
        m04.test_price(if t.status.is_active() { "MAD" } else { "MDC" }, t);
    }
    for p in catalog.panels() {
        m04.panel_price("MAD", p, &ctx);
    }
    [m08, m10, m04].into_iter().filter_map(Draft::finish).collect()
}

/// The messages of a diff (MFI-3 `UPD`), carrying exactly its changes; a
/// message with no change is left out. Version numbers come from the diff
/// ([`Diff::with_versions`]; 0 when it has none), `at` is the time of the
/// newer version.
///
/// # Examples
///
/// ```
/// use compendium::{diff, mfn, Catalog, Test};
/// use hl7_core::Message;
///
/// let d = "2024-01-01".parse()?;
/// let old = Catalog::new([Test::new("1001", "Glucose", "42.00".parse()?, d)], [])?;
/// let new = Catalog::new([Test::new("1001", "Glucose", "45.00".parse()?, d)], [])?;
/// let changes = diff(&old, &new).with_versions(1, 2);
/// let msgs = mfn::export_diff(&changes, &"20240201".parse()?, &Default::default());
/// assert_eq!(msgs.len(), 1); // a price change: the M04 only
/// let m04 = Message::parse(msgs[0].text.as_bytes())?;
/// assert_eq!(m04.get(&"MFI-3".parse()?).unwrap().decoded(), "UPD");
/// assert_eq!(m04.get(&"MFE-1".parse()?).unwrap().decoded(), "MUP");
/// assert_eq!(m04.get(&"PRC-5-1-1".parse()?).unwrap().decoded(), "45.00");
/// assert_eq!(msgs[0].control_id, "CMP2-M04-1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn export_diff(diff: &Diff<'_>, at: &Timestamp, opts: &MfnOptions) -> Vec<MfnMessage> {
    let ctx = Ctx { at, opts, to: diff.to.unwrap_or(0), from: Some(diff.from.unwrap_or(0)) };
    let (old, new) = (diff.old(), diff.new_catalog());
    let event = |k: ChangeKind| match k {
        ChangeKind::Added => "MAD",
        ChangeKind::Removed => "MDL",
        ChangeKind::Discontinued => "MDC",
        ChangeKind::Reactivated => "MAC",
        ChangeKind::Changed => "MUP",
    };
    let (old_q, new_q) = (old.questions(), new.questions());
    let mut m08 = ctx.message(MfnKind::M08);
    for ch in diff.questions.iter().filter(|c| c.kind != ChangeKind::Removed) {
        if let Some(q) = new_q.get(ch.code.as_str()) {
            m08.question(event(ch.kind), q);
        }
    }
    let (test_defs, test_prices) = diff.test_codes_touched();
    for ch in diff.tests.iter().filter(|c| test_defs.contains(c.code.as_str())) {
        let t = if ch.kind == ChangeKind::Removed { old.test(&ch.code) } else { new.test(&ch.code) };
        if let Some(t) = t {
            m08.test(event(ch.kind), t, &ctx);
        }
    }
    for ch in diff.questions.iter().filter(|c| c.kind == ChangeKind::Removed) {
        if let Some(q) = old_q.get(ch.code.as_str()) {
            m08.question("MDL", q);
        }
    }
    let (panel_defs, panel_prices) = diff.panel_codes_touched();
    let mut m10 = ctx.message(MfnKind::M10);
    for ch in diff.panels.iter().filter(|c| panel_defs.contains(c.code.as_str())) {
        let (p, cat) =
            if ch.kind == ChangeKind::Removed { (old.panel(&ch.code), old) } else { (new.panel(&ch.code), new) };
        if let Some(p) = p {
            m10.panel(event(ch.kind), p, cat, &ctx);
        }
    }
    let mut m04 = ctx.message(MfnKind::M04);
    for ch in diff.tests.iter().filter(|c| test_prices.contains(c.code.as_str())) {
        let t = if ch.kind == ChangeKind::Removed { old.test(&ch.code) } else { new.test(&ch.code) };
        if let Some(t) = t {
            m04.test_price(event(ch.kind), t);
        }
    }
    for ch in diff.panels.iter().filter(|c| panel_prices.contains(c.code.as_str())) {
        let p = if ch.kind == ChangeKind::Removed { old.panel(&ch.code) } else { new.panel(&ch.code) };
        if let Some(p) = p {
            m04.panel_price(event(ch.kind), p, &ctx);
        }
    }
    [m08, m10, m04].into_iter().filter_map(Draft::finish).collect()
}

struct Ctx<'a> {
    at: &'a Timestamp,
    opts: &'a MfnOptions,
    to: u32,
    from: Option<u32>,
}

impl Ctx<'_> {
    fn message(&self, kind: MfnKind) -> Draft {
        let (trigger, structure) = match kind {
            MfnKind::M08 => ("M08", "MFN_M08"),
            MfnKind::M10 => ("M10", "MFN_M10"),
            MfnKind::M04 => ("M04", "MFN_M04"),
        };
        let id = control_id(self.to, self.from, kind);
        let mut b = MessageBuilder::new(&format!("MFN^{trigger}^{structure}"), "2.5.1")
            .with_msh_field(3, self.opts.sending_application.as_str())
            .with_msh_field(4, self.opts.sending_facility.as_str())
            .with_msh_field(7, self.at.to_hl7())
            .with_msh_field(10, id.as_str());
        if let Some(a) = &self.opts.receiving_application {
            b = b.with_msh_field(5, a.as_str());
        }
        if let Some(f) = &self.opts.receiving_facility {
            b = b.with_msh_field(6, f.as_str());
        }
        let mfi = seg("MFI")
            .with_field(1, FieldValue::components([kind.master_file(), "", "HL70175"]))
            .with_field(3, if self.from.is_some() { "UPD" } else { "REP" })
            .with_field(4, self.at.to_hl7())
            .with_field(5, self.at.to_hl7())
            .with_field(6, "AL");
        Draft { kind, control_id: id, builder: b.with_segment(mfi), segments: Vec::new(), records: 0 }
    }

    fn date(&self) -> String {
        self.at.naive().format("%Y%m%d").to_string()
    }
}

fn seg(name: &'static str) -> SegmentBuilder {
    // The names used here are valid constants; `new` only refuses bad names and MSH.
    SegmentBuilder::new(name).unwrap_or_else(|_| unreachable!("valid segment name {name}"))
}

fn cwe(code: &str, text: &str, system: &str) -> FieldValue {
    FieldValue::components([code, text, system])
}

/// LOINC codes look like `2345-7`; other question codes are the lab's own.
fn code_system(code: &str) -> &'static str {
    let looks_loinc = code.split_once('-').is_some_and(|(n, c)| {
        (1..=7).contains(&n.len())
            && n.bytes().all(|b| b.is_ascii_digit())
            && c.len() == 1
            && c.as_bytes()[0].is_ascii_digit()
    });
    if looks_loinc {
        "LN"
    } else {
        "L"
    }
}

/// `2 days`, `4 hours`, `90 min`, `1 week` as minutes (OM1-23).
fn turnaround_minutes(s: &str) -> Option<u64> {
    let mut parts = s.split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    let unit = parts.next()?.to_ascii_lowercase();
    if parts.next().is_some() {
        return None;
    }
    let per = match unit.trim_end_matches('s') {
        "min" | "minute" => 1,
        "h" | "hr" | "hour" => 60,
        "d" | "day" => 1440,
        "wk" | "week" => 10080,
        _ => return None,
    };
    n.checked_mul(per)
}

/// `1 mL` → (`1`, `mL`) for a CQ.
fn quantity(s: &str) -> Option<(&str, &str)> {
    let (n, u) = s.trim().split_once(' ')?;
    let ok = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit() || b == b'.') && !u.trim().is_empty();
    ok.then(|| (n, u.trim()))
}

fn specimen_cwe(s: &str) -> FieldValue {
    match specimen_name(s) {
        Some(name) => cwe(&s.to_ascii_uppercase(), name, "HL70487"),
        None => cwe("", s, ""),
    }
}

struct Draft {
    kind: MfnKind,
    control_id: String,
    builder: MessageBuilder,
    segments: Vec<SegmentBuilder>,
    records: usize,
}

/// What the M04 says about one test or panel.
struct PriceRow<'a> {
    code: &'a str,
    name: &'a str,
    cpt: Option<&'a str>,
    price: String,
    active: bool,
    effective: &'a str,
    client: Option<&'a str>,
}

impl Draft {
    fn push(&mut self, s: SegmentBuilder) {
        self.segments.push(s);
    }

    fn mfe(&mut self, event: &str, effective: &str, key: FieldValue) -> usize {
        self.records += 1;
        let n = self.records;
        self.push(
            seg("MFE")
                .with_field(1, event)
                .with_field(2, n.to_string())
                .with_field(3, effective)
                .with_field(4, key)
                .with_field(5, "CWE"),
        );
        n
    }

    fn test(&mut self, event: &str, t: &Test, ctx: &Ctx<'_>) {
        let eff = t.effective_from.format("%Y%m%d").to_string();
        let key = cwe(&t.code, &t.name, "L");
        let n = self.mfe(event, &eff, key.clone());
        let mut other = Vec::new();
        if let Some(l) = &t.loinc {
            other.push(cwe(l, "", "LN"));
        }
        if let Some(c) = &t.cpt {
            other.push(cwe(c, "", "C4"));
        }
        let description = match t.status.replaced_by() {
            _ if t.status.is_active() => t.name.clone(),
            Some(r) => format!("Discontinued. Order {r} instead."),
            None => "Discontinued.".to_owned(),
        };
        let aoe: Vec<FieldValue> = t.aoe.iter().map(|q| cwe(&q.code, &q.question, code_system(&q.code))).collect();
        let mut om1 = seg("OM1")
            .with_field(1, n.to_string())
            .with_field(2, key)
            .with_field(4, if t.specimen.is_some() { "Y" } else { "N" })
            .with_field(6, description)
            .with_field(7, FieldValue::repetitions(other))
            .with_field(9, t.name.as_str())
            .with_field(11, t.name.as_str())
            .with_field(12, if t.status.is_active() { "Y" } else { "N" })
            .with_field(18, "A")
            .with_field(21, ctx.at.to_hl7())
            .with_field(22, eff.as_str());
        if let Some(m) = t.turnaround.as_deref().and_then(turnaround_minutes) {
            om1 = om1.with_field(23, m.to_string());
        }
        if !aoe.is_empty() {
            om1 = om1.with_field(31, FieldValue::repetitions(aoe));
        }
        self.push(om1);
        if t.specimen.is_some() || t.container.is_some() || t.volume.is_some() || t.storage.is_some() {
            let mut om4 = seg("OM4").with_field(1, "1");
            if let Some(c) = &t.container {
                om4 = om4.with_field(3, c.as_str());
            }
            if let Some(s) = &t.specimen {
                om4 = om4.with_field(6, specimen_cwe(s));
            }
            if let Some(s) = &t.storage {
                om4 = om4.with_field(9, s.as_str());
            }
            match t.volume.as_deref().map(|v| (v, quantity(v))) {
                Some((_, Some((n, u)))) => om4 = om4.with_field(10, FieldValue::components([n, u])),
                Some((v, None)) => om4 = om4.with_field(12, v),
                None => {}
            }
            self.push(om4);
        }
    }

    fn question(&mut self, event: &str, q: &AoeQuestion) {
        let key = cwe(&q.code, &q.question, code_system(&q.code));
        let n = self.mfe(event, "", key.clone());
        self.push(
            seg("OM1")
                .with_field(1, n.to_string())
                .with_field(2, key)
                .with_field(3, q.answer_type.hl7_type())
                .with_field(4, "N")
                .with_field(6, q.question.as_str())
                .with_field(9, q.question.as_str())
                .with_field(12, "N")
                .with_field(18, "A"),
        );
        match q.answer_type {
            AnswerType::Number => self.push(seg("OM2").with_field(1, n.to_string())),
            AnswerType::YesNo => self.push(
                seg("OM3")
                    .with_field(1, n.to_string())
                    .with_field(2, cwe("HL70136", "Yes/no indicator", "HL70396"))
                    .with_field(3, FieldValue::repetitions([cwe("Y", "Yes", "HL70136"), cwe("N", "No", "HL70136")]))
                    .with_field(7, "CWE"),
            ),
            AnswerType::List => self.push(
                seg("OM3")
                    .with_field(1, n.to_string())
                    .with_field(2, cwe("L", "Local", "HL70396"))
                    .with_field(3, FieldValue::repetitions(q.allowed.iter().map(|a| cwe(a, a, "L"))))
                    .with_field(7, "CWE"),
            ),
            AnswerType::Text | AnswerType::Date => {}
        }
    }

    fn panel(&mut self, event: &str, p: &CustomPanel, catalog: &Catalog, ctx: &Ctx<'_>) {
        let date = ctx.date();
        let key = cwe(&p.code, &p.name, "L");
        let n = self.mfe(event, &date, key.clone());
        self.push(
            seg("OM1")
                .with_field(1, n.to_string())
                .with_field(2, key)
                .with_field(4, "Y")
                .with_field(6, p.name.as_str())
                .with_field(9, p.name.as_str())
                .with_field(11, p.name.as_str())
                .with_field(12, "Y")
                .with_field(18, "P")
                .with_field(21, ctx.at.to_hl7())
                .with_field(22, date.as_str()),
        );
        let comps = p.components.iter().map(|c| {
            let name = catalog.test(c).map_or("", |t| t.name.as_str());
            cwe(c, name, "L")
        });
        self.push(seg("OM5").with_field(1, n.to_string()).with_field(2, FieldValue::repetitions(comps)));
        let mut seen = BTreeSet::new();
        for t in p.components.iter().filter_map(|c| catalog.test(c)) {
            let pair = (t.specimen.as_deref(), t.container.as_deref());
            if pair == (None, None) || !seen.insert(pair) {
                continue;
            }
            let mut om4 = seg("OM4").with_field(1, seen.len().to_string());
            if let Some(c) = pair.1 {
                om4 = om4.with_field(3, c);
            }
            if let Some(s) = pair.0 {
                om4 = om4.with_field(6, specimen_cwe(s));
            }
            self.push(om4);
        }
    }

    fn price(&mut self, event: &str, r: PriceRow<'_>) {
        let key = cwe(r.code, r.name, "L");
        self.mfe(event, r.effective, key.clone());
        let flag = if r.active { "A" } else { "I" };
        let mut cdm =
            seg("CDM").with_field(1, key.clone()).with_field(3, r.name).with_field(4, r.name).with_field(8, flag);
        if let Some(c) = r.cpt {
            cdm = cdm.with_field(7, cwe(c, "", "C4"));
        }
        self.push(cdm);
        let mut prc = seg("PRC")
            .with_field(1, key)
            .with_field(5, FieldValue::subcomponents([vec![r.price, "USD".to_owned()], vec!["UP".to_owned()]]))
            .with_field(11, r.effective)
            .with_field(16, flag);
        if let Some(c) = r.client {
            prc = prc.with_field(2, c);
        }
        self.push(prc);
    }

    fn test_price(&mut self, event: &str, t: &Test) {
        let effective = t.effective_from.format("%Y%m%d").to_string();
        let row = PriceRow {
            code: &t.code,
            name: &t.name,
            cpt: t.cpt.as_deref(),
            price: t.price.to_string(),
            active: t.status.is_active() && event != "MDL",
            effective: &effective,
            client: None,
        };
        self.price(event, row);
    }

    fn panel_price(&mut self, event: &str, p: &CustomPanel, ctx: &Ctx<'_>) {
        let effective = ctx.date();
        let row = PriceRow {
            code: &p.code,
            name: &p.name,
            cpt: None,
            price: p.price.to_string(),
            active: event != "MDL",
            effective: &effective,
            client: Some(&p.client_account),
        };
        self.price(event, row);
    }

    fn finish(self) -> Option<MfnMessage> {
        if self.records == 0 {
            return None;
        }
        let builder = self.segments.into_iter().fold(self.builder, MessageBuilder::with_segment);
        Some(MfnMessage { kind: self.kind, control_id: self.control_id, records: self.records, text: builder.build() })
    }
}

/// One record of an MFK: an MFA segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordAck {
    /// MFA-1, the record event acknowledged (`MAD` …).
    pub event: String,
    /// MFA-2, the record's MFE-2.
    pub control_id: String,
    /// MFA-4-1, HL7 table 0181: `S` accepted, `U` not.
    pub status: String,
    /// MFA-5-1, the record's primary key (the code).
    pub key: String,
}

impl RecordAck {
    /// True when MFA-4 is `S` (successful posting).
    pub fn accepted(&self) -> bool {
        self.status.eq_ignore_ascii_case("S")
    }
}

/// An `MFK` acknowledgement of a master-file message.
///
/// # Examples
///
/// ```
/// use compendium::mfn::MfkAck;
/// use hl7_core::Message;
///
/// let msg = Message::parse(b"MSH|^~\\&|EMR|CLINIC|LABBRIDGE|LAB|20240201||MFK^M08^MFK_M01|A1|P|2.5.1\r\
///     MSA|AA|CMP2-M08\rMFI|OMA^^HL70175||UPD\r\
///     MFA|MAD|1|20240201|S|1001^Glucose^L|CWE\rMFA|MUP|2|20240201|U^Unknown code|1002^Iron^L|CWE\r")?;
/// let ack = MfkAck::from_message(&msg)?;
/// assert_eq!(ack.control_id, "CMP2-M08");
/// assert!(!ack.accepted());
/// assert_eq!(ack.records[1].key, "1002");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MfkAck {
    /// MSA-1 (AA, AE, AR, CA …).
    pub code: String,
    /// MSA-2, the MSH-10 of the MFN acknowledged.
    pub control_id: String,
    /// MFI-1-1 (`OMA`, `OMC`, `CDM`), when present.
    pub master_file: Option<String>,
    /// One per MFA segment.
    pub records: Vec<RecordAck>,
}

impl MfkAck {
    /// Reads an MFK.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidMessage`] when the message is not an MFK or has
    /// no MSA-1.
    pub fn from_message(msg: &Message<'_>) -> Result<MfkAck, Error> {
        let bad = |reason: &str| Error::new(ErrorKind::InvalidMessage { expected: "MFK", reason: reason.to_owned() });
        if msg.message_type().0 != "MFK" {
            return Err(bad(&format!("MSH-9 is {:?}", msg.message_type().0)));
        }
        let text = |p: &str| -> String {
            p.parse().ok().and_then(|p| msg.get(&p)).map(|e| e.decoded().into_owned()).unwrap_or_default()
        };
        let code = text("MSA-1");
        if code.is_empty() {
            return Err(bad("no MSA-1"));
        }
        let comp = |s: &hl7_core::Segment<'_>, f: usize| -> String {
            s.field(f).and_then(|f| f.component(1)).map(|c| c.decoded().into_owned()).unwrap_or_default()
        };
        let records = msg
            .segments_named("MFA")
            .map(|s| RecordAck { event: comp(&s, 1), control_id: comp(&s, 2), status: comp(&s, 4), key: comp(&s, 5) })
            .collect();
        let mfi = text("MFI-1-1");
        Ok(MfkAck { code, control_id: text("MSA-2"), master_file: (!mfi.is_empty()).then_some(mfi), records })
    }

    /// True when MSA-1 is AA or CA and every record is accepted.
    pub fn accepted(&self) -> bool {
        matches!(self.code.as_str(), "AA" | "CA") && self.records.iter().all(RecordAck::accepted)
    }
}

/// The MFK an EMR would answer to an MFN: MSA `AA` (or `AE` when a record is
/// refused), one MFA per MFE, `U` for the records whose code is in `refuse`
/// and `S` for the others. For tests and demos of the acknowledgement loop.
///
/// # Errors
///
/// [`ErrorKind::InvalidMessage`] when `mfn` is not an MFN.
pub fn mfk_for(mfn: &Message<'_>, refuse: &[&str], at: &Timestamp) -> Result<String, Error> {
    let (kind, trigger, _) = mfn.message_type();
    if kind != "MFN" {
        return Err(ErrorKind::InvalidMessage { expected: "MFN", reason: format!("MSH-9 is {kind:?}") }.into());
    }
    let f = |s: &hl7_core::Segment<'_>, n: usize| s.field(n).map(|f| FieldValue::from_field(&f)).unwrap_or_default();
    let msh = mfn.msh();
    let mut any_refused = false;
    let mut mfas = Vec::new();
    for mfe in mfn.segments_named("MFE") {
        let key = mfe.field(4).and_then(|f| f.component(1)).map(|c| c.decoded().into_owned()).unwrap_or_default();
        let refused = refuse.contains(&key.as_str());
        any_refused |= refused;
        mfas.push(
            seg("MFA")
                .with_field(1, f(&mfe, 1))
                .with_field(2, f(&mfe, 2))
                .with_field(3, at.to_hl7())
                .with_field(
                    4,
                    if refused { cwe("U", "Unsuccessful posting", "HL70181") } else { cwe("S", "", "HL70181") },
                )
                .with_field(5, f(&mfe, 4))
                .with_field(6, f(&mfe, 5)),
        );
    }
    let mut b = MessageBuilder::new(&format!("MFK^{trigger}^MFK_M01"), "2.5.1")
        .with_msh_field(3, f(&msh, 5))
        .with_msh_field(4, f(&msh, 6))
        .with_msh_field(5, f(&msh, 3))
        .with_msh_field(6, f(&msh, 4))
        .with_msh_field(7, at.to_hl7())
        .with_segment(
            seg("MSA")
                .with_field(1, if any_refused { "AE" } else { "AA" })
                .with_field(2, mfn.control_id().unwrap_or_default().into_owned()),
        );
    if let Some(mfi) = mfn.segment("MFI") {
        b = b.with_segment(SegmentBuilder::from_segment(&mfi));
    }
    for m in mfas {
        b = b.with_segment(m);
    }
    Ok(b.build())
}
