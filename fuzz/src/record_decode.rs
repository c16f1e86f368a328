//! The `record_decode` target: arbitrary bytes into the segment header and
//! record decoders, and (framed with a valid checksum) into the batch payload
//! decoder through a recovery scan of an in-memory segment.
//!
//! What it checks, besides "never panics":
//! - a header that decodes re-encodes to the same 64 bytes;
//! - a record that decodes is whole, within the limit, and re-encodes to the
//!   same bytes; "zeroes" means zeros;
//! - a record found behind garbage decodes where it was found;
//! - any payload framed with a valid checksum is either replayed as a batch
//!   within the documented limits, or refused as `BadPayload` at its offset;
//!   a replayed batch, re-encoded by `support::encode_payload`, decodes to
//!   the same batch.
//!
//! The payload limit is set to `RECORD_BYTES_MAX` (256 MiB) while the target
//! runs with a small `-malloc_limit_mb`: a length field trusted before its
//! bytes are checked would show up as an oversized allocation.

use std::path::Path;

use factwal::wal::format::{
    decode_record, encode_record, find_valid_record_after, Decoded, SegmentHeader,
};
use factwal::wal::recovery::{scan, Owner, ScanOptions};
use factwal::wal::segment::segment_file_name;
use factwal::RECORD_BYTES_MAX;
use factwal::{
    Batch, CorruptionKind, Error, Op, RecoveryMode, StoreId, BATCH_OPS_MAX, ID_BYTES_MAX,
};

use crate::support::{encode_payload, MemoryDir};

const RECORD_HEADER_BYTES: usize = 32;
const SEGMENT_HEADER_BYTES: usize = 64;

/// The store the fuzzed segments belong to.
const HEADER_STORE_ID: StoreId = match StoreId::from_u64(0x5eed) {
    Some(id) => id,
    None => panic!("a store id is never 0"),
};

/// The segment the fuzzed records are read as part of.
pub const HEADER: SegmentHeader = SegmentHeader {
    number: 3,
    lsn_first: 10,
    salt: 0x0123_4567_89ab_cdef,
    segment_bytes: 4096,
    store_id: Some(HEADER_STORE_ID),
    epoch: 0xe9,
};

/// Runs every check on one input.
pub fn check(data: &[u8]) {
    check_segment_header(data);
    check_record(data);
    check_record_search(data);
    check_payload(data);
}

fn check_segment_header(data: &[u8]) {
    if let Ok(header) = SegmentHeader::decode(data) {
        assert_eq!(
            &header.encode()[..],
            &data[..SEGMENT_HEADER_BYTES],
            "a decoded header re-encodes the same"
        );
        assert!(
            header.lsn_first >= 1 && header.segment_bytes > SEGMENT_HEADER_BYTES as u64,
            "{header:?}"
        );
    }
}

fn check_record(data: &[u8]) {
    match decode_record(data, &HEADER, RECORD_BYTES_MAX) {
        Decoded::Valid { lsn, payload, encoded_bytes } => {
            assert!(!payload.is_empty() && payload.len() as u64 <= RECORD_BYTES_MAX);
            assert_eq!(encoded_bytes as usize, RECORD_HEADER_BYTES + payload.len());
            let mut encoded = Vec::new();
            encode_record(&mut encoded, &HEADER, lsn, payload);
            assert_eq!(
                encoded,
                &data[..encoded_bytes as usize],
                "a valid record re-encodes to the same bytes"
            );
        }
        Decoded::Zeroes => {
            let head = &data[..data.len().min(RECORD_HEADER_BYTES)];
            assert!(head.iter().all(|&b| b == 0), "Zeroes for a non-zero record header");
        }
        Decoded::Invalid => {}
    }
}

fn check_record_search(data: &[u8]) {
    if let Some((position, lsn)) = find_valid_record_after(data, &HEADER, RECORD_BYTES_MAX) {
        assert!(position >= 1 && (position as usize) < data.len());
        match decode_record(&data[position as usize..], &HEADER, RECORD_BYTES_MAX) {
            Decoded::Valid { lsn: found, .. } => assert_eq!(found, lsn),
            other => panic!("find_valid_record_after points at {other:?}"),
        }
    }
}

/// Frames `data` as the only record of segment 1 and scans it.
fn check_payload(data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let ops = match scan_payload(data) {
        Ok(ops) => ops,
        Err(Error::Corrupted { offset, lsn: 1, kind: CorruptionKind::BadPayload, .. }) => {
            assert_eq!(offset, SEGMENT_HEADER_BYTES as u64);
            return;
        }
        Err(other) => panic!("a payload with a valid checksum gave {other:?}"),
    };
    assert!((1..=BATCH_OPS_MAX).contains(&ops.len()), "{} operations", ops.len());
    for op in &ops {
        let (session, fact) = match op {
            Op::Assert { session, fact, .. } | Op::Retract { session, fact } => {
                (session, Some(fact))
            }
            Op::DropSession { session } => (session, None),
        };
        for id in std::iter::once(session).chain(fact) {
            assert!(
                (1..=ID_BYTES_MAX).contains(&id.len()),
                "an id of {} bytes was accepted",
                id.len()
            );
        }
    }
    let encoded = encode_payload(&ops);
    assert!(
        encoded.len() <= data.len(),
        "the canonical encoding is never longer than what was accepted"
    );
    let again = scan_payload(&encoded).expect("the re-encoded batch decodes");
    assert_eq!(again, ops, "decode(encode(batch)) == batch");
}

/// The operations of the one record of an in-memory segment carrying
/// `payload`, as recovery reads them back.
pub fn scan_payload(payload: &[u8]) -> factwal::Result<Vec<Op>> {
    // A segment is as big as its header says (preallocated), and holds the
    // record whatever its size.
    let segment_bytes =
        (SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + payload.len()).max(4096) as u64;
    let header = SegmentHeader { number: 1, segment_bytes, lsn_first: 1, ..HEADER };
    let mut segment = header.encode().to_vec();
    encode_record(&mut segment, &header, 1, payload);
    segment.resize(segment_bytes as usize, 0);
    let mut dir = MemoryDir::default();
    dir.files.insert(segment_file_name(1), segment);
    let options = ScanOptions {
        applied_lsn: Some(0),
        mode: RecoveryMode::TolerateCorruptedTail,
        keep_folded: false,
        owner: Owner::InUse { store_id: HEADER_STORE_ID, epoch: HEADER.epoch },
        state_path: "state.redb".into(),
    };
    let mut recovered = scan(&dir, Path::new("wal"), &options, Batch::decode)?;
    assert_eq!(
        recovered.records.len(),
        1,
        "one record written, {} read back",
        recovered.records.len()
    );
    assert!(recovered.repairs.is_empty(), "a segment ending with a whole record needs no repair");
    Ok(recovered.records.remove(0).payload.into())
}
