//! Typed setters: where each contract field named in a profile lives on the
//! contract structs.
//!
//! A profile names contract fields by their dotted JSON names
//! (`"patient.family_name"`); compiling the profile resolves each name once
//! to a [`Slot`], a plain function from the scope's contract struct to the
//! field, so mapping a message writes straight into a [`LabOrder`] or a
//! [`LabResult`] — no intermediate JSON tree, no deserialization, no name
//! lookups per message.

use crate::contract::{
    AoeAnswer, BillTo, Diagnosis, Guarantor, Insurance, LabOrder, LabResult, Observation, OrderedTest, Report,
    ResultStatus, Specimen, Subscriber, Value,
};
use crate::datetime::Timestamp;

/// A contract field of the scope value `T`, by the type of value it holds.
pub(crate) enum Slot<T> {
    /// A string.
    Str(fn(&mut T) -> &mut Option<String>),
    /// A date/time with its HL7 precision.
    Time(fn(&mut T) -> &mut Option<Timestamp>),
    /// A result status (HL7 tables 0123 / 0085).
    Status(fn(&mut T) -> &mut Option<ResultStatus>),
    /// Who is billed.
    BillTo(fn(&mut T) -> &mut Option<BillTo>),
    /// One value per segment occurrence in scope (NTE-3 notes).
    SegList(fn(&mut T) -> &mut Vec<String>),
    /// One value per repetition of a field (OBX-8 flags).
    RepList(fn(&mut T) -> &mut Vec<String>),
    /// OBX-5, typed by OBX-2.
    ObsValue(fn(&mut T) -> &mut Option<Value>),
}

// A derive would ask `T: Clone`; the function pointers are always `Copy`.
impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Slot<T> {}

impl<T> std::fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Slot::Str(_) => "Str",
            Slot::Time(_) => "Time",
            Slot::Status(_) => "Status",
            Slot::BillTo(_) => "BillTo",
            Slot::SegList(_) => "SegList",
            Slot::RepList(_) => "RepList",
            Slot::ObsValue(_) => "ObsValue",
        })
    }
}

/// A contract struct that profile rules can write into.
pub(crate) trait Fields: Default + Sized + 'static {
    /// The field a dotted contract name refers to, if this struct has it.
    fn slot(name: &str) -> Option<Slot<Self>>;
}

fn some<T: Default>(o: &mut Option<T>) -> &mut T {
    o.get_or_insert_with(T::default)
}

/// The fields `LabOrder` and `LabResult` share: header, patient, provider,
/// order numbers and client account. Patient address fields are resolved by
/// the caller (they need the address part as data).
macro_rules! header_slot {
    ($name:expr) => {
        match $name {
            "message_control_id" => Some(Slot::Str(|o| &mut o.message_control_id)),
            "sent_at" => Some(Slot::Time(|o| &mut o.sent_at)),
            "sending.application" => Some(Slot::Str(|o| &mut o.sending.application)),
            "sending.facility" => Some(Slot::Str(|o| &mut o.sending.facility)),
            "receiving.application" => Some(Slot::Str(|o| &mut o.receiving.application)),
            "receiving.facility" => Some(Slot::Str(|o| &mut o.receiving.facility)),
            "placer_order_number" => Some(Slot::Str(|o| &mut o.placer_order_number)),
            "filler_order_number" => Some(Slot::Str(|o| &mut o.filler_order_number)),
            "client_account" => Some(Slot::Str(|o| &mut o.client_account)),
            "patient.id" => Some(Slot::Str(|o| &mut o.patient.id)),
            "patient.id_authority" => Some(Slot::Str(|o| &mut o.patient.id_authority)),
            "patient.family_name" => Some(Slot::Str(|o| &mut o.patient.family_name)),
            "patient.given_name" => Some(Slot::Str(|o| &mut o.patient.given_name)),
            "patient.middle_name" => Some(Slot::Str(|o| &mut o.patient.middle_name)),
            "patient.birth_date" => Some(Slot::Time(|o| &mut o.patient.birth_date)),
            "patient.sex" => Some(Slot::Str(|o| &mut o.patient.sex)),
            "patient.phone" => Some(Slot::Str(|o| &mut o.patient.phone)),
            "patient.address.street" => Some(Slot::Str(|o| &mut some(&mut o.patient.address).street)),
            "patient.address.other" => Some(Slot::Str(|o| &mut some(&mut o.patient.address).other)),
            "patient.address.city" => Some(Slot::Str(|o| &mut some(&mut o.patient.address).city)),
            "patient.address.state" => Some(Slot::Str(|o| &mut some(&mut o.patient.address).state)),
            "patient.address.zip" => Some(Slot::Str(|o| &mut some(&mut o.patient.address).zip)),
            "patient.address.country" => Some(Slot::Str(|o| &mut some(&mut o.patient.address).country)),
            "ordering_provider.id" => Some(Slot::Str(|o| &mut o.ordering_provider.id)),
            "ordering_provider.family_name" => Some(Slot::Str(|o| &mut o.ordering_provider.family_name)),
            "ordering_provider.given_name" => Some(Slot::Str(|o| &mut o.ordering_provider.given_name)),
            _ => None,
        }
    };
}

