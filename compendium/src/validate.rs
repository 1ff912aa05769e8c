//! Order validation: is this order orderable, as the compendium says?
//!
//! Every problem is returned, not the first: an EMR fixes an order in one
//! round trip. Each names the test it is about and where in the order it
//! is, as a path into the contract's JSON (`tests[1].aoe`; indexes count
//! from 0, as in that JSON).
//!
//! A custom panel expands to its components: each component must be
//! orderable, and the AOE questions of every component are asked of the
//! panel's line. The contract carries one specimen per ordered line while a
//! panel may collect several (a urine and a serum test), so a panel line's
//! specimen must be the specimen of at least one component.

use std::fmt;

use hl7_core::contract::{LabOrder, OrderedTest};
use serde::Serialize;

use crate::model::{specimen_matches, AoeQuestion, Catalog, Test};

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// The ordered line has no code.
    MissingCode,
    /// The code is neither a test nor a panel of the compendium.
    UnknownCode,
    /// The test is discontinued.
    Discontinued {
        /// What to order instead.
        #[serde(skip_serializing_if = "Option::is_none")]
        replaced_by: Option<String>,
    },
    /// A custom panel of another client (or ordered without a client account).
    PanelNotOwned {
        /// The client account that owns the panel.
        owner: String,
        /// The client that ordered it.
        #[serde(skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    /// A required AOE question has no answer.
    MissingAoe {
        /// The question's code.
        question_code: String,
        /// The question.
        question: String,
    },
    /// An answer the question does not allow.
    AnswerNotAllowed {
        /// The question's code.
        question_code: String,
        /// The answer given.
        answer: String,
        /// The allowed answers (for a list), or the expected type.
        allowed: Vec<String>,
    },
    /// The specimen sent is not the one the test needs.
    SpecimenMismatch {
        /// The specimen the test needs (for a panel, each component's).
        expected: Vec<String>,
        /// The specimen sent.
        got: String,
    },
}

/// One problem of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What is wrong.
    #[serde(flatten)]
    pub kind: ProblemKind,
    /// The test (or panel) code as ordered; for a problem with a panel's
    /// component, the component's code.
    pub test: String,
    /// The panel, when the problem is with one of its components.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub panel: Option<String>,
    /// Where in the order: `tests[1].code`, `tests[1].aoe`,
    /// `tests[1].aoe[0].answer`, `tests[1].specimen.type` (0-based).
    pub path: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: test {}", self.path, if self.test.is_empty() { "(none)" } else { &self.test })?;
        if let Some(p) = &self.panel {
            write!(f, " (in panel {p})")?;
        }
        match &self.kind {
            ProblemKind::MissingCode => write!(f, ": no test code"),
            ProblemKind::UnknownCode => write!(f, ": unknown test code"),
            ProblemKind::Discontinued { replaced_by: Some(r) } => write!(f, ": discontinued, order {r} instead"),
            ProblemKind::Discontinued { replaced_by: None } => write!(f, ": discontinued"),
            ProblemKind::PanelNotOwned { owner, client: Some(c) } => {
                write!(f, ": panel of client {owner}, ordered by client {c}")
            }
            ProblemKind::PanelNotOwned { owner, client: None } => {
                write!(f, ": panel of client {owner}, ordered without a client account")
            }
            ProblemKind::MissingAoe { question_code, question } => {
                write!(f, ": missing required answer to {question_code} ({question})")
            }
            ProblemKind::AnswerNotAllowed { question_code, answer, allowed } => {
                write!(f, ": answer {answer:?} to {question_code} not allowed (allowed: {})", allowed.join(", "))
            }
            ProblemKind::SpecimenMismatch { expected, got } => {
                write!(f, ": specimen {got:?}, expected {}", expected.join(" or "))
            }
        }
    }
}

/// Every problem of `order` against the catalog `compendium`, for the client
/// account `client` (the order's own `client_account` when `None`).
///
/// # Examples
///
/// ```
/// use compendium::{validate, AnswerType, AoeQuestion, Catalog, ProblemKind, Status, Test};
/// use hl7_core::contract::{LabOrder, OrderedTest};
///
/// let d = "2024-01-01".parse()?;
/// let fasting = AoeQuestion { code: "FAST".into(), question: "Fasting?".into(),
///                             answer_type: AnswerType::YesNo, allowed: vec![], required: true };
/// let catalog = Catalog::new([
///     Test::new("1001", "Glucose", "12.00".parse()?, d).with_aoe(fasting),
///     Test::new("1000", "Old glucose", "12.00".parse()?, d)
///         .with_status(Status::Discontinued { replaced_by: Some("1001".into()) }),
/// ], [])?;
///
/// let order: LabOrder = serde_json::from_str(r#"{"tests": [{"code": "1001"}, {"code": "1000"}]}"#)?;
/// let problems = validate(&order, &catalog, None);
/// assert_eq!(problems[0].path, "tests[0].aoe");
/// assert!(matches!(problems[0].kind, ProblemKind::MissingAoe { .. }));
/// assert_eq!(problems[1].to_string(), "tests[1].code: test 1000: discontinued, order 1001 instead");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn validate(order: &LabOrder, compendium: &Catalog, client: Option<&str>) -> Vec<Problem> {
    let client = client.or(order.client_account.as_deref()).map(str::trim).filter(|c| !c.is_empty());
    let mut out = Vec::new();
    for (i, line) in order.tests.iter().enumerate() {
        check_line(i, line, compendium, client, &mut out);
    }
    out
}

