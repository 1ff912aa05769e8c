//! Import from the canonical CSV files and from JSON.
//!
//! An import reads every row, keeps the good ones and reports every bad one
//! with its line and column; then the caller decides. By default an import
//! is all-or-nothing ([`Import::into_catalog`] with `skip_bad_rows` false):
//! one bad row and nothing is imported, so a version is never half a file.
//! Asked to skip bad rows, it keeps the good rows, and a row that names a
//! skipped one (a panel of a skipped test, a replacement that was skipped)
//! is skipped in turn and reported too. A bad header, invalid JSON or an I/O
//! error is never skipped.
//!
//! # The CSV files
//!
//! Tests: header `code,name,loinc,cpt,specimen,container,volume,storage,
//! turnaround,price,status,effective_from,replaced_by,aoe` (any order, every
//! column present). `price` is a decimal (`42.00`), `status` `active` or
//! `discontinued`, `effective_from` `YYYY-MM-DD`, `replaced_by` the
//! replacement of a discontinued test. `aoe` holds `code:question:type:required`
//! items separated by `;`, where `type` is `text`, `number`, `date`,
//! `yes_no` or `list=A|B|C` (the allowed answers), `required` is `Y` or `N`,
//! and a backslash escapes `\ ; : | =` inside a value.
//!
//! Panels: header `code,name,client_account,price,components`, components
//! separated by `;`.
//!
//! # The JSON form
//!
//! `{"tests": [...], "panels": [...]}`, each test an object with the CSV
//! columns as keys (prices as strings, `aoe` a list of `{"code", "question",
//! "type", "allowed", "required"}`), each panel with `components` a list.
//! It is what [`Catalog`] serializes to.

use std::io::Read;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, ErrorKind, Location};
use crate::model::{
    assemble, Catalog, CustomPanel, RawAoe, RawComponents, RawPanel, RawPrice, RawTest, Row, RowAt, Test,
};

/// The columns of the tests CSV, in the canonical order.
pub const TEST_COLUMNS: [&str; 14] = [
    "code",
    "name",
    "loinc",
    "cpt",
    "specimen",
    "container",
    "volume",
    "storage",
    "turnaround",
    "price",
    "status",
    "effective_from",
    "replaced_by",
    "aoe",
];

/// The columns of the panels CSV, in the canonical order.
pub const PANEL_COLUMNS: [&str; 5] = ["code", "name", "client_account", "price", "components"];

/// Reads tests and panels from any number of CSV and JSON inputs into one
/// [`Import`].
///
/// # Examples
///
/// ```
/// use compendium::Importer;
///
/// let tests = "code,name,loinc,cpt,specimen,container,volume,storage,turnaround,price,status,effective_from,replaced_by,aoe\n\
///              1001,Glucose,2345-7,82947,SER,SST,1 mL,Refrigerated,1 day,12.50,active,2024-01-01,,FAST:Fasting?:yes_no:Y\n\
///              1002,Bad price,,,,,,,,4x,active,2024-01-01,,\n";
/// let panels = "code,name,client_account,price,components\nCP1,Sugar,ACCT1,10.00,1001\n";
/// let import = Importer::new()
///     .tests_csv("tests.csv", tests.as_bytes())
///     .panels_csv("panels.csv", panels.as_bytes())
///     .finish();
/// assert_eq!(import.errors()[0].to_string(), r#"tests.csv: line 3, column 10 (price): invalid price "4x""#);
/// assert_eq!(import.catalog().tests().count(), 1); // the good row is kept
///
/// // all-or-nothing unless asked to skip bad rows
/// assert!(import.clone().into_catalog(false).is_err());
/// assert_eq!(import.into_catalog(true)?.panel("CP1").unwrap().components, ["1001"]);
/// # Ok::<(), compendium::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct Importer {
    sources: Vec<String>,
    tests: Vec<Row<Test>>,
    panels: Vec<Row<CustomPanel>>,
    errors: Vec<Error>,
}