fn guarantor(o: &mut LabOrder) -> &mut Guarantor {
    some(&mut o.billing.guarantor)
}

impl Fields for LabOrder {
    fn slot(name: &str) -> Option<Slot<Self>> {
        let header: Option<Slot<Self>> = header_slot!(name);
        if header.is_some() {
            return header;
        }
        Some(match name {
            "order_control" => Slot::Str(|o| &mut o.order_control),
            "billing.bill_to" => Slot::BillTo(|o| &mut o.billing.bill_to),
            "billing.guarantor.family_name" => Slot::Str(|o| &mut guarantor(o).family_name),
            "billing.guarantor.given_name" => Slot::Str(|o| &mut guarantor(o).given_name),
            "billing.guarantor.relationship" => Slot::Str(|o| &mut guarantor(o).relationship),
            "billing.guarantor.phone" => Slot::Str(|o| &mut guarantor(o).phone),
            "billing.guarantor.address.street" => Slot::Str(|o| &mut some(&mut guarantor(o).address).street),
            "billing.guarantor.address.other" => Slot::Str(|o| &mut some(&mut guarantor(o).address).other),
            "billing.guarantor.address.city" => Slot::Str(|o| &mut some(&mut guarantor(o).address).city),
            "billing.guarantor.address.state" => Slot::Str(|o| &mut some(&mut guarantor(o).address).state),
            "billing.guarantor.address.zip" => Slot::Str(|o| &mut some(&mut guarantor(o).address).zip),
            "billing.guarantor.address.country" => Slot::Str(|o| &mut some(&mut guarantor(o).address).country),
            "notes" => Slot::SegList(|o| &mut o.notes),
            _ => return None,
        })
    }
}

impl Fields for LabResult {
    fn slot(name: &str) -> Option<Slot<Self>> {
        let header: Option<Slot<Self>> = header_slot!(name);
        header
    }
}

fn subscriber(i: &mut Insurance) -> &mut Subscriber {
    some(&mut i.subscriber)
}

impl Fields for Insurance {
    fn slot(name: &str) -> Option<Slot<Self>> {
        Some(match name {
            "payer_id" => Slot::Str(|i| &mut i.payer_id),
            "payer_name" => Slot::Str(|i| &mut i.payer_name),
            "member_id" => Slot::Str(|i| &mut i.member_id),
            "group_number" => Slot::Str(|i| &mut i.group_number),
            "subscriber.family_name" => Slot::Str(|i| &mut subscriber(i).family_name),
            "subscriber.given_name" => Slot::Str(|i| &mut subscriber(i).given_name),
            "subscriber.relationship" => Slot::Str(|i| &mut subscriber(i).relationship),
            "subscriber.birth_date" => Slot::Time(|i| &mut subscriber(i).birth_date),
            _ => return None,
        })
    }
}

impl Fields for Diagnosis {
    fn slot(name: &str) -> Option<Slot<Self>> {
        Some(match name {
            "code" => Slot::Str(|d| &mut d.code),
            "system" => Slot::Str(|d| &mut d.system),
            "description" => Slot::Str(|d| &mut d.description),
            _ => return None,
        })
    }
}

fn specimen(s: &mut Option<Specimen>) -> &mut Specimen {
    some(s)
}