fn check_line(i: usize, line: &OrderedTest, catalog: &Catalog, client: Option<&str>, out: &mut Vec<Problem>) {
    let code = line.code.as_deref().map(str::trim).unwrap_or_default();
    let problem = |kind, test: &str, panel: Option<&str>, path: String| Problem {
        kind,
        test: test.to_owned(),
        panel: panel.map(str::to_owned),
        path,
    };
    if code.is_empty() {
        out.push(problem(ProblemKind::MissingCode, "", None, format!("tests[{i}].code")));
        return;
    }
    // The tests this line orders, and the panel they come from.
    let (tests, panel): (Vec<&Test>, Option<&str>) = if let Some(t) = catalog.test(code) {
        (vec![t], None)
    } else if let Some(p) = catalog.panel(code) {
        if client != Some(p.client_account.as_str()) {
            let kind =
                ProblemKind::PanelNotOwned { owner: p.client_account.clone(), client: client.map(str::to_owned) };
            out.push(problem(kind, code, None, format!("tests[{i}].code")));
        }
        (p.components.iter().filter_map(|c| catalog.test(c)).collect(), Some(code))
    } else {
        out.push(problem(ProblemKind::UnknownCode, code, None, format!("tests[{i}].code")));
        return;
    };
    let mut orderable = Vec::with_capacity(tests.len());
    for t in tests {
        if t.status.is_active() {
            orderable.push(t);
        } else {
            let kind = ProblemKind::Discontinued { replaced_by: t.status.replaced_by().map(str::to_owned) };
            out.push(problem(kind, &t.code, panel, format!("tests[{i}].code")));
        }
    }
    // AOE: each question once per line, however many components ask it.
    let mut asked: Vec<(&AoeQuestion, &str)> = Vec::new();
    for t in &orderable {
        for q in &t.aoe {
            match asked.iter_mut().find(|(a, _)| a.code == q.code) {
                Some(entry) if q.required && !entry.0.required => *entry = (q, &t.code),
                Some(_) => {}
                None => asked.push((q, &t.code)),
            }
        }
    }
    for (q, test) in &asked {
        let answers: Vec<(usize, &str)> = line
            .aoe
            .iter()
            .enumerate()
            .filter(|(_, a)| a.question_code.as_deref().map(str::trim) == Some(q.code.as_str()))
            .filter_map(|(j, a)| a.answer.as_deref().map(|s| (j, s.trim())).filter(|(_, s)| !s.is_empty()))
            .collect();
        if answers.is_empty() {
            if q.required {
                let kind = ProblemKind::MissingAoe { question_code: q.code.clone(), question: q.question.clone() };
                out.push(problem(kind, test, panel, format!("tests[{i}].aoe")));
            }
            continue;
        }
        for (j, a) in answers {
            if !q.accepts(a) {
                let allowed = match q.answer_type {
                    crate::AnswerType::List => q.allowed.clone(),
                    crate::AnswerType::YesNo => vec!["Y".to_owned(), "N".to_owned()],
                    other => vec![format!("a {other}")],
                };
                let kind =
                    ProblemKind::AnswerNotAllowed { question_code: q.code.clone(), answer: a.to_owned(), allowed };
                out.push(problem(kind, test, panel, format!("tests[{i}].aoe[{j}].answer")));
            }
        }
    }
    // Specimen: only when the order says one and the compendium knows it.
    let got = line.specimen.as_ref().and_then(|s| s.kind.as_deref()).map(str::trim).filter(|s| !s.is_empty());
    if let Some(got) = got {
        let expected: Vec<&str> = orderable.iter().filter_map(|t| t.specimen.as_deref()).collect();
        if !expected.is_empty() && !expected.iter().any(|e| specimen_matches(e, got)) {
            let mut list: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
            list.dedup();
            let kind = ProblemKind::SpecimenMismatch { expected: list, got: got.to_owned() };
            out.push(problem(kind, code, None, format!("tests[{i}].specimen.type")));
        }
    }
}