impl Importer {
    /// An importer with nothing read yet.
    pub fn new() -> Importer {
        Importer::default()
    }

    /// Reads a tests CSV; `source` names it in errors.
    pub fn tests_csv(&mut self, source: &str, input: impl Read) -> &mut Self {
        self.sources.push(source.to_owned());
        read_csv(source, input, &TEST_COLUMNS, &mut self.errors, |at, get| {
            let raw = RawTest {
                code: get("code"),
                name: get("name"),
                loinc: get("loinc"),
                cpt: get("cpt"),
                specimen: get("specimen"),
                container: get("container"),
                volume: get("volume"),
                storage: get("storage"),
                turnaround: get("turnaround"),
                price: get("price").map(RawPrice::Text),
                status: get("status"),
                effective_from: get("effective_from"),
                replaced_by: get("replaced_by"),
                aoe: RawAoe::Text(get("aoe").unwrap_or_default()),
            };
            match raw.check() {
                Ok(t) => Ok(Row { item: ItemRow::Test(t), at: Some(at) }),
                Err(es) => Err(es),
            }
        })
        .into_iter()
        .for_each(|r| self.push(r));
        self
    }

    /// Reads a panels CSV; `source` names it in errors.
    pub fn panels_csv(&mut self, source: &str, input: impl Read) -> &mut Self {
        self.sources.push(source.to_owned());
        read_csv(source, input, &PANEL_COLUMNS, &mut self.errors, |at, get| {
            let raw = RawPanel {
                code: get("code"),
                name: get("name"),
                client_account: get("client_account"),
                price: get("price").map(RawPrice::Text),
                components: RawComponents::Text(get("components").unwrap_or_default()),
            };
            match raw.check() {
                Ok(p) => Ok(Row { item: ItemRow::Panel(p), at: Some(at) }),
                Err(es) => Err(es),
            }
        })
        .into_iter()
        .for_each(|r| self.push(r));
        self
    }

    /// Reads the JSON form `{"tests": [...], "panels": [...]}`; `source`
    /// names it in errors. Each bad test or panel is reported at its line
    /// and column; a document that is not JSON of that shape is one error.
    pub fn json(&mut self, source: &str, text: &str) -> &mut Self {
        self.sources.push(source.to_owned());
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc<'a> {
            #[serde(borrow, default)]
            tests: Vec<&'a RawValue>,
            #[serde(borrow, default)]
            panels: Vec<&'a RawValue>,
        }
        let doc: Doc<'_> = match serde_json::from_str(text) {
            Ok(d) => d,
            Err(e) => {
                self.errors.push(json_error(source, &e, 1, 1, ErrorKind::Json));
                return self;
            }
        };
        for (raw, is_test) in doc.tests.iter().map(|r| (r, true)).chain(doc.panels.iter().map(|r| (r, false))) {
            let offset = raw.get().as_ptr() as usize - text.as_ptr() as usize;
            let (line, column) = line_col(text, offset);
            let at = RowAt { source: Some(source.to_owned()), line, column, columns: None };
            let checked = if is_test {
                serde_json::from_str::<RawTest>(raw.get())
                    .map(|r| r.check().map(|t| Row { item: ItemRow::Test(t), at: Some(at.clone()) }))
            } else {
                serde_json::from_str::<RawPanel>(raw.get())
                    .map(|r| r.check().map(|p| Row { item: ItemRow::Panel(p), at: Some(at.clone()) }))
            };
            match checked {
                Err(e) => self.errors.push(json_error(source, &e, line, column, ErrorKind::InvalidRecord)),
                Ok(Err(es)) => self.errors.extend(es.into_iter().map(|(f, k)| Error::new(k).at(at.loc(f)))),
                Ok(Ok(row)) => self.push(row),
            }
        }
        self
    }

    fn push(&mut self, row: Row<ItemRow>) {
        match row.item {
            ItemRow::Test(t) => self.tests.push(Row { item: t, at: row.at }),
            ItemRow::Panel(p) => self.panels.push(Row { item: p, at: row.at }),
        }
    }

    /// The checks across rows (duplicate codes, unknown replacements and
    /// components, AOE questions defined twice differently), then the
    /// result, errors in input order (by source, line, column). The
    /// importer is empty again afterwards.
    pub fn finish(&mut self) -> Import {
        let mut errors = std::mem::take(&mut self.errors);
        let catalog = assemble(std::mem::take(&mut self.tests), std::mem::take(&mut self.panels), &mut errors);
        let sources = std::mem::take(&mut self.sources);
        errors.sort_by_key(|e| match e.location() {
            Some(l) => {
                let rank = sources.iter().position(|s| Some(s) == l.source.as_ref()).unwrap_or(usize::MAX);
                (rank, l.line, l.column)
            }
            None => (usize::MAX, 0, 0),
        });
        Import { catalog, errors }
    }
}

