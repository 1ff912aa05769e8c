//! What every store backend computes the same way: the audit hash chain,
//! its checkpoints, the per-store key.

use sha2::{Digest, Sha256};

use crate::audit::AuditEvent;
use crate::item::hex;
use crate::{Error, ErrorKind};

/// The `prev_hash` of the first event.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub(crate) fn fresh_key() -> Vec<u8> {
    // No CSPRNG dependency: the key only needs to be unguessable from the
    // trail, and this mixes time, process id and an address.
    let mut h = Sha256::new();
    h.update(format!("{:?}", std::time::SystemTime::now()));
    h.update(std::process::id().to_le_bytes());
    let local = 0u8;
    h.update(format!("{:p}", &local));
    h.finalize().to_vec()
}

/// An event's hash: over the previous hash and every field, each prefixed
/// by its length so no two field lists hash alike.
pub(crate) fn chain_hash(e: &AuditEvent) -> String {
    let mut h = Sha256::new();
    let opt = |s: &Option<String>| s.clone().unwrap_or_default();
    let fields = [
        e.prev_hash.clone(),
        e.seq.to_string(),
        e.at.to_string(),
        e.kind.as_str().to_owned(),
        e.connection.clone(),
        e.direction.as_str().to_owned(),
        e.message_id.map(|m| m.to_string()).unwrap_or_default(),
        opt(&e.control_id),
        e.outcome.clone(),
        e.byte_count.map(|b| b.to_string()).unwrap_or_default(),
        opt(&e.content_hash),
        opt(&e.patient),
        opt(&e.placer),
        opt(&e.filler),
        e.detail.clone(),
    ];
    for f in fields {
        h.update((f.len() as u64).to_le_bytes());
        h.update(f.as_bytes());
    }
    hex(&h.finalize())
}

/// A checkpoint's own hash, chained over the previous checkpoint's.
pub(crate) fn checkpoint_hash(prev: &str, seq: i64, hash: &str, event_at: i64, pruned: i64, at: i64) -> String {
    let mut h = Sha256::new();
    for f in
        [prev.to_owned(), seq.to_string(), hash.to_owned(), event_at.to_string(), pruned.to_string(), at.to_string()]
    {
        h.update((f.len() as u64).to_le_bytes());
        h.update(f.as_bytes());
    }
    hex(&h.finalize())
}

pub(crate) fn not_found(what: &str, id: i64) -> Error {
    Error::new(ErrorKind::NotFound, format!("no {what} {id}"))
}
