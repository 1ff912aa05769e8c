//! `compendium`: a clinical lab's test compendium — its tests and client
//! custom panels, versioned, compared, mapped to each EMR's codes, exported
//! as CSV, JSON and HL7 v2.5.1 eDOS master-file messages, and orders
//! validated against it.
//!
//! ```
//! use compendium::{mfn, validate, Compendium, Import};
//! use hl7_core::contract::LabOrder;
//!
//! // Import the canonical CSV files: all-or-nothing unless asked to skip bad rows.
//! let tests = "code,name,loinc,cpt,specimen,container,volume,storage,turnaround,price,status,effective_from,replaced_by,aoe\n\
//!              1001,Glucose,2345-7,82947,SER,SST (gold top),1 mL,Refrigerated,1 day,42.00,active,2024-01-01,,FAST:Fasting?:yes_no:Y\n\
//!              1002,Iron,2498-4,83540,SER,SST (gold top),1 mL,Refrigerated,2 days,20.00,active,2024-01-01,,\n";
//! let panels = "code,name,client_account,price,components\nCP1,Iron and sugar,ACCT1,55.00,1001;1002\n";
//! let v1 = Import::from_csv(tests.as_bytes(), Some(panels.as_bytes())).into_catalog(false)?;
//!
//! // Every change makes a new immutable version.
//! let mut c = Compendium::new();
//! c.commit(v1.clone(), "ana", "first import", "20240101090000".parse()?);
//! let (mut t, p) = v1.into_parts();
//! t[0].price = "45.00".parse()?;
//! c.commit(compendium::Catalog::new(t, p)?, "ana", "2024 prices", "20240201090000".parse()?);
//!
//! // A diff lists the changes field by field, and exports as exactly those changes.
//! let d = c.diff(1, 2)?;
//! assert_eq!(d.tests[0].fields[0].field, "price");
//! let msgs = mfn::export_diff(&d, c.latest().unwrap().created_at(), &Default::default());
//! assert!(msgs[0].text.contains("MFI|CDM^^HL70175||UPD|"));
//!
//! // Orders are checked against it.
//! let order: LabOrder = serde_json::from_str(r#"{"client_account": "ACCT2", "tests": [{"code": "CP1"}]}"#)?;
//! let problems = validate(&order, c.latest().unwrap().catalog(), None);
//! assert_eq!(problems[0].to_string(), "tests[0].code: test CP1: panel of client ACCT1, ordered by client ACCT2");
//! assert_eq!(problems[1].to_string(), "tests[0].aoe: test 1001 (in panel CP1): missing required answer to FAST (Fasting?)");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Modules
//!
//! - [`model`]: [`Test`], [`AoeQuestion`], [`CustomPanel`], [`Catalog`]; every
//!   value is checked when it enters, so everything downstream meets a valid catalog.
//! - [`import`] and [`export`]: the canonical CSV files and JSON; bad rows with
//!   line and column, all-or-nothing per version.
//! - [`version`]: [`Compendium`], its immutable [`Version`]s and which EMR
//!   accepted which version.
//! - [`diff`](mod@diff): field-by-field changes, as a table or JSON.
//! - [`mfn`]: `MFN^M08`, `MFN^M10`, `MFN^M04` for a whole catalog (`REP`) or a
//!   diff (`UPD`); MFK acknowledgements read back.
//! - [`emr`] and [`sync`]: per-EMR code maps, and each EMR's update package.
//! - [`validate`](mod@validate): every problem of an order, with its contract path.
//!
//! The crate is pure: no runtime, database or I/O of its own beyond the
//! readers and writers it is handed.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod diff;
pub mod emr;
mod error;
pub mod export;
pub mod import;
pub mod mfn;
pub mod model;
pub mod sync;
pub mod validate;
pub mod version;

pub use diff::{diff, Change, ChangeKind, Diff, FieldChange};
pub use emr::EmrCodeMap;
pub use error::{Error, ErrorKind, Location};
pub use import::{Import, Importer};
pub use model::{specimen_matches, specimen_name, AnswerType, AoeQuestion, Catalog, CustomPanel, Status, Test};
pub use validate::{validate, Problem, ProblemKind};
pub use version::{Acceptance, Compendium, Version};
