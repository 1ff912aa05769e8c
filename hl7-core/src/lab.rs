//! Typed read views for lab messages: ORM^O01 (v2.3/2.3.1), OML^O21 (v2.5.1,
//! LOI) and ORU^R01 (v2.5.1, LRI).
//!
//! A view groups the flat segments of a [`Message`] the way the standard's
//! message structures do — patient (PID, PD1, NTE, NK1, PV1/PV2, IN1–IN3,
//! GT1, AL1), orders (ORC, OBR, TQ1/TQ2, NTE, DG1), observations (OBX with
//! its NTEs) and specimens (SPM with its OBXs) — so a caller can iterate
//! "each order with its observations" without counting segments.
//!
//! Why a view and not a tree: grouping is where other libraries lose data (a
//! Z-segment or an unexpected segment empties the groups after it). Here the
//! parse stays flat and lossless and grouping never filters: a segment the
//! structure does not expect is kept in the `other` list of the group it
//! appeared in (Z-segments are expected anywhere), and every segment of the
//! message is in exactly one place in the view
//! ([`LabView::segment_count`] proves it).

use std::ops::Deref;

use crate::error::{Error, ErrorKind};
use crate::message::{Message, Segment};
use crate::Path;

/// A patient and what belongs to them.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Patient<'m> {
    /// PID.
    pub pid: Option<Segment<'m>>,
    /// PD1, additional demographics.
    pub pd1: Option<Segment<'m>>,
    /// NTE segments about the patient.
    pub notes: Vec<Segment<'m>>,
    /// NK1 next of kin.
    pub next_of_kin: Vec<Segment<'m>>,
    /// PV1 visit.
    pub pv1: Option<Segment<'m>>,
    /// PV2 visit, additional.
    pub pv2: Option<Segment<'m>>,
    /// IN1 with its IN2 and IN3.
    pub insurances: Vec<Insurance<'m>>,
    /// GT1 guarantor(s).
    pub guarantors: Vec<Segment<'m>>,
    /// AL1 allergies.
    pub allergies: Vec<Segment<'m>>,
    /// Segments kept here that the structure does not name (Z-segments …).
    pub other: Vec<Segment<'m>>,
}

/// One insurance: IN1 and its optional IN2/IN3.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Insurance<'m> {
    /// IN1.
    pub in1: Segment<'m>,
    /// IN2.
    pub in2: Option<Segment<'m>>,
    /// IN3 segments.
    pub in3: Vec<Segment<'m>>,
}

/// One observation: OBX and its notes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Observation<'m> {
    /// OBX.
    pub obx: Segment<'m>,
    /// NTE segments after it.
    pub notes: Vec<Segment<'m>>,
    /// Other segments after it (TCD, Z-segments …).
    pub other: Vec<Segment<'m>>,
}

/// One specimen: SPM, its OBXs and containers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Specimen<'m> {
    /// SPM.
    pub spm: Segment<'m>,
    /// OBX segments about the specimen.
    pub observations: Vec<Segment<'m>>,
    /// SAC containers.
    pub containers: Vec<Segment<'m>>,
    /// Other segments after it.
    pub other: Vec<Segment<'m>>,
}

/// One order: common order (ORC), request (OBR), timing, notes, diagnoses,
/// observations and specimens.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Order<'m> {
    /// ORC.
    pub orc: Option<Segment<'m>>,
    /// OBR.
    pub obr: Option<Segment<'m>>,
    /// TQ1/TQ2 (and, in v2.3, nothing: timing lives in ORC-7/OBR-27).
    pub timing: Vec<Segment<'m>>,
    /// NTE segments about the order (before its first OBX).
    pub notes: Vec<Segment<'m>>,
    /// DG1 diagnoses.
    pub diagnoses: Vec<Segment<'m>>,
    /// OBX groups: results (ORU) or ask-at-order-entry answers (ORM/OML).
    pub observations: Vec<Observation<'m>>,
    /// SPM groups.
    pub specimens: Vec<Specimen<'m>>,
    /// Other segments of the order (CTD, FT1, CTI, BLG, Z-segments …).
    pub other: Vec<Segment<'m>>,
}

/// A patient and their orders (ORU's PATIENT_RESULT; the whole body of ORM
/// and OML).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PatientOrders<'m> {
    /// The patient, if the message names one.
    pub patient: Option<Patient<'m>>,
    /// The orders, in message order.
    pub orders: Vec<Order<'m>>,
}