enum ItemRow {
    Test(Test),
    Panel(CustomPanel),
}

/// What an import read: the catalog of the good rows and an error for every
/// bad one.
#[derive(Debug, Clone)]
pub struct Import {
    catalog: Catalog,
    errors: Vec<Error>,
}

impl Import {
    /// Reads a tests CSV and, optionally, a panels CSV (named `tests` and
    /// `panels` in errors).
    ///
    /// # Examples
    ///
    /// ```
    /// let tests = std::fs::read("../testdata/compendium/tests_v1.csv")?;
    /// let panels = std::fs::read("../testdata/compendium/panels_v1.csv")?;
    /// let import = compendium::Import::from_csv(&tests[..], Some(&panels[..]));
    /// assert!(import.errors().is_empty());
    /// assert!(import.catalog().tests().count() > 300);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_csv(tests: impl Read, panels: Option<impl Read>) -> Import {
        let mut i = Importer::new();
        i.tests_csv("tests", tests);
        if let Some(p) = panels {
            i.panels_csv("panels", p);
        }
        i.finish()
    }

    /// Reads the JSON form (named `json` in errors).
    ///
    /// # Examples
    ///
    /// ```
    /// let import = compendium::Import::from_json(r#"{"tests": [
    ///     {"code": "1001", "name": "Glucose", "price": "12.50", "effective_from": "2024-01-01"},
    ///     {"code": "1002", "name": "Float price", "price": 12.5, "effective_from": "2024-01-01"}
    /// ]}"#);
    /// assert_eq!(import.errors()[0].to_string(), r#"json: line 3, column 5 (price): invalid price "12.5""#);
    /// ```
    pub fn from_json(text: &str) -> Import {
        Importer::new().json("json", text).finish()
    }

    /// The catalog of the good rows.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Every bad row (and every bad header or document), in input order per file.
    pub fn errors(&self) -> &[Error] {
        &self.errors
    }

    /// The catalog, all-or-nothing unless `skip_bad_rows`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Rejected`] listing every error when there is any and
    /// `skip_bad_rows` is false, or when an error is not about a row (a bad
    /// header, invalid JSON, I/O), which is never skipped.
    pub fn into_catalog(self, skip_bad_rows: bool) -> Result<Catalog, Error> {
        if self.errors.is_empty() || (skip_bad_rows && self.errors.iter().all(Error::is_row_error)) {
            Ok(self.catalog)
        } else {
            Err(Error::new(ErrorKind::Rejected(self.errors)))
        }
    }
}

fn json_error(
    source: &str,
    e: &serde_json::Error,
    base_line: u64,
    base_column: u64,
    kind: fn(String) -> ErrorKind,
) -> Error {
    let (l, c) = (e.line() as u64, e.column() as u64);
    let (line, column) = if l <= 1 { (base_line, base_column + c.saturating_sub(1)) } else { (base_line + l - 1, c) };
    let mut msg = e.to_string();
    if let Some(i) = msg.rfind(" at line ") {
        msg.truncate(i);
    }
    Error::new(kind(msg)).at(Location { source: Some(source.to_owned()), line, column, field: None })
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (u64, u64) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() as u64 + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() as u64 + 1)
}

