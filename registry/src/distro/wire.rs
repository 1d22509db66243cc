//! The messages Distro peers exchange, and their routes under `/nacre/internal/distro`.
//!
//! All bodies are JSON. Sync carries service records, whole or as deltas (rule V2); verify carries per-service version
//! and checksum digests of the sender's owned services; a snapshot is every record a node holds.

use nacre_ring::ServiceKey;
use serde::{Deserialize, Serialize};

use super::store::{Digest, ServiceRecord};

/// Route receiving [`SyncBatch`]es.
pub const SYNC_PATH: &str = "/nacre/internal/distro/sync";
/// Route receiving [`VerifyRequest`]s.
pub const VERIFY_PATH: &str = "/nacre/internal/distro/verify";
/// Route answering a full snapshot (`Vec<ServiceRecord>`).
pub const SNAPSHOT_PATH: &str = "/nacre/internal/distro/snapshot";
/// Set on a snapshot written one record per line by a [`SnapshotWriter`]: the receiver may
/// decode it as it arrives. Without it the body is one JSON array to read whole.
pub const SNAPSHOT_LINES_HEADER: &str = "x-nacre-snapshot-lines";

/// Changed services pushed by a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncBatch {
    /// Sender's advertised address.
    pub from: String,
    /// Current records of the changed services.
    pub records: Vec<ServiceRecord>,
}

/// Answer to a [`SyncBatch`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncReply {
    /// Records that were newer than the receiver's copy.
    pub applied: usize,
    /// Services a delta created at the receiver, which wants their whole records (rule V2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub want: Vec<ServiceKey>,
}

/// The digests of every service the sender owns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// Sender's advertised address.
    pub from: String,
    /// Digest of the sender's ring members: the receiver only deletes services on the
    /// sender's word when both agree on who owns what.
    pub ring_digest: u64,
    /// Version and checksum per owned service.
    pub digests: Vec<Digest>,
}

/// What the receiver of a [`VerifyRequest`] wants resent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerifyReply {
    /// Services whose copy here is older or missing: send them.
    pub want: Vec<ServiceKey>,
    /// Services whose copies have equal versions but different contents: restamp and send.
    pub conflicting: Vec<ServiceKey>,
}

/// Writes a snapshot in pieces that together form one JSON array, one record per line: `[`,
/// then each record on its own line (after a `,` from the second on), then `]`. Compact JSON
/// never holds a raw newline, so a receiver can decode the records line by line while the rest
/// is still being written (see [`snapshot_record`]); one that reads the whole body still gets
/// a JSON array.
#[derive(Debug, Default)]
pub struct SnapshotWriter {
    opened: bool,
    written: bool,
}

impl SnapshotWriter {
    /// The next piece, holding `records`.
    pub fn piece(&mut self, records: &[ServiceRecord]) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(records.len() * 256 + 2);
        if !self.opened {
            out.extend_from_slice(b"[");
            self.opened = true;
        }
        for r in records {
            out.extend_from_slice(if self.written { b"\n," } else { b"\n" });
            serde_json::to_writer(&mut out, r)?;
            self.written = true;
        }
        Ok(out)
    }

    /// The last piece: it closes the array.
    pub fn finish(self) -> Vec<u8> {
        if self.opened {
            b"\n]".to_vec()
        } else {
            b"[\n]".to_vec()
        }
    }
}

/// One line of a snapshot written by a [`SnapshotWriter`]: `Some(record)` holding a record's
/// JSON, `None` for the lines that only open or close the array. `closes` tells whether the
/// line ends the array (the snapshot is complete).
pub fn snapshot_record(line: &[u8]) -> (Option<&[u8]>, bool) {
    let line = line.trim_ascii();
    if line == b"]" {
        return (None, true);
    }
    let line = line.strip_prefix(b"[").unwrap_or(line);
    let line = line.strip_prefix(b",").unwrap_or(line).trim_ascii();
    ((!line.is_empty()).then_some(line), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::model::test_instance;

    fn record(n: usize) -> ServiceRecord {
        let mut i = test_instance(&format!("10.0.0.{n}"), 80, "DEFAULT", true);
        // A value with a newline and brackets: escaped in compact JSON, never a raw line break.
        i.metadata
            .make_mut()
            .insert("note".into(), "a\n]\n[,b".into());
        ServiceRecord {
            key: nacre_ring::ServiceKey::new("public", "DEFAULT_GROUP", format!("s{n}")),
            version: n as u64,
            instances: Some(vec![i]),
            stamps: vec![n as u64],
            removed: Vec::new(),
            floor: 0,
            partial: false,
        }
    }

    fn written(pieces: &[&[ServiceRecord]]) -> Vec<u8> {
        let mut w = SnapshotWriter::default();
        let mut body = Vec::new();
        for p in pieces {
            body.extend(w.piece(p).unwrap());
        }
        body.extend(w.finish());
        body
    }

    fn by_lines(body: &[u8]) -> (Vec<ServiceRecord>, bool) {
        let mut out = Vec::new();
        let mut complete = false;
        for line in body.split(|b| *b == b'\n') {
            let (rec, closes) = snapshot_record(line);
            if let Some(rec) = rec {
                out.push(serde_json::from_slice(rec).unwrap());
            }
            complete |= closes;
        }
        (out, complete)
    }

    #[test]
    fn a_snapshot_written_in_pieces_reads_line_by_line_and_as_one_array() {
        let records: Vec<ServiceRecord> = (0..5).map(record).collect();
        for pieces in [
            vec![&records[..]],
            vec![&records[..0], &records[..2], &records[2..2], &records[2..]],
        ] {
            let body = written(&pieces);
            let whole: Vec<ServiceRecord> = serde_json::from_slice(&body).unwrap();
            assert_eq!(whole, records);
            assert_eq!(by_lines(&body), (records.clone(), true));
            // Cut short (a peer that died mid-way): the records so far, and not complete.
            let cut = &body[..body.len() - 2];
            assert!(!by_lines(cut).1);
        }
        let empty = written(&[]);
        assert_eq!(
            serde_json::from_slice::<Vec<ServiceRecord>>(&empty).unwrap(),
            vec![]
        );
        assert_eq!(by_lines(&empty), (vec![], true));
    }
}