/// Which lab message a view was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LabMessageKind {
    /// ORM^O01, general order (v2.3/2.3.1 and later).
    OrmO01,
    /// OML^O21, laboratory order (v2.5.1 LOI).
    OmlO21,
    /// ORU^R01, unsolicited observation result (v2.5.1 LRI).
    OruR01,
}

/// The grouped view of a lab message; see the [module docs](self).
///
/// # Examples
///
/// ```
/// use hl7_core::{lab::LabView, Message};
///
/// let msg = Message::parse(b"MSH|^~\\&|LIS|LAB|||20240116||ORU^R01^ORU_R01|M1|P|2.5.1\r\
///     PID|1||PAT1||DOE^JANE\r\
///     OBR|1|ORD1||24331-1^Lipid panel^LN\r\
///     OBX|1|NM|2093-3^Cholesterol^LN||196|mg/dL\r\
///     NTE|1||fasting\r\
///     OBX|2|NM|2085-9^HDL^LN||38|mg/dL\r\
///     ZLB|lab-specific\r\
///     SPM|1|SPC1||119364003^Serum^SCT\r")?;
/// let view = LabView::new(&msg)?;
/// for order in view.orders() {
///     assert_eq!(order.obr.unwrap().field(2).unwrap().raw(), "ORD1");
///     let values: Vec<&str> = order.observations.iter().map(|o| o.obx.field(5).unwrap().raw()).collect();
///     assert_eq!(values, ["196", "38"]);
///     assert_eq!(order.observations[0].notes.len(), 1);
///     assert_eq!(order.observations[1].other[0].name(), "ZLB"); // kept, not dropped
///     assert_eq!(order.specimens.len(), 1);
/// }
/// assert_eq!(view.segment_count(), msg.segment_count());
/// # Ok::<(), hl7_core::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LabView<'m> {
    /// Which message this is.
    pub kind: LabMessageKind,
    /// MSH, SFT, UAC: the header segments.
    pub header: Vec<Segment<'m>>,
    /// Message-level NTE segments (before the patient).
    pub notes: Vec<Segment<'m>>,
    /// Patients with their orders (one for ORM and OML).
    pub patients: Vec<PatientOrders<'m>>,
    /// Segments outside any group (DSC, Z-segments in the header …).
    pub other: Vec<Segment<'m>>,
    /// Segments that are not Z-segments and appeared where the structure
    /// does not allow them (they are also in an `other` list). Each is a
    /// table 0357 code 100, segment sequence error, if the receiver is strict.
    pub misplaced: Vec<Path>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Header,
    Patient,
    Order,
    Observation,
    Specimen,
}

impl<'m> LabView<'m> {
    /// Groups an ORM^O01, OML^O21 or ORU^R01 message.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::UnexpectedMessageType`] (with path `MSH-9`) when MSH-9 is
    /// none of these.
    pub fn new(msg: &'m Message<'_>) -> Result<LabView<'m>, Error> {
        let msg: &'m Message<'m> = msg;
        let kind = match msg.message_type() {
            ("ORM", "O01", _) => LabMessageKind::OrmO01,
            ("OML", "O21", _) => LabMessageKind::OmlO21,
            ("ORU", "R01", _) => LabMessageKind::OruR01,
            (code, trigger, _) => {
                return Err(wrong_type(msg, &format!("{code}^{trigger}"), "ORM^O01, OML^O21 or ORU^R01"))
            }
        };
        Ok(group(msg, kind))
    }

    /// Every order of every patient, in message order.
    pub fn orders(&self) -> impl Iterator<Item = &Order<'m>> + '_ {
        self.patients.iter().flat_map(|p| p.orders.iter())
    }

    /// The first patient.
    pub fn patient(&self) -> Option<&Patient<'m>> {
        self.patients.iter().find_map(|p| p.patient.as_ref())
    }

    /// How many segments the view holds: always the message's segment count,
    /// since grouping never drops one.
    pub fn segment_count(&self) -> usize {
        let opt = |s: &Option<Segment<'m>>| s.is_some() as usize;
        let mut n = self.header.len() + self.notes.len() + self.other.len();
        for p in &self.patients {
            if let Some(pt) = &p.patient {
                n += opt(&pt.pid) + opt(&pt.pd1) + opt(&pt.pv1) + opt(&pt.pv2);
                n += pt.notes.len() + pt.next_of_kin.len() + pt.guarantors.len() + pt.allergies.len() + pt.other.len();
                n += pt.insurances.iter().map(|i| 1 + opt(&i.in2) + i.in3.len()).sum::<usize>();
            }
            for o in &p.orders {
                n += opt(&o.orc) + opt(&o.obr) + o.timing.len() + o.notes.len() + o.diagnoses.len() + o.other.len();
                n += o.observations.iter().map(|x| 1 + x.notes.len() + x.other.len()).sum::<usize>();
                n += o
                    .specimens
                    .iter()
                    .map(|s| 1 + s.observations.len() + s.containers.len() + s.other.len())
                    .sum::<usize>();
            }
        }
        n
    }
}

