//! Versions: the compendium's history.
//!
//! Every change makes a new [`Version`]: a number (1, 2, 3 …), a timestamp,
//! an author, a note, and the whole [`Catalog`] as it then was. A version
//! never changes once made (its fields are read-only and
//! [`Compendium::commit`] only appends), so any two versions can be
//! compared and any version exported again, byte for byte. Whole snapshots
//! rather than deltas: a catalog of 10,000 tests is a few megabytes, and a
//! snapshot is what an EMR asks for when it starts over.
//!
//! The compendium also records which EMR accepted which version, from the
//! MFK acknowledgements of the MFN messages sent to it ([`crate::mfn`]).

use std::collections::BTreeSet;

use hl7_core::datetime::Timestamp;
use serde::{Deserialize, Serialize};

use crate::diff::{diff, Diff};
use crate::error::{Error, ErrorKind};
use crate::mfn::MfkAck;
use crate::model::Catalog;

/// One immutable version of the compendium.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Version {
    number: u32,
    created_at: Timestamp,
    author: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    note: String,
    #[serde(flatten)]
    catalog: Catalog,
}

impl Version {
    /// The number, from 1.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// When it was made.
    pub fn created_at(&self) -> &Timestamp {
        &self.created_at
    }

    /// Who made it.
    pub fn author(&self) -> &str {
        &self.author
    }

    /// Why.
    pub fn note(&self) -> &str {
        &self.note
    }

    /// Its tests and panels.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct VersionIn {
            number: u32,
            created_at: Timestamp,
            author: String,
            #[serde(default)]
            note: String,
            #[serde(default)]
            tests: Vec<crate::model::Test>,
            #[serde(default)]
            panels: Vec<crate::model::CustomPanel>,
        }
        let v = VersionIn::deserialize(d)?;
        let catalog = Catalog::new(v.tests, v.panels).map_err(|e| {
            let rows: Vec<String> = e.rows().iter().map(ToString::to_string).collect();
            serde::de::Error::custom(rows.join("; "))
        })?;
        Ok(Version { number: v.number, created_at: v.created_at, author: v.author, note: v.note, catalog })
    }
}

/// What an EMR answered to the master-file messages of a version: one per
/// MFK read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acceptance {
    /// The EMR (connection) name.
    pub emr: String,
    /// The version the messages carried.
    pub version: u32,
    /// The message acknowledged (MSA-2, the MFN's MSH-10).
    pub control_id: String,
    /// MSA-1.
    pub ack_code: String,
    /// True when MSA-1 is AA or CA and every record was accepted.
    pub accepted: bool,
    /// The primary keys (MFA-5) of the records the EMR did not accept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<String>,
    /// When the acknowledgement was recorded.
    pub recorded_at: Timestamp,
}

/// The lab's compendium: its versions, and what each EMR accepted.
///
/// # Examples
///
/// ```
/// use compendium::{Catalog, Compendium, Test};
///
/// let d = "2024-01-01".parse()?;
/// let v1 = Catalog::new([Test::new("1001", "Glucose", "42.00".parse()?, d)], [])?;
/// let v2 = Catalog::new([Test::new("1001", "Glucose", "45.00".parse()?, d)], [])?;
///
/// let mut c = Compendium::new();
/// c.commit(v1, "ana", "first import", "20240101090000".parse()?);
/// c.commit(v2, "ana", "2024 prices", "20240201090000".parse()?);
/// assert_eq!(c.latest().unwrap().number(), 2);
///
/// let d = c.diff(1, 2)?;
/// assert_eq!(d.to_table().lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>(),
///            ["changed", "test", "1001", "price", "42.00", "45.00"]);
///
/// // the file form
/// let again = Compendium::from_json(&c.to_json())?;
/// assert_eq!(again, c);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Compendium {
    versions: Vec<Version>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    acceptances: Vec<Acceptance>,
}

impl Compendium {
    /// An empty compendium, without versions.
    pub fn new() -> Compendium {
        Compendium::default()
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// Version `number` (1-based).
    pub fn version(&self, number: u32) -> Option<&Version> {
        number.checked_sub(1).and_then(|i| self.versions.get(i as usize))
    }

    /// The newest version.
    pub fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }

    /// Makes a new version holding `catalog`, numbered after the latest.
    pub fn commit(
        &mut self,
        catalog: Catalog,
        author: impl Into<String>,
        note: impl Into<String>,
        created_at: Timestamp,
    ) -> &Version {
        let number = self.versions.len() as u32 + 1;
        self.versions.push(Version { number, created_at, author: author.into(), note: note.into(), catalog });
        &self.versions[self.versions.len() - 1]
    }

