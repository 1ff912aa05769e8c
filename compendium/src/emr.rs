//! Per-EMR code maps: the code each EMR shows for a lab test or panel.
//!
//! A map lists the codes that differ; a code it does not list is the same
//! in the EMR as in the lab. Both directions are kept (lab → EMR for
//! exports, EMR → lab for orders coming back), so a map that gives one code
//! two meanings in either direction is refused when loaded.

use std::collections::HashMap;
use std::io::Read;

use serde::Deserialize;

use crate::error::{Error, ErrorKind, Location};
use crate::model::{check_code, Catalog};

/// Lab code ↔ EMR code, for tests and panels.
///
/// # Examples
///
/// ```
/// use compendium::EmrCodeMap;
///
/// let map = EmrCodeMap::from_csv("clinic-emr", "lab_code,emr_code\n1001,GLU\nCP1,PNL-1\n".as_bytes())?;
/// assert_eq!(map.to_emr("1001"), "GLU");
/// assert_eq!(map.to_emr("1002"), "1002"); // unmapped codes are the same
/// assert_eq!(map.to_lab("PNL-1"), "CP1");
///
/// let same = EmrCodeMap::from_json("clinic-emr", r#"[{"lab_code": "1001", "emr_code": "GLU"},
///                                                  {"lab_code": "CP1", "emr_code": "PNL-1"}]"#)?;
/// assert_eq!(same, map);
/// # Ok::<(), compendium::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmrCodeMap {
    name: String,
    to_emr: HashMap<String, String>,
    to_lab: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Pair {
    lab_code: String,
    emr_code: String,
}

impl EmrCodeMap {
    /// An empty map (every code the same) for the EMR `name`.
    pub fn new(name: impl Into<String>) -> EmrCodeMap {
        EmrCodeMap { name: name.into(), to_emr: HashMap::new(), to_lab: HashMap::new() }
    }

    /// Adds a pair.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidCode`] for a code that is not a code;
    /// [`ErrorKind::DuplicateMapping`] when either code is mapped already.
    pub fn insert(&mut self, lab_code: &str, emr_code: &str) -> Result<(), Error> {
        let (lab, emr) = (lab_code.trim(), emr_code.trim());
        check_code(lab)?;
        check_code(emr)?;
        if self.to_emr.contains_key(lab) {
            return Err(ErrorKind::DuplicateMapping(lab.to_owned()).into());
        }
        if self.to_lab.contains_key(emr) {
            return Err(ErrorKind::DuplicateMapping(emr.to_owned()).into());
        }
        self.to_emr.insert(lab.to_owned(), emr.to_owned());
        self.to_lab.insert(emr.to_owned(), lab.to_owned());
        Ok(())
    }