fn wrong_type(msg: &Message<'_>, found: &str, expected: &str) -> Error {
    let f = msg.msh().field(9);
    Error::new(
        ErrorKind::UnexpectedMessageType { found: found.to_owned(), expected: expected.to_owned() },
        f.map_or(0, |f| f.offset() as usize),
    )
    .with_path(Path::new_unchecked(*b"MSH", 1, Some(9), None, None, None))
}

fn group<'m>(msg: &'m Message<'m>, kind: LabMessageKind) -> LabView<'m> {
    let mut v = LabView {
        kind,
        header: Vec::new(),
        notes: Vec::new(),
        patients: Vec::new(),
        other: Vec::new(),
        misplaced: Vec::new(),
    };
    let mut ctx = Ctx::Header;
    for seg in msg.segments() {
        let name = seg.name();
        let is_z = name.starts_with('Z');
        // Segments that open a group, from anywhere.
        match name {
            "MSH" | "SFT" | "UAC" if ctx == Ctx::Header => {
                v.header.push(seg);
                continue;
            }
            "PID" => {
                // ORU: each PID starts a PATIENT_RESULT; ORM/OML have one patient.
                let reuse = kind != LabMessageKind::OruR01
                    && v.patients.last().is_some_and(|p| p.patient.is_none() && p.orders.is_empty());
                if !reuse {
                    v.patients.push(PatientOrders::default());
                }
                let last = v.patients.len() - 1;
                v.patients[last].patient = Some(Patient { pid: Some(seg), ..Patient::default() });
                ctx = Ctx::Patient;
                continue;
            }
            "ORC" => {
                new_order(&mut v).orc = Some(seg);
                ctx = Ctx::Order;
                continue;
            }
            "OBR" => {
                let attach = ctx == Ctx::Order
                    && current_order(&mut v).is_some_and(|o| o.obr.is_none() && o.observations.is_empty());
                match current_order(&mut v) {
                    Some(o) if attach => o.obr = Some(seg),
                    _ => new_order(&mut v).obr = Some(seg),
                }
                ctx = Ctx::Order;
                continue;
            }
            _ => {}
        }
        let placed = match ctx {
            Ctx::Header => match name {
                "NTE" => {
                    v.notes.push(seg);
                    true
                }
                _ => false,
            },
            Ctx::Patient => {
                let Some(p) = v.patients.last_mut().and_then(|p| p.patient.as_mut()) else {
                    v.other.push(seg);
                    continue;
                };
                match name {
                    "PD1" if p.pd1.is_none() => p.pd1 = Some(seg),
                    "NTE" => p.notes.push(seg),
                    "NK1" => p.next_of_kin.push(seg),
                    "PV1" if p.pv1.is_none() => p.pv1 = Some(seg),
                    "PV2" if p.pv2.is_none() => p.pv2 = Some(seg),
                    "IN1" => p.insurances.push(Insurance { in1: seg, in2: None, in3: Vec::new() }),
                    "IN2" if p.insurances.last().is_some_and(|i| i.in2.is_none()) => {
                        if let Some(i) = p.insurances.last_mut() {
                            i.in2 = Some(seg);
                        }
                    }
                    "IN3" if !p.insurances.is_empty() => {
                        if let Some(i) = p.insurances.last_mut() {
                            i.in3.push(seg);
                        }
                    }
                    "GT1" => p.guarantors.push(seg),
                    "AL1" => p.allergies.push(seg),
                    _ => {
                        p.other.push(seg);
                        if !is_z {
                            v.misplaced.push(seg.path());
                        }
                    }
                }
                continue;
            }
            Ctx::Order | Ctx::Observation | Ctx::Specimen => {
                let Some(o) = current_order(&mut v) else {
                    v.other.push(seg);
                    continue;
                };
                let mut misplaced = false;
                match (name, ctx) {
                    ("OBX", Ctx::Specimen) => {
                        if let Some(s) = o.specimens.last_mut() {
                            s.observations.push(seg);
                        }
                    }
                    ("OBX", _) => {
                        o.observations.push(Observation { obx: seg, notes: Vec::new(), other: Vec::new() });
                        ctx = Ctx::Observation;
                    }
                    ("NTE", Ctx::Observation) => {
                        if let Some(x) = o.observations.last_mut() {
                            x.notes.push(seg);
                        }
                    }
                    ("NTE", Ctx::Order) => o.notes.push(seg),
                    ("TQ1" | "TQ2", Ctx::Order) => o.timing.push(seg),
                    ("DG1", Ctx::Order | Ctx::Observation) => o.diagnoses.push(seg),
                    ("SPM", _) => {
                        o.specimens.push(Specimen {
                            spm: seg,
                            observations: Vec::new(),
                            containers: Vec::new(),
                            other: Vec::new(),
                        });
                        ctx = Ctx::Specimen;
                    }
                    ("SAC", Ctx::Specimen) => {
                        if let Some(s) = o.specimens.last_mut() {
                            s.containers.push(seg);
                        }
                    }
                    (_, Ctx::Observation) if is_z || name == "TCD" => {
                        if let Some(x) = o.observations.last_mut() {
                            x.other.push(seg);
                        }
                    }
                    (_, Ctx::Specimen) if is_z => {
                        if let Some(s) = o.specimens.last_mut() {
                            s.other.push(seg);
                        }
                    }
                    _ => {
                        misplaced = !is_z && !matches!(name, "CTD" | "TCD" | "FT1" | "CTI" | "BLG" | "DSC" | "NTE");
                        o.other.push(seg);
                    }
                }
                if misplaced {
                    v.misplaced.push(seg.path());
                }
                continue;
            }
        };
        if !placed {
            if !is_z && name != "DSC" {
                v.misplaced.push(seg.path());
            }
            v.other.push(seg);
        }
    }
    v
}