type Getter<'r> = dyn Fn(&str) -> Option<String> + 'r;

/// Reads a CSV with a header naming exactly `columns` (in any order); calls
/// `row` for each record with a getter of trimmed values. Field errors and
/// record errors go to `errors` with their location.
fn read_csv<T>(
    source: &str,
    input: impl Read,
    columns: &[&'static str],
    errors: &mut Vec<Error>,
    row: impl Fn(RowAt, &Getter<'_>) -> Result<Row<T>, crate::model::FieldErrors>,
) -> Vec<Row<T>> {
    let loc = |line: u64, column: u64, field: Option<&str>| Location {
        source: Some(source.to_owned()),
        line,
        column,
        field: field.map(str::to_owned),
    };
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input);
    let mut rec = csv::ByteRecord::new();
    let mut out = Vec::new();
    // the header
    match rdr.read_byte_record(&mut rec) {
        Ok(true) => {}
        Ok(false) => {
            errors.push(Error::new(ErrorKind::MissingColumn(columns[0].to_owned())).at(loc(1, 1, None)));
            return out;
        }
        Err(e) => {
            errors.push(csv_error(source, &e));
            return out;
        }
    }
    let mut header: Vec<String> = Vec::new();
    let mut bad_header = false;
    for (i, f) in rec.iter().enumerate() {
        let f = if i == 0 { f.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(f) } else { f };
        let name = String::from_utf8_lossy(f).trim().to_owned();
        let col = i as u64 + 1;
        if !columns.contains(&name.as_str()) {
            errors.push(Error::new(ErrorKind::UnknownColumn(name.clone())).at(loc(1, col, None)));
            bad_header = true;
        } else if header.contains(&name) {
            errors.push(Error::new(ErrorKind::DuplicateColumn(name.clone())).at(loc(1, col, None)));
            bad_header = true;
        }
        header.push(name);
    }
    for c in columns {
        if !header.iter().any(|h| h == c) {
            let at = loc(1, header.len() as u64 + 1, None);
            errors.push(Error::new(ErrorKind::MissingColumn((*c).to_owned())).at(at));
            bad_header = true;
        }
    }
    if bad_header {
        return out;
    }
    let header = Arc::new(header);
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                errors.push(csv_error(source, &e));
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
        }
        let line = rec.position().map_or(0, |p| p.line());
        if rec.len() != header.len() {
            let kind = ErrorKind::FieldCount { found: rec.len(), expected: header.len() };
            errors.push(Error::new(kind).at(loc(line, rec.len().min(header.len()) as u64 + 1, None)));
            continue;
        }
        let mut values: Vec<Option<String>> = Vec::with_capacity(rec.len());
        let mut utf8_ok = true;
        for (i, f) in rec.iter().enumerate() {
            match std::str::from_utf8(f) {
                Ok(s) => values.push(crate::model::clean(Some(s))),
                Err(_) => {
                    errors.push(Error::new(ErrorKind::InvalidUtf8).at(loc(line, i as u64 + 1, Some(&header[i]))));
                    utf8_ok = false;
                    values.push(None);
                }
            }
        }
        if !utf8_ok {
            continue;
        }
        let at = RowAt { source: Some(source.to_owned()), line, column: 1, columns: Some(header.clone()) };
        let get = |name: &str| header.iter().position(|h| h == name).and_then(|i| values[i].clone());
        match row(at.clone(), &get) {
            Ok(r) => out.push(r),
            Err(es) => errors.extend(es.into_iter().map(|(f, k)| Error::new(k).at(at.loc(f)))),
        }
    }
    out
}

fn csv_error(source: &str, e: &csv::Error) -> Error {
    let line = e.position().map_or(0, |p| p.line());
    let kind = match e.kind() {
        csv::ErrorKind::Io(io) => ErrorKind::Io(io.to_string()),
        _ => ErrorKind::Csv(e.to_string()),
    };
    Error::new(kind).at(Location { source: Some(source.to_owned()), line, column: 1, field: None })
}
