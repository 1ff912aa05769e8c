//! Export as the canonical CSV files and as JSON: what the import reads,
//! so that importing an export gives back the same catalog (a property test
//! proves it).

use std::io::Write;

use crate::error::Error;
use crate::import::{PANEL_COLUMNS, TEST_COLUMNS};
use crate::model::{format_aoe_text, Catalog};

/// Writes the tests CSV (header and one row per test, in code order).
///
/// # Errors
///
/// [`crate::ErrorKind::Io`] when writing fails.
///
/// # Examples
///
/// ```
/// use compendium::{export, Catalog, Test};
///
/// let c = Catalog::new([Test::new("1001", "Glucose, fasting", "12.50".parse()?, "2024-01-01".parse()?)], [])?;
/// let mut out = Vec::new();
/// export::tests_csv(&c, &mut out)?;
/// assert_eq!(String::from_utf8(out)?.lines().nth(1), Some(r#"1001,"Glucose, fasting",,,,,,,,12.50,active,2024-01-01,,"#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn tests_csv(catalog: &Catalog, out: impl Write) -> Result<(), Error> {
    let mut w = csv::Writer::from_writer(out);
    let io = |e: csv::Error| Error::from(std::io::Error::other(e.to_string()));
    w.write_record(TEST_COLUMNS).map_err(io)?;
    for t in catalog.tests() {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        w.write_record([
            t.code.clone(),
            t.name.clone(),
            o(&t.loinc),
            o(&t.cpt),
            o(&t.specimen),
            o(&t.container),
            o(&t.volume),
            o(&t.storage),
            o(&t.turnaround),
            t.price.to_string(),
            t.status.as_str().to_owned(),
            t.effective_from.format("%Y-%m-%d").to_string(),
            t.status.replaced_by().unwrap_or_default().to_owned(),
            format_aoe_text(&t.aoe),
        ])
        .map_err(io)?;
    }
    w.flush()?;
    Ok(())
}

/// Writes the panels CSV (header and one row per panel, in code order).
///
/// # Errors
///
/// [`crate::ErrorKind::Io`] when writing fails.
///
/// # Examples
///
/// ```
/// use compendium::{export, Catalog, CustomPanel, Test};
///
/// let d = "2024-01-01".parse()?;
/// let c = Catalog::new(
///     [Test::new("1001", "Glucose", "12.50".parse()?, d), Test::new("1002", "Iron", "20.00".parse()?, d)],
///     [CustomPanel::new("CP1", "Iron and sugar", "ACCT1", ["1001", "1002"], "30.00".parse()?)],
/// )?;
/// let mut out = Vec::new();
/// export::panels_csv(&c, &mut out)?;
/// assert_eq!(String::from_utf8(out)?, "code,name,client_account,price,components\nCP1,Iron and sugar,ACCT1,30.00,1001;1002\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn panels_csv(catalog: &Catalog, out: impl Write) -> Result<(), Error> {
    let mut w = csv::Writer::from_writer(out);
    let io = |e: csv::Error| Error::from(std::io::Error::other(e.to_string()));
    w.write_record(PANEL_COLUMNS).map_err(io)?;
    for p in catalog.panels() {
        w.write_record([
            p.code.clone(),
            p.name.clone(),
            p.client_account.clone(),
            p.price.to_string(),
            p.components.join(";"),
        ])
        .map_err(io)?;
    }
    w.flush()?;
    Ok(())
}

/// The catalog as JSON, `{"tests": [...], "panels": [...]}`, pretty-printed.
///
/// # Examples
///
/// ```
/// use compendium::{export, Catalog, Import, Test};
///
/// let c = Catalog::new([Test::new("1001", "Glucose", "12.50".parse()?, "2024-01-01".parse()?)], [])?;
/// let json = export::json(&c);
/// assert!(json.contains(r#""price": "12.50""#));
/// assert_eq!(Import::from_json(&json).into_catalog(false)?, c);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn json(catalog: &Catalog) -> String {
    serde_json::to_string_pretty(catalog).unwrap_or_default()
}
