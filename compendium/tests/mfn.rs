//! MFN exports checked by parsing them back with hl7-core; MFK
//! acknowledgements; per-EMR code maps and update packages.

use std::collections::BTreeSet;

use compendium::mfn::{self, MfkAck, MfnKind, MfnMessage};
use compendium::sync::{pending, sync, Connection};
use compendium::{diff, Catalog, ChangeKind, Compendium, EmrCodeMap, Import, Test};
use hl7_core::datetime::Timestamp;
use hl7_core::{Message, Segment};

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../testdata/compendium/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn sample(v: u32) -> Catalog {
    Import::from_csv(&read(&format!("tests_v{v}.csv"))[..], Some(&read(&format!("panels_v{v}.csv"))[..]))
        .into_catalog(false)
        .unwrap()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn sample_compendium() -> Compendium {
    let mut c = Compendium::new();
    c.commit(sample(1), "ana", "first import", ts("20240101090000-0500"));
    c.commit(sample(2), "ana", "March update", ts("20240301090000-0500"));
    c
}

fn decoded(s: &Segment<'_>, path: &str) -> String {
    // a path relative to the segment: "2-1", "7(2)-1"
    let p: hl7_core::Path = format!("{}{}", s.name(), &format!("-{path}")).parse().unwrap();
    let f = p.field().unwrap() as usize;
    let field = s.field(f);
    let rep = field.and_then(|f| f.repetition(p.repetition() as usize));
    match p.component() {
        None => rep.map(|r| r.decoded().into_owned()).unwrap_or_default(),
        Some(c) => {
            let comp = rep.and_then(|r| r.component(c as usize));
            match p.subcomponent() {
                None => comp.map(|c| c.decoded().into_owned()).unwrap_or_default(),
                Some(sc) => {
                    comp.and_then(|c| c.subcomponent(sc as usize)).map(|x| x.decoded().into_owned()).unwrap_or_default()
                }
            }
        }
    }
}

/// (MFE-1, MFE-4-1) of every record, in order.
fn records(m: &MfnMessage) -> Vec<(String, String)> {
    let msg = Message::parse(m.text.as_bytes()).unwrap();
    msg.segments_named("MFE").map(|s| (decoded(&s, "1"), decoded(&s, "4-1"))).collect()
}

fn get(msg: &Message<'_>, path: &str) -> String {
    msg.get(&path.parse().unwrap()).map(|e| e.decoded().into_owned()).unwrap_or_default()
}

#[test]
fn a_whole_version_parses_back_field_by_field() {
    let c = sample_compendium();
    let v1 = c.version(1).unwrap();
    let msgs = mfn::export_version(v1, &Default::default());
    assert_eq!(msgs.iter().map(|m| m.kind).collect::<Vec<_>>(), [MfnKind::M08, MfnKind::M10, MfnKind::M04]);
    let cat = v1.catalog();
    let questions = cat.questions();

    // M08: one record per AOE question, then one per test
    let m08 = Message::parse(msgs[0].text.as_bytes()).unwrap();
    assert_eq!(m08.message_type(), ("MFN", "M08", "MFN_M08"));
    assert_eq!(get(&m08, "MSH-10"), "CMP1-M08");
    assert_eq!(get(&m08, "MSH-7"), "20240101090000-0500");
    assert_eq!(
        (get(&m08, "MFI-1-1"), get(&m08, "MFI-3"), get(&m08, "MFI-6")),
        ("OMA".into(), "REP".into(), "AL".into())
    );
    assert_eq!(m08.segments_named("MFE").count(), questions.len() + cat.tests().count());
    assert_eq!(msgs[0].records, questions.len() + cat.tests().count());
    // every MFE is followed by its OM1, with the same key
    let segs: Vec<Segment<'_>> = m08.segments().collect();
    for (i, s) in segs.iter().enumerate().filter(|(_, s)| s.name() == "MFE") {
        assert_eq!(segs[i + 1].name(), "OM1");
        assert_eq!(decoded(&segs[i + 1], "2-1"), decoded(s, "4-1"));
        assert_eq!(decoded(&segs[i + 1], "1"), decoded(s, "2"));
    }
    let glucose = cat.tests().find(|t| t.name == "Glucose").unwrap();
    let at = segs.iter().position(|s| s.name() == "OM1" && decoded(s, "2-1") == glucose.code).unwrap();
    let om1 = &segs[at];
    assert_eq!(decoded(&segs[at - 1], "1"), "MAD");
    assert_eq!(decoded(&segs[at - 1], "3"), glucose.effective_from.format("%Y%m%d").to_string());
    assert_eq!((decoded(om1, "2-2"), decoded(om1, "2-3")), ("Glucose".into(), "L".into()));
    assert_eq!((decoded(om1, "7(1)-1"), decoded(om1, "7(1)-3")), ("2345-7".into(), "LN".into()));
    assert_eq!((decoded(om1, "7(2)-1"), decoded(om1, "7(2)-3")), ("82947".into(), "C4".into()));
    assert_eq!(decoded(om1, "12"), "Y");
    assert_eq!(decoded(om1, "23"), "1440"); // 1 day, in minutes
    assert_eq!(
        (decoded(om1, "31-1"), decoded(om1, "31-2"), decoded(om1, "31-3")),
        ("49541-6".into(), "Fasting status".into(), "LN".into())
    );
    let om4 = &segs[at + 1];
    assert_eq!(om4.name(), "OM4");
    assert_eq!(
        (decoded(om4, "3"), decoded(om4, "6-1"), decoded(om4, "6-2")),
        ("SST (gold top)".into(), "SER".into(), "Serum".into())
    );
    assert_eq!(
        (decoded(om4, "9"), decoded(om4, "10-1"), decoded(om4, "10-2")),
        ("Refrigerated".into(), "1".into(), "mL".into())
    );

    // the coded AOE question carries its answers in OM3, the numeric one an OM2
    let src = segs.iter().position(|s| s.name() == "OM1" && decoded(s, "2-1") == "SRC").unwrap();
    assert_eq!((decoded(&segs[src], "3"), decoded(&segs[src], "12")), ("CWE".into(), "N".into()));
    assert_eq!(segs[src + 1].name(), "OM3");
    let answers: Vec<String> =
        segs[src + 1].field(3).unwrap().repetitions().map(|r| r.component(1).unwrap().decoded().into_owned()).collect();
    assert_eq!(answers, ["THROAT", "NASOPHARYNX", "WOUND", "URINE", "SPUTUM"]);
    let vol = segs.iter().position(|s| s.name() == "OM1" && decoded(s, "2-1") == "VOL24").unwrap();
    assert_eq!((segs[vol + 1].name(), decoded(&segs[vol], "3")), ("OM2", "NM".into()));

    // a discontinued test goes out as MDC, not orderable
    let old = cat.tests().find(|t| !t.status.is_active()).unwrap();
    let at = segs.iter().position(|s| s.name() == "OM1" && decoded(s, "2-1") == old.code).unwrap();
    assert_eq!((decoded(&segs[at - 1], "1"), decoded(&segs[at], "12")), ("MDC".into(), "N".into()));

    // M10: panels with OM5-2 the components
    let m10 = Message::parse(msgs[1].text.as_bytes()).unwrap();
    assert_eq!((get(&m10, "MSH-9-2"), get(&m10, "MFI-1-1")), ("M10".into(), "OMC".into()));
    let om5: Vec<Segment<'_>> = m10.segments_named("OM5").collect();
    assert_eq!(om5.len(), cat.panels().count());
    for (p, s) in cat.panels().zip(&om5) {
        let comps: Vec<String> =
            s.field(2).unwrap().repetitions().map(|r| r.component(1).unwrap().decoded().into_owned()).collect();
        assert_eq!(comps, p.components);
    }
    assert!(m10.segments_named("OM1").all(|s| decoded(&s, "18") == "P"));
    assert!(m10.segments_named("OM4").count() >= cat.panels().count());

    // M04: a price for every test and panel, the panel's client in PRC-2
    let m04 = Message::parse(msgs[2].text.as_bytes()).unwrap();
    assert_eq!(get(&m04, "MFI-1-1"), "CDM");
    let prices: Vec<(String, String, String)> =
        m04.segments_named("PRC").map(|s| (decoded(&s, "1-1"), decoded(&s, "5-1-1"), decoded(&s, "2"))).collect();
    assert_eq!(prices.len(), cat.tests().count() + cat.panels().count());
    assert!(prices.contains(&(glucose.code.clone(), "12.50".into(), String::new())));
    let p = cat.panels().next().unwrap();
    assert!(prices.contains(&(p.code.clone(), p.price.to_string(), p.client_account.clone())));
    let cdm = m04.segments_named("CDM").find(|s| decoded(s, "1-1") == glucose.code).unwrap();
    assert_eq!((decoded(&cdm, "7-1"), decoded(&cdm, "8")), ("82947".into(), "A".into()));
}

#[test]
fn an_update_carries_exactly_the_changes_of_the_diff() {
    let c = sample_compendium();
    let d = c.diff(1, 2).unwrap();
    let msgs = mfn::export_diff(&d, c.version(2).unwrap().created_at(), &Default::default());
    let by_kind = |k| msgs.iter().find(|m| m.kind == k).unwrap();
    for m in &msgs {
        let msg = Message::parse(m.text.as_bytes()).unwrap();
        assert_eq!(get(&msg, "MFI-3"), "UPD");
        assert_eq!(m.control_id, format!("CMP2-{}-1", m.kind.as_str()));
    }
    let event = |k: ChangeKind| match k {
        ChangeKind::Added => "MAD",
        ChangeKind::Removed => "MDL",
        ChangeKind::Discontinued => "MDC",
        ChangeKind::Reactivated => "MAC",
        ChangeKind::Changed => "MUP",
    };
    let set = |v: Vec<(String, String)>| v.into_iter().collect::<BTreeSet<_>>();

    // M08: every test change but price-only ones, and the AOE question changes
    let price_only =
        |ch: &compendium::Change| ch.kind == ChangeKind::Changed && ch.fields.iter().all(|f| f.field == "price");
    let mut want: Vec<(String, String)> =
        d.tests.iter().filter(|c| !price_only(c)).map(|c| (event(c.kind).into(), c.code.clone())).collect();
    want.extend(d.questions.iter().map(|q| (event(q.kind).to_owned(), q.code.clone())));
    assert_eq!(set(records(by_kind(MfnKind::M08))), set(want));
    assert!(d.tests.iter().any(price_only), "the sample has price-only changes");

    // M04: every test and panel change that touches a price
    let touches =
        |ch: &compendium::Change| ch.kind != ChangeKind::Changed || ch.fields.iter().any(|f| f.field == "price");
    let want: Vec<(String, String)> = d
        .tests
        .iter()
        .chain(&d.panels)
        .filter(|c| touches(c))
        .map(|c| (event(c.kind).into(), c.code.clone()))
        .collect();
    assert_eq!(set(records(by_kind(MfnKind::M04))), set(want));

    // M10: the panel changes other than price-only ones
    let want: Vec<(String, String)> =
        d.panels.iter().filter(|c| !price_only(c)).map(|c| (event(c.kind).into(), c.code.clone())).collect();
    assert_eq!(set(records(by_kind(MfnKind::M10))), set(want));

    // a price-only change: the new price, MUP
    let ch = d.tests.iter().find(|c| price_only(c)).unwrap();
    let m04 = Message::parse(by_kind(MfnKind::M04).text.as_bytes()).unwrap();
    let prc = m04.segments_named("PRC").find(|s| decoded(s, "1-1") == ch.code).unwrap();
    assert_eq!(Some(decoded(&prc, "5-1-1")), ch.fields[0].after);
}

#[test]
fn no_change_no_message() {
    let c = sample(1);
    let d = diff(&c, &c).with_versions(1, 1);
    assert!(d.is_empty());
    assert!(mfn::export_diff(&d, &ts("20240101"), &Default::default()).is_empty());
}

#[test]
fn values_with_hl7_delimiters_are_escaped_and_come_back() {
    let name = r"Glucose | 2h ^ post~meal \ & more";
    let c = Catalog::new(
        [Test::new("1001", name, "1.00".parse().unwrap(), "2024-01-01".parse().unwrap())
            .with_container("Tube | gray ^ top")],
        [],
    )
    .unwrap();
    let msgs = mfn::export_catalog(&c, 1, &ts("20240101"), &Default::default());
    let m08 = Message::parse(msgs[0].text.as_bytes()).unwrap();
    assert_eq!(get(&m08, "OM1-2-2"), name);
    assert_eq!(get(&m08, "OM1-6"), name);
    assert_eq!(get(&m08, "OM4-3"), "Tube | gray ^ top");
    assert_eq!(m08.segment_count(), 5); // MSH MFI MFE OM1 OM4
}

#[test]
fn export_through_an_emr_code_map_uses_its_codes() {
    let map = EmrCodeMap::from_json("riverside", std::str::from_utf8(&read("emr_riverside.json")).unwrap()).unwrap();
    let cat = sample(2);
    let theirs = map.apply(&cat).unwrap();
    let msgs = mfn::export_catalog(&theirs, 2, &ts("20240301"), &Default::default());
    let m08 = Message::parse(msgs[0].text.as_bytes()).unwrap();
    let codes: Vec<String> = m08
        .segments_named("OM1")
        .filter(|s| decoded(s, "12") != "N" || decoded(s, "2-3") == "L" && decoded(s, "3").is_empty())
        .map(|s| decoded(&s, "2-1"))
        .collect();
    assert!(codes.iter().all(|c| c.len() == 7 && c.starts_with('5')), "{codes:?}");
    let m10 = Message::parse(msgs[1].text.as_bytes()).unwrap();
    for s in m10.segments_named("OM5") {
        for r in s.field(2).unwrap().repetitions() {
            let code = r.component(1).unwrap().decoded().into_owned();
            assert_eq!(map.to_emr(map.to_lab(&code)), code);
            assert!(cat.test(map.to_lab(&code)).is_some());
        }
    }
    assert!(m10.segments_named("OM1").all(|s| decoded(&s, "2-1").starts_with("RS-PNL-")));
}

#[test]
fn mfk_acknowledgements_record_which_emr_accepted_which_version() {
    let mut c = sample_compendium();
    let v1_msgs = mfn::export_version(c.version(1).unwrap(), &Default::default());
    let (v2_msgs, refused) = {
        let d = c.diff(1, 2).unwrap();
        (mfn::export_diff(&d, c.version(2).unwrap().created_at(), &Default::default()), d.tests[0].code.clone())
    };
    let at = ts("20240301100000");

    // north accepts all of version 1
    for m in &v1_msgs {
        let mfn = Message::parse(m.text.as_bytes()).unwrap();
        let mfk_text = mfn::mfk_for(&mfn, &[], &at).unwrap();
        let ack = MfkAck::from_message(&Message::parse(mfk_text.as_bytes()).unwrap()).unwrap();
        assert!(ack.accepted());
        assert_eq!(ack.records.len(), m.records);
        c.record_ack("north", &ack, None, at).unwrap();
    }
    assert_eq!(c.accepted_version("north"), Some(1));
    assert_eq!(c.accepted_version("south"), None);

    // north refuses one record of the version 2 update: still at version 1
    let m08 = Message::parse(v2_msgs[0].text.as_bytes()).unwrap();
    let mfk_text = mfn::mfk_for(&m08, &[refused.as_str()], &at).unwrap();
    let mfk = Message::parse(mfk_text.as_bytes()).unwrap();
    assert_eq!((get(&mfk, "MSA-1"), get(&mfk, "MSA-2")), ("AE".into(), "CMP2-M08-1".into()));
    let ack = MfkAck::from_message(&mfk).unwrap();
    let rec = c.record_ack("north", &ack, None, at).unwrap();
    assert_eq!((rec.version, rec.accepted, rec.rejected.clone()), (2, false, vec![refused]));
    assert_eq!(c.accepted_version("north"), Some(1));

    // acceptances are kept in the compendium file
    let again = Compendium::from_json(&c.to_json()).unwrap();
    assert_eq!(again.acceptances(), c.acceptances());

    // an MFK for an unknown version, or that is not an MFK
    let bad = Message::parse(b"MSH|^~\\&|E|F|L|L|20240101||MFK^M08^MFK_M01|X|P|2.5.1\rMSA|AA|CMP9-M08\r").unwrap();
    let ack = MfkAck::from_message(&bad).unwrap();
    assert_eq!(c.record_ack("north", &ack, None, at).unwrap_err().to_string(), "no version 9");
    let not_mfk = Message::parse(b"MSH|^~\\&|E|F|L|L|20240101||ACK^A01|X|P|2.5.1\rMSA|AA|1\r").unwrap();
    assert_eq!(MfkAck::from_message(&not_mfk).unwrap_err().to_string(), r#"invalid MFK message: MSH-9 is "ACK""#);
}

#[test]
fn each_emr_gets_its_codes_and_only_its_changes() {
    let c = sample_compendium();
    let north_map = EmrCodeMap::from_csv("northwind", &read("emr_northwind.csv")[..]).unwrap();
    let river_map =
        EmrCodeMap::from_json("riverside", std::str::from_utf8(&read("emr_riverside.json")).unwrap()).unwrap();
    let north = Connection::new("northwind").with_map(north_map.clone()).with_clients(["ACCT1002", "ACCT1004"]);
    let river = Connection::new("riverside").with_map(river_map.clone());
    let packages = sync(&c, 1, 2, &[north, river], &Default::default()).unwrap();
    assert_eq!(packages.len(), 2);

    // northwind: panels of its two clients only, in its codes
    let nw = &packages[0];
    assert_eq!((nw.emr.as_str(), nw.from, nw.to), ("northwind", Some(1), 2));
    let d = c.diff(1, 2).unwrap();
    let nw_panel_codes: BTreeSet<String> =
        nw.messages.iter().filter(|m| m.kind == MfnKind::M10).flat_map(records).map(|(_, code)| code).collect();
    let v2 = c.version(2).unwrap().catalog();
    let v1 = c.version(1).unwrap().catalog();
    let expected: BTreeSet<String> = d
        .panels
        .iter()
        .filter(|ch| {
            let p = v2.panel(&ch.code).or_else(|| v1.panel(&ch.code)).unwrap();
            ["ACCT1002", "ACCT1004"].contains(&p.client_account.as_str())
                && ch.fields.iter().any(|f| f.field != "price")
                || ["ACCT1002", "ACCT1004"].contains(&p.client_account.as_str()) && ch.fields.is_empty()
        })
        .map(|ch| north_map.to_emr(&ch.code).to_owned())
        .collect();
    assert_eq!(nw_panel_codes, expected);
    for m in &nw.messages {
        let msg = Message::parse(m.text.as_bytes()).unwrap();
        assert_eq!(get(&msg, "MSH-5"), "northwind");
        for s in msg.segments_named("MFE") {
            let code = decoded(&s, "4-1");
            assert_eq!(north_map.to_emr(north_map.to_lab(&code)), code);
            assert!(!v2
                .panels()
                .any(|p| p.code == code && !["ACCT1002", "ACCT1004"].contains(&p.client_account.as_str())));
        }
    }
    // riverside: every change, every code its own
    let rs = &packages[1];
    let all: Vec<(String, String)> = rs.messages.iter().filter(|m| m.kind == MfnKind::M08).flat_map(records).collect();
    assert_eq!(all.len(), records(&mfn::export_diff(&d, &ts("20240301"), &Default::default())[0]).len());
    assert!(all.iter().filter(|(_, c)| c.chars().all(|x| x.is_ascii_digit())).all(|(_, c)| c.starts_with('5')));
}

#[test]
fn pending_sends_the_whole_catalog_first_then_updates_from_what_was_accepted() {
    let mut c = sample_compendium();
    let conn = [Connection::new("south")];
    let first = pending(&c, &conn, &Default::default()).unwrap();
    assert_eq!((first[0].from, first[0].to), (None, 2));
    let m08 = Message::parse(first[0].messages[0].text.as_bytes()).unwrap();
    assert_eq!(get(&m08, "MFI-3"), "REP");
    // south accepts version 1: the next package is the update 1 → 2
    let v1 = mfn::export_version(c.version(1).unwrap(), &Default::default());
    let mfn_msg = Message::parse(v1[0].text.as_bytes()).unwrap();
    let text = mfn::mfk_for(&mfn_msg, &[], &ts("20240102")).unwrap();
    let ack = MfkAck::from_message(&Message::parse(text.as_bytes()).unwrap()).unwrap();
    c.record_ack("south", &ack, None, ts("20240102")).unwrap();
    let next = pending(&c, &conn, &Default::default()).unwrap();
    assert_eq!((next[0].from, next[0].to), (Some(1), 2));
    assert!(next[0].summary.starts_with("tests: 5 added"), "{}", next[0].summary);
}