fn new_order<'a, 'm>(v: &'a mut LabView<'m>) -> &'a mut Order<'m> {
    if v.patients.is_empty() {
        v.patients.push(PatientOrders::default());
    }
    let p = v.patients.len() - 1;
    v.patients[p].orders.push(Order::default());
    let o = v.patients[p].orders.len() - 1;
    &mut v.patients[p].orders[o]
}

fn current_order<'a, 'm>(v: &'a mut LabView<'m>) -> Option<&'a mut Order<'m>> {
    v.patients.last_mut().and_then(|p| p.orders.last_mut())
}

macro_rules! typed_view {
    ($name:ident, $kind:ident, $code:literal, $trigger:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
        pub struct $name<'m>(LabView<'m>);

        impl<'m> $name<'m> {
            #[doc = concat!("Groups a ", $code, "^", $trigger, " message.")]
            ///
            /// # Errors
            ///
            /// [`ErrorKind::UnexpectedMessageType`] when MSH-9 is another type.
            pub fn new(msg: &'m Message<'_>) -> Result<$name<'m>, Error> {
                let msg: &'m Message<'m> = msg;
                match msg.message_type() {
                    ($code, $trigger, _) => Ok($name(group(msg, LabMessageKind::$kind))),
                    (c, t, _) => Err(wrong_type(msg, &format!("{c}^{t}"), concat!($code, "^", $trigger))),
                }
            }

            /// The grouped view.
            pub fn view(&self) -> &LabView<'m> {
                &self.0
            }
        }

        impl<'m> Deref for $name<'m> {
            type Target = LabView<'m>;
            fn deref(&self) -> &LabView<'m> {
                &self.0
            }
        }
    };
}