impl Fields for OrderedTest {
    fn slot(name: &str) -> Option<Slot<Self>> {
        Some(match name {
            "code" => Slot::Str(|t| &mut t.code),
            "name" => Slot::Str(|t| &mut t.name),
            "system" => Slot::Str(|t| &mut t.system),
            "priority" => Slot::Str(|t| &mut t.priority),
            "collected_at" => Slot::Time(|t| &mut t.collected_at),
            "specimen.type" => Slot::Str(|t| &mut specimen(&mut t.specimen).kind),
            "specimen.source" => Slot::Str(|t| &mut specimen(&mut t.specimen).source),
            "specimen.container" => Slot::Str(|t| &mut specimen(&mut t.specimen).container),
            "notes" => Slot::SegList(|t| &mut t.notes),
            _ => return None,
        })
    }
}

impl Fields for AoeAnswer {
    fn slot(name: &str) -> Option<Slot<Self>> {
        Some(match name {
            "question_code" => Slot::Str(|a| &mut a.question_code),
            "question" => Slot::Str(|a| &mut a.question),
            "answer" => Slot::Str(|a| &mut a.answer),
            _ => return None,
        })
    }
}

impl Fields for Report {
    fn slot(name: &str) -> Option<Slot<Self>> {
        Some(match name {
            "test.code" => Slot::Str(|r| &mut r.test.code),
            "test.name" => Slot::Str(|r| &mut r.test.name),
            "test.system" => Slot::Str(|r| &mut r.test.system),
            "status" => Slot::Status(|r| &mut r.status),
            "observed_at" => Slot::Time(|r| &mut r.observed_at),
            "reported_at" => Slot::Time(|r| &mut r.reported_at),
            "specimen.type" => Slot::Str(|r| &mut specimen(&mut r.specimen).kind),
            "specimen.source" => Slot::Str(|r| &mut specimen(&mut r.specimen).source),
            "specimen.container" => Slot::Str(|r| &mut specimen(&mut r.specimen).container),
            "notes" => Slot::SegList(|r| &mut r.notes),
            _ => return None,
        })
    }
}

impl Fields for Observation {
    fn slot(name: &str) -> Option<Slot<Self>> {
        Some(match name {
            "code" => Slot::Str(|o| &mut o.code),
            "name" => Slot::Str(|o| &mut o.name),
            "system" => Slot::Str(|o| &mut o.system),
            "value_type" => Slot::Str(|o| &mut o.value_type),
            "value" => Slot::ObsValue(|o| &mut o.value),
            "units" => Slot::Str(|o| &mut o.units),
            "reference_range" => Slot::Str(|o| &mut o.reference_range),
            "abnormal_flags" => Slot::RepList(|o| &mut o.abnormal_flags),
            "status" => Slot::Status(|o| &mut o.status),
            "observed_at" => Slot::Time(|o| &mut o.observed_at),
            "performing_lab" => Slot::Str(|o| &mut o.performing_lab),
            "notes" => Slot::SegList(|o| &mut o.notes),
            _ => return None,
        })
    }
}

/// Every contract field name of a scope, for error messages and docs.
#[cfg(test)]
pub(crate) fn names<T: Fields>(candidates: &[&str]) -> Vec<String> {
    candidates.iter().filter(|n| T::slot(n).is_some()).map(|n| (*n).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_reach_nested_fields() {
        let mut o = LabOrder::default();
        let Some(Slot::Str(f)) = LabOrder::slot("billing.guarantor.address.city") else { panic!("no slot") };
        *f(&mut o) = Some("AUSTIN".into());
        assert_eq!(o.billing.guarantor.unwrap().address.unwrap().city.as_deref(), Some("AUSTIN"));
        let Some(Slot::Str(f)) = LabResult::slot("patient.address.zip") else { panic!("no slot") };
        let mut r = LabResult::default();
        *f(&mut r) = Some("78701".into());
        assert_eq!(r.patient.address.unwrap().zip.as_deref(), Some("78701"));
    }

    #[test]
    fn order_only_fields_are_not_result_fields() {
        assert!(LabOrder::slot("billing.bill_to").is_some());
        assert!(LabResult::slot("billing.bill_to").is_none());
        assert!(LabResult::slot("notes").is_none());
        assert_eq!(names::<Observation>(&["value", "answer", "status"]), ["value", "status"]);
    }
}