    /// Reads a CSV with header `lab_code,emr_code`.
    ///
    /// # Errors
    ///
    /// The first bad line, with its line and column: a bad header, a bad
    /// code, a code mapped twice, invalid CSV.
    pub fn from_csv(name: &str, input: impl Read) -> Result<EmrCodeMap, Error> {
        let at = |line: u64, column: u64, field: Option<&str>| Location {
            source: Some(name.to_owned()),
            line,
            column,
            field: field.map(str::to_owned),
        };
        let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input);
        let mut map = EmrCodeMap::new(name);
        let mut rec = csv::StringRecord::new();
        let mut first = true;
        loop {
            match rdr.read_record(&mut rec) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    return Err(Error::new(ErrorKind::Csv(e.to_string())).at(at(line, 1, None)));
                }
            }
            let line = rec.position().map_or(0, |p| p.line());
            if first {
                first = false;
                let h: Vec<&str> = rec.iter().map(|s| s.trim().trim_start_matches('\u{feff}')).collect();
                for (i, want) in ["lab_code", "emr_code"].iter().enumerate() {
                    match h.get(i) {
                        Some(got) if got == want => {}
                        Some(got) => {
                            return Err(Error::new(ErrorKind::UnknownColumn((*got).to_owned())).at(at(
                                1,
                                i as u64 + 1,
                                None,
                            )))
                        }
                        None => {
                            return Err(Error::new(ErrorKind::MissingColumn((*want).to_owned())).at(at(
                                1,
                                i as u64 + 1,
                                None,
                            )))
                        }
                    }
                }
                if h.len() > 2 {
                    return Err(Error::new(ErrorKind::UnknownColumn(h[2].to_owned())).at(at(1, 3, None)));
                }
                continue;
            }
            if rec.len() != 2 {
                let kind = ErrorKind::FieldCount { found: rec.len(), expected: 2 };
                return Err(Error::new(kind).at(at(line, rec.len().min(2) as u64 + 1, None)));
            }
            if let Err(e) = map.insert(&rec[0], &rec[1]) {
                let col = match e.kind() {
                    ErrorKind::InvalidCode(c) | ErrorKind::DuplicateMapping(c) if c == rec[0].trim() => 1,
                    _ => 2,
                };
                let field = if col == 1 { "lab_code" } else { "emr_code" };
                return Err(e.at(at(line, col, Some(field))));
            }
        }
        Ok(map)
    }

    /// Reads JSON: a list of `{"lab_code": "…", "emr_code": "…"}`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Json`] with line and column for JSON of another shape;
    /// a bad or duplicate code at its entry's line and column.
    pub fn from_json(name: &str, text: &str) -> Result<EmrCodeMap, Error> {
        let json_err = |e: serde_json::Error| {
            let mut msg = e.to_string();
            if let Some(i) = msg.rfind(" at line ") {
                msg.truncate(i);
            }
            Error::new(ErrorKind::Json(msg)).at(Location {
                source: Some(name.to_owned()),
                line: e.line() as u64,
                column: e.column() as u64,
                field: None,
            })
        };
        let raws: Vec<&serde_json::value::RawValue> = serde_json::from_str(text).map_err(json_err)?;
        let mut map = EmrCodeMap::new(name);
        for raw in raws {
            let offset = raw.get().as_ptr() as usize - text.as_ptr() as usize;
            let (line, column) = crate::import::line_col(text, offset);
            let loc = Location { source: Some(name.to_owned()), line, column, field: None };
            let pair: Pair = serde_json::from_str(raw.get())
                .map_err(|e| Error::new(ErrorKind::Json(e.to_string())).at(loc.clone()))?;
            map.insert(&pair.lab_code, &pair.emr_code).map_err(|e| e.at(loc))?;
        }
        Ok(map)
    }

    /// The EMR's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.to_emr.len()
    }

    /// Whether the map has no pairs.
    pub fn is_empty(&self) -> bool {
        self.to_emr.is_empty()
    }

    /// The EMR's code for a lab code (the lab code itself when unmapped).
    pub fn to_emr<'a>(&'a self, lab_code: &'a str) -> &'a str {
        self.to_emr.get(lab_code).map_or(lab_code, String::as_str)
    }

    /// The lab's code for an EMR code (the EMR code itself when unmapped).
    pub fn to_lab<'a>(&'a self, emr_code: &'a str) -> &'a str {
        self.to_lab.get(emr_code).map_or(emr_code, String::as_str)
    }

    /// The catalog in the EMR's codes: test and panel codes, components and
    /// replacements mapped.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Rejected`] when the map makes two codes one (an EMR code
    /// that is also an unmapped lab code).
    ///
    /// # Examples
    ///
    /// ```
    /// use compendium::{Catalog, CustomPanel, EmrCodeMap, Status, Test};
    ///
    /// let d = "2024-01-01".parse()?;
    /// let lab = Catalog::new(
    ///     [Test::new("1001", "Glucose", "12.50".parse()?, d),
    ///      Test::new("1000", "Old glucose", "12.00".parse()?, d)
    ///          .with_status(Status::Discontinued { replaced_by: Some("1001".into()) })],
    ///     [CustomPanel::new("CP1", "Sugar", "ACCT1", ["1001"], "10.00".parse()?)],
    /// )?;
    /// let mut map = EmrCodeMap::new("clinic-emr");
    /// map.insert("1001", "GLU")?;
    /// let emr = map.apply(&lab)?;
    /// assert_eq!(emr.test("1000").unwrap().status.replaced_by(), Some("GLU"));
    /// assert_eq!(emr.panel("CP1").unwrap().components, ["GLU"]);
    ///
    /// map.insert("CP1", "1000")?; // the EMR's code for CP1 is a lab test code
    /// assert!(map.apply(&lab).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply(&self, catalog: &Catalog) -> Result<Catalog, Error> {
        catalog.map_codes(|c| self.to_emr(c).to_owned())
    }
}