    /// The changes from version `from` to version `to`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::UnknownVersion`] when either does not exist.
    pub fn diff(&self, from: u32, to: u32) -> Result<Diff<'_>, Error> {
        let a = self.version(from).ok_or(ErrorKind::UnknownVersion(from))?;
        let b = self.version(to).ok_or(ErrorKind::UnknownVersion(to))?;
        Ok(diff(a.catalog(), b.catalog()).with_versions(from, to))
    }

    /// Records an EMR's acknowledgement of the MFN messages of a version.
    /// The version is `version` when given, else the one the acknowledged
    /// message's control ID names (see [`crate::mfn::control_id`]).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::UnknownVersion`] when the version does not exist or
    /// cannot be told; [`ErrorKind::InvalidMessage`] when neither is given.
    ///
    /// # Examples
    ///
    /// ```
    /// use compendium::mfn::{self, MfkAck};
    /// use compendium::{Catalog, Compendium, Test};
    /// use hl7_core::Message;
    ///
    /// let mut c = Compendium::new();
    /// let cat = Catalog::new([Test::new("1001", "Glucose", "12.50".parse()?, "2024-01-01".parse()?)], [])?;
    /// let v = c.commit(cat, "ana", "", "20240101".parse()?);
    /// let m08 = mfn::export_version(v, &Default::default()).remove(0);
    ///
    /// // the EMR answers with an MFK accepting every record
    /// let mfk = mfn::mfk_for(&Message::parse(m08.text.as_bytes())?, &[], &"20240102".parse()?)?;
    /// let ack = MfkAck::from_message(&Message::parse(mfk.as_bytes())?)?;
    /// c.record_ack("clinic-emr", &ack, None, "20240102".parse()?)?;
    /// assert_eq!(c.accepted_version("clinic-emr"), Some(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn record_ack(
        &mut self,
        emr: &str,
        ack: &MfkAck,
        version: Option<u32>,
        recorded_at: Timestamp,
    ) -> Result<&Acceptance, Error> {
        let number = match version.or_else(|| crate::mfn::version_of_control_id(&ack.control_id)) {
            Some(n) => n,
            None => {
                return Err(Error::new(ErrorKind::InvalidMessage {
                    expected: "MFK",
                    reason: format!("MSA-2 {:?} names no compendium version", ack.control_id),
                }))
            }
        };
        if self.version(number).is_none() {
            return Err(ErrorKind::UnknownVersion(number).into());
        }
        self.acceptances.push(Acceptance {
            emr: emr.to_owned(),
            version: number,
            control_id: ack.control_id.clone(),
            ack_code: ack.code.clone(),
            accepted: ack.accepted(),
            rejected: ack.records.iter().filter(|r| !r.accepted()).map(|r| r.key.clone()).collect(),
            recorded_at,
        });
        Ok(&self.acceptances[self.acceptances.len() - 1])
    }

    /// Every acknowledgement recorded, in the order recorded.
    pub fn acceptances(&self) -> &[Acceptance] {
        &self.acceptances
    }

    /// The newest version `emr` accepted: one with at least one accepting
    /// acknowledgement from it and no rejecting one.
    pub fn accepted_version(&self, emr: &str) -> Option<u32> {
        let mine = || self.acceptances.iter().filter(|a| a.emr == emr);
        let rejected: BTreeSet<u32> = mine().filter(|a| !a.accepted).map(|a| a.version).collect();
        mine().filter(|a| a.accepted && !rejected.contains(&a.version)).map(|a| a.version).max()
    }

    /// The compendium as JSON (its file form, pretty-printed).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A compendium from its file form.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Json`] with the line and column of the first problem
    /// (a catalog that does not pass the import checks included);
    /// [`ErrorKind::VersionOrder`] when versions are not numbered 1, 2, 3 ….
    pub fn from_json(text: &str) -> Result<Compendium, Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            versions: Vec<Version>,
            #[serde(default)]
            acceptances: Vec<Acceptance>,
        }
        let f: File = serde_json::from_str(text).map_err(|e| {
            let mut msg = e.to_string();
            if let Some(i) = msg.rfind(" at line ") {
                msg.truncate(i);
            }
            Error::new(ErrorKind::Json(msg)).at(crate::error::Location {
                source: None,
                line: e.line() as u64,
                column: e.column() as u64,
                field: None,
            })
        })?;
        for (i, v) in f.versions.iter().enumerate() {
            let expected = i as u32 + 1;
            if v.number != expected {
                return Err(ErrorKind::VersionOrder { found: v.number, expected }.into());
            }
        }
        Ok(Compendium { versions: f.versions, acceptances: f.acceptances })
    }
}
