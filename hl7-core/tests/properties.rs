//! Property tests: build → parse → build is the identity, parse → write gives
//! the input back, and no input makes any entry point panic.

use hl7_core::builder::{FieldValue, MessageBuilder, SegmentBuilder};
use hl7_core::{Delimiters, Message, Messages, Reader};
use proptest::prelude::*;

fn delimiters() -> impl Strategy<Value = Delimiters> {
    let pool = b"|^~\\&#!@$%*+".to_vec();
    (Just(pool).prop_shuffle(), any::<bool>()).prop_map(|(p, trunc)| {
        Delimiters::new(p[0], [p[1], p[2], p[3], p[4]], trunc.then_some(p[5])).expect("distinct delimiter characters")
    })
}

fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z0-9 .,:/-]{0,8}",
        Just("|".to_owned()),
        Just("^".to_owned()),
        Just("~".to_owned()),
        Just("\\".to_owned()),
        Just("&".to_owned()),
        Just("#".to_owned()),
        Just("\r".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("\"\"".to_owned()),
        Just("é".to_owned()),
        Just("🧪".to_owned()),
        Just("\\X41\\".to_owned()),
        Just("\\.br\\".to_owned()),
    ];
    proptest::collection::vec(piece, 0..4).prop_map(|v| v.concat())
}

fn field() -> impl Strategy<Value = FieldValue> {
    let rep = proptest::collection::vec(proptest::collection::vec(text(), 1..3), 1..4);
    proptest::collection::vec(rep, 1..3)
        .prop_map(|reps| FieldValue::repetitions(reps.into_iter().map(FieldValue::subcomponents)))
}

fn segment() -> impl Strategy<Value = SegmentBuilder> {
    let name = "[A-Z][A-Z0-9]{2}"
        .prop_filter("not MSH or an envelope", |n| !matches!(n.as_str(), "MSH" | "FHS" | "BHS" | "BTS" | "FTS"));
    (name, proptest::collection::vec((1usize..8, field()), 0..6)).prop_map(|(name, fields)| {
        let mut s = SegmentBuilder::new(&name).expect("valid name");
        for (n, v) in fields {
            s = s.with_field(n, v);
        }
        s
    })
}

fn message() -> impl Strategy<Value = MessageBuilder> {
    (delimiters(), proptest::collection::vec((3usize..13, field()), 0..5), proptest::collection::vec(segment(), 0..6))
        .prop_map(|(d, msh, segs)| {
            let mut b = MessageBuilder::new("ORU^R01^ORU_R01", "2.5.1").with_delimiters(d);
            for (n, v) in msh {
                b = b.with_msh_field(n, v);
            }
            for s in segs {
                b = b.with_segment(s);
            }
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn build_parse_build_is_identity(b in message()) {
        let text = b.build();
        let msg = Message::parse(text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}: {text:?}")))?;
        prop_assert_eq!(msg.segment_count(), b.segments().len() + 1);
        prop_assert_eq!(MessageBuilder::from_message(&msg).build(), text.clone());
        // and parse -> write gives the input back
        prop_assert_eq!(msg.to_bytes().into_owned(), text.as_bytes().to_vec());
    }

    #[test]
    fn decoded_leaves_are_the_built_text(d in delimiters(), leaves in proptest::collection::vec(text(), 1..6)) {
        let seg = SegmentBuilder::new("ZZT").unwrap().with_field(1, FieldValue::components(leaves.clone()));
        let text = MessageBuilder::new("ORU^R01", "2.5.1").with_delimiters(d).with_segment(seg).build();
        let msg = Message::parse(text.as_bytes()).unwrap();
        let f = msg.segment("ZZT").unwrap().field(1).unwrap();
        for (i, leaf) in leaves.iter().enumerate() {
            prop_assert_eq!(f.component(i + 1).unwrap().decoded(), leaf.as_str());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_all_entry_points_agree(
        data in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..400),
            proptest::collection::vec(prop_oneof![
                Just(b"MSH|^~\\&|".to_vec()), Just(b"\r".to_vec()), Just(b"\n".to_vec()), Just(b"PID|".to_vec()),
                Just(b"BHS|".to_vec()), Just(b"BTS|1".to_vec()), Just(b"^~&\\".to_vec()), Just(b"\xff\xc3".to_vec()),
                Just(b"OBX|1|".to_vec()), Just(b"MSH".to_vec()), Just(b"\\X".to_vec()), Just(b"||||".to_vec()),
            ], 0..40).prop_map(|v| v.concat()),
        ],
        step in 1usize..50,
    ) {
        if let Ok(m) = Message::parse(&data) {
            prop_assert_eq!(m.to_bytes().into_owned(), data.clone());
            for s in m.segments() {
                for f in s.fields() {
                    for r in f.repetitions() {
                        for c in r.components() {
                            for x in c.subcomponents() {
                                let _ = x.decoded();
                            }
                        }
                    }
                }
            }
        }
        let borrowed: Vec<Result<usize, u64>> =
            Messages::new(&data).map(|r| r.map(|m| m.segment_count()).map_err(|e| e.offset())).collect();
        struct Trickle<'a>(&'a [u8], usize);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.1.min(buf.len()).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let streamed: Vec<Result<usize, u64>> =
            Reader::new(Trickle(&data, step)).map(|r| r.map(|m| m.segment_count()).map_err(|e| e.offset())).collect();
        prop_assert_eq!(borrowed, streamed);
    }
}
