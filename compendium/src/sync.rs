//! Compendium sync: each connected EMR's update package, in its codes,
//! with only its changes.
//!
//! An EMR sees the catalog through its [`Connection`]: its code map, and
//! only the custom panels of the client accounts it serves. A package is
//! the diff of the two versions *as that EMR sees them*, so a price change
//! of another client's panel is not in it, and every code is the EMR's.
//! [`pending`] goes one step further and starts from the version each EMR
//! last accepted (its MFK acknowledgements), sending the whole catalog to
//! an EMR that has accepted none.

use serde::Serialize;

use crate::diff::diff;
use crate::emr::EmrCodeMap;
use crate::error::{Error, ErrorKind};
use crate::mfn::{export_catalog, export_diff, MfnMessage, MfnOptions};
use crate::model::Catalog;
use crate::version::Compendium;

/// A connected EMR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The EMR's name (MSH-5 of its messages, and its name in acknowledgements).
    pub name: String,
    /// Its codes, when they differ from the lab's.
    pub map: Option<EmrCodeMap>,
    /// The client accounts it serves: it gets only their custom panels
    /// (`None`: every panel).
    pub clients: Option<Vec<String>>,
}

impl Connection {
    /// A connection with the lab's codes and every panel.
    pub fn new(name: impl Into<String>) -> Connection {
        Connection { name: name.into(), map: None, clients: None }
    }

    /// With a code map.
    pub fn with_map(mut self, map: EmrCodeMap) -> Connection {
        self.map = Some(map);
        self
    }

    /// With the client accounts it serves.
    pub fn with_clients<S: Into<String>>(mut self, clients: impl IntoIterator<Item = S>) -> Connection {
        self.clients = Some(clients.into_iter().map(Into::into).collect());
        self
    }

    /// The catalog as this EMR sees it: its clients' panels, its codes.
    ///
    /// # Errors
    ///
    /// As [`EmrCodeMap::apply`].
    pub fn view(&self, catalog: &Catalog) -> Result<Catalog, Error> {
        let mine = match &self.clients {
            Some(clients) => catalog.filter_panels(|p| clients.contains(&p.client_account)),
            None => catalog.clone(),
        };
        match &self.map {
            Some(m) => m.apply(&mine),
            None => Ok(mine),
        }
    }
}

/// One EMR's update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdatePackage {
    /// The EMR.
    pub emr: String,
    /// The version it has (`None`: none, the package is the whole catalog).
    pub from: Option<u32>,
    /// The version the package brings it to.
    pub to: u32,
    /// The diff's one-line summary, as the EMR sees it.
    pub summary: String,
    /// The MFN messages to send (none when nothing changed for this EMR).
    pub messages: Vec<MfnMessage>,
}

/// The update package of each connection from version `from` to `to`.
///
/// # Errors
///
/// [`ErrorKind::UnknownVersion`]; an error of a connection's code map.
///
/// # Examples
///
/// ```
/// use compendium::sync::{sync, Connection};
/// use compendium::{Catalog, Compendium, CustomPanel, EmrCodeMap, Test};
///
/// let d = "2024-01-01".parse()?;
/// let t = Test::new("1001", "Glucose", "12.00".parse()?, d);
/// let p = |price: &str| CustomPanel::new("CP1", "Sugar", "ACCT1", ["1001"], price.parse().unwrap());
/// let mut c = Compendium::new();
/// c.commit(Catalog::new([t.clone()], [p("10.00")])?, "ana", "", "20240101".parse()?);
/// c.commit(Catalog::new([t], [p("11.00")])?, "ana", "", "20240201".parse()?);
///
/// let mut map = EmrCodeMap::new("north");
/// map.insert("CP1", "N-SUGAR")?;
/// let north = Connection::new("north").with_map(map).with_clients(["ACCT1"]);
/// let south = Connection::new("south").with_clients(["ACCT2"]);
/// let packages = sync(&c, 1, 2, &[north, south], &Default::default())?;
/// assert_eq!(packages[0].messages.len(), 1); // the M04 with the new panel price
/// assert!(packages[0].messages[0].text.contains("N-SUGAR"));
/// assert!(packages[1].messages.is_empty()); // not south's panel
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn sync(
    compendium: &Compendium,
    from: u32,
    to: u32,
    connections: &[Connection],
    opts: &MfnOptions,
) -> Result<Vec<UpdatePackage>, Error> {
    connections.iter().map(|c| package(compendium, Some(from), to, c, opts)).collect()
}

/// The package each connection needs to reach the latest version, from the
/// version it last accepted ([`Compendium::accepted_version`]), or the
/// whole catalog when it accepted none.
///
/// # Errors
///
/// [`ErrorKind::UnknownVersion`] when the compendium has no version; an
/// error of a connection's code map.
pub fn pending(
    compendium: &Compendium,
    connections: &[Connection],
    opts: &MfnOptions,
) -> Result<Vec<UpdatePackage>, Error> {
    let latest = compendium.latest().ok_or(ErrorKind::UnknownVersion(1))?.number();
    connections.iter().map(|c| package(compendium, compendium.accepted_version(&c.name), latest, c, opts)).collect()
}

fn package(
    compendium: &Compendium,
    from: Option<u32>,
    to: u32,
    conn: &Connection,
    opts: &MfnOptions,
) -> Result<UpdatePackage, Error> {
    let new_v = compendium.version(to).ok_or(ErrorKind::UnknownVersion(to))?;
    let new = conn.view(new_v.catalog())?;
    let opts = MfnOptions { receiving_application: Some(conn.name.clone()), ..opts.clone() };
    let (summary, messages) = match from {
        None => (
            format!("whole catalog: {} tests, {} panels", new.tests().len(), new.panels().len()),
            export_catalog(&new, to, new_v.created_at(), &opts),
        ),
        Some(f) => {
            let old_v = compendium.version(f).ok_or(ErrorKind::UnknownVersion(f))?;
            let old = conn.view(old_v.catalog())?;
            let d = diff(&old, &new).with_versions(f, to);
            (d.summary(), export_diff(&d, new_v.created_at(), &opts))
        }
    };
    Ok(UpdatePackage { emr: conn.name.clone(), from, to, summary, messages })
}
