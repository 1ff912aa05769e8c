//! `hl7-core`: a correct, fast, never-panicking HL7 v2 (ER7) parser and
//! builder for lab orders and results.
//!
//! ```
//! use hl7_core::{Message, Path};
//!
//! let input = b"MSH|^~\\&|LIS|LAB|EHR|CLINIC|20240116140500||ORU^R01^ORU_R01|MSG1|P|2.5.1\r\
//!               PID|1||PAT001^^^LAB^MR||DOE^JANE^Q||19700101|F\r\
//!               OBR|1|ORD001|FIL001|2345-7^Glucose^LN\r\
//!               OBX|1|NM|2345-7^Glucose^LN||95|mg/dL|70-99|N|||F\r";
//! let msg = Message::parse(input)?;
//! assert_eq!(msg.message_type(), ("ORU", "R01", "ORU_R01"));
//!
//! // typed, 1-based HL7 positions ...
//! let pid = msg.segment("PID").unwrap();
//! assert_eq!(pid.field(5).unwrap().component(1).unwrap().raw(), "DOE");
//! // ... or one terser-style Path
//! let path: Path = "OBX-5".parse()?;
//! assert_eq!(msg.get(&path).unwrap().decoded(), "95");
//! // the parse is lossless
//! assert_eq!(msg.to_bytes().as_ref(), input);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layers
//!
//! - [`reader::split`] and the structural index are the lower layer: they
//!   work on `&[u8]`, allocate nothing per element, and tell "need more
//!   bytes" apart from "bad bytes".
//! - [`Message`] and its views ([`Segment`], [`Field`], [`Repetition`],
//!   [`Component`], [`Subcomponent`]) borrow the input; [`Message::into_owned`]
//!   detaches a message. Raw and decoded text are separate methods
//!   ([`Field::raw`], [`Field::decoded`]); nothing is decoded silently.
//! - [`Reader`] (any `io::Read`) and [`Messages`] (a byte slice) yield every
//!   message of a file in order, each a message or an error with its offset.
//!
//! HL7 counts from 1 and so does every index in this crate: `field(5)` is
//! PID-5, `repetition(1)` the first repetition.

#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod ack;
pub mod builder;
pub mod charset;
pub mod contract;
pub mod datetime;
mod delimiters;
mod error;
pub mod escape;
pub mod lab;
mod message;
mod path;
pub mod profile;
pub mod reader;
mod scan;

pub use charset::Charset;
pub use delimiters::Delimiters;
pub use error::{Error, ErrorKind, Warning, WarningKind};
pub use message::{
    Component, Element, Field, Fields, Limits, Message, ParseOptions, Repetition, Segment, Segments, Subcomponent,
};
pub use path::{Path, PathError};
pub use reader::{Event, Messages, Reader};