typed_view!(
    OrmO01,
    OrmO01,
    "ORM",
    "O01",
    "ORM^O01, general order (v2.3/2.3.1): PID, PV1, IN1…, then ORC/OBR orders with NTE, DG1 and OBX answers.\n\n\
     ```\nlet msg = hl7_core::Message::parse(b\"MSH|^~\\\\&|||||||ORM^O01|1|P|2.3\\rPID|1\\rORC|NW|P1\\rOBR|1|P1||85025^CBC\\rORC|NW|P2\\rOBR|2|P2\")?;\n\
     let orm = hl7_core::lab::OrmO01::new(&msg)?;\nassert_eq!(orm.orders().count(), 2);\n# Ok::<(), hl7_core::Error>(())\n```"
);
typed_view!(
    OmlO21,
    OmlO21,
    "OML",
    "O21",
    "OML^O21, laboratory order (v2.5.1 LOI): the ORM structure with TQ1 timing, SPM specimens and AOE OBXs under the OBR.\n\n\
     ```\nlet msg = hl7_core::Message::parse(b\"MSH|^~\\\\&|||||||OML^O21^OML_O21|1|P|2.5.1\\rPID|1\\rORC|NW|P1\\rTQ1|1\\rOBR|1|P1\\rOBX|1|CWE|67471-3^Pregnancy^LN||Y||||||O\\rSPM|1\")?;\n\
     let oml = hl7_core::lab::OmlO21::new(&msg)?;\nlet order = oml.orders().next().unwrap();\nassert_eq!((order.timing.len(), order.observations.len(), order.specimens.len()), (1, 1, 1));\n# Ok::<(), hl7_core::Error>(())\n```"
);
typed_view!(
    OruR01,
    OruR01,
    "ORU",
    "R01",
    "ORU^R01, unsolicited result (v2.5.1 LRI): PATIENT_RESULT groups of patient and ORDER_OBSERVATION groups.\n\n\
     ```\nlet msg = hl7_core::Message::parse(b\"MSH|^~\\\\&|||||||ORM^O01|1|P|2.3\")?;\n\
     assert!(hl7_core::lab::OruR01::new(&msg).is_err()); // an ORM is not an ORU\n# Ok::<(), hl7_core::Error>(())\n```"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_segments_and_unexpected_segments_never_empty_later_groups() {
        // regression for HAPI/nHapi: a Z-segment after PID made later orders vanish
        let msg = Message::parse(
            b"MSH|^~\\&|||||||ORM^O01|1|P|2.3\rPID|1\rZPI|vip\rPV1|1\rORC|NW|P1\rZOR|x\rOBR|1|P1\rOBX|1|ST|Q||A\rEVN|odd\rORC|NW|P2\rOBR|2|P2\r",
        )
        .unwrap();
        let view = OrmO01::new(&msg).unwrap();
        assert_eq!(view.orders().count(), 2);
        let pt = view.patient().unwrap();
        assert_eq!(pt.other[0].name(), "ZPI");
        assert!(pt.pv1.is_some());
        let first = view.orders().next().unwrap();
        assert_eq!(first.other.iter().map(|s| s.name()).collect::<Vec<_>>(), ["ZOR", "EVN"]);
        assert_eq!(view.misplaced.iter().map(|p| p.to_string()).collect::<Vec<_>>(), ["EVN"]);
        assert_eq!(view.segment_count(), msg.segment_count());
    }

    #[test]
    fn oru_with_two_patients_has_two_patient_results() {
        let msg = Message::parse(
            b"MSH|^~\\&|||||||ORU^R01|1|P|2.5.1\rPID|1||A\rOBR|1\rOBX|1\rPID|2||B\rORC|RE\rOBR|1\rOBX|1\rOBX|2\rSPM|1\rOBX|3\r",
        )
        .unwrap();
        let view = OruR01::new(&msg).unwrap();
        assert_eq!(view.patients.len(), 2);
        let second = &view.patients[1].orders[0];
        assert!(second.orc.is_some() && second.obr.is_some());
        assert_eq!(second.observations.len(), 2);
        assert_eq!(second.specimens[0].observations.len(), 1);
        assert_eq!(view.segment_count(), msg.segment_count());
    }

    #[test]
    fn wrong_type_is_an_error_at_msh9() {
        let msg = Message::parse(b"MSH|^~\\&|||||||ADT^A01|1|P|2.5.1\r").unwrap();
        let e = LabView::new(&msg).unwrap_err();
        assert_eq!(e.to_string(), "message type ADT^A01, expected ORM^O01, OML^O21 or ORU^R01 at byte 15 (MSH-9)");
    }
}
