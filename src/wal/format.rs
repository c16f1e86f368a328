//! The on-disk layout of segments and records, byte by byte as in
//! `docs/FORMAT.md`. Fixed-width little-endian; nothing depends on `usize` or
//! platform layout. Pure functions: no I/O here.

use crate::error::Lsn;
use crate::identity::StoreId;

/// The first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"FACTWAL\0";
/// The format version this build writes: 2 adds the store identity to the
/// segment header (docs/FORMAT.md, "Versions").
pub const FORMAT_VERSION: u32 = 2;
/// The oldest segment format this build still reads: format 1, whose headers
/// carry no store identity (a store made by factwal 0.1 opens and is upgraded).
pub const FORMAT_VERSION_OLDEST: u32 = 1;
/// Bytes of the segment header; records start right after it.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
/// Bytes of a record header (before its payload).
pub const RECORD_HEADER_BYTES: u64 = 32;
/// Largest record the format allows, counted as everywhere in factwal by its
/// payload (the bytes a batch encodes to; the 32-byte header is overhead):
/// the length field is 32 bits, and the practical bound is memory, since a
/// record is decoded whole. It is also the largest
/// `persistence.max_record_bytes` accepted. Records already written are
/// judged by this bound and by their segment's size, never by today's
/// `max_record_bytes`, which only limits new writes.
pub const RECORD_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Largest segment the format allows: recovery maps a whole segment in memory.
pub const SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Largest header a later format version may declare. Every version keeps
/// magic, version and header size where format 1 put them and ends its header
/// with a CRC-32 of the bytes before it, so a newer segment is recognised as
/// such (and never mistaken for damage) up to this size.
const HEADER_BYTES_LATER_MAX: u64 = 4096;

const SEGMENT_CRC_AT: usize = 60;
const STORE_ID_AT: usize = 48;
const EPOCH_AT: usize = 56;

// How the format's constants relate, checked when the crate compiles.
const _: () = {
    // The header's fields do not overlap, and its CRC is its last 4 bytes.
    assert!(STORE_ID_AT + 8 <= EPOCH_AT && EPOCH_AT + 4 <= SEGMENT_CRC_AT);
    assert!(SEGMENT_CRC_AT as u64 + 4 == SEGMENT_HEADER_BYTES);
    // A later version's header may be longer, never shorter.
    assert!(SEGMENT_HEADER_BYTES <= HEADER_BYTES_LATER_MAX);
    // A payload length fits the record header's 32-bit field, and the
    // largest record fits the largest segment after its header.
    assert!(RECORD_BYTES_MAX <= u32::MAX as u64);
    assert!(SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + RECORD_BYTES_MAX <= SEGMENT_BYTES_MAX);
    // Recovery maps a whole segment: its offsets fit a usize.
    assert!(SEGMENT_BYTES_MAX <= usize::MAX as u64);
    assert!(FORMAT_VERSION_OLDEST <= FORMAT_VERSION);
};

/// The header at offset 0 of every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's number; the file is named after it.
    pub number: u64,
    /// The LSN of the first record this segment holds (or would hold).
    pub lsn_first: Lsn,
    /// Random for every segment created; every record repeats it, so bytes left
    /// over from an earlier use of the file never pass for a record.
    pub salt: u64,
    /// The file's preallocated size.
    pub segment_bytes: u64,
    /// The store the segment belongs to; `None` in a format-1 segment, which
    /// did not record it. Encoding a header without one writes format 1.
    pub store_id: Option<StoreId>,
    /// The opening of the store that wrote the segment: random for every
    /// read-write open, the same in every segment that open writes, and
    /// recorded in `state.redb` while the WAL is in use. 0 in format 1.
    pub epoch: u32,
}

/// Why a segment header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Damaged, or not a segment header at all.
    Invalid,
    /// A whole, checksummed header of a format version newer than this build
    /// reads: not damage, and nothing to repair.
    NewerVersion(u32),
}

impl SegmentHeader {
    /// The format version this header is written in.
    pub fn version(&self) -> u32 {
        if self.store_id.is_some() {
            FORMAT_VERSION
        } else {
            FORMAT_VERSION_OLDEST
        }
    }

    pub_for_testing! {
        /// Encodes the header, checksum included: format 2 with a store identity,
        /// format 1 without.
        fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
            let mut bytes = [0u8; SEGMENT_HEADER_BYTES as usize];
            bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
            bytes[8..12].copy_from_slice(&self.version().to_le_bytes());
            bytes[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
            bytes[16..24].copy_from_slice(&self.number.to_le_bytes());
            bytes[24..32].copy_from_slice(&self.lsn_first.to_le_bytes());
            bytes[32..40].copy_from_slice(&self.salt.to_le_bytes());
            bytes[40..48].copy_from_slice(&self.segment_bytes.to_le_bytes());
            if let Some(store_id) = self.store_id {
                bytes[STORE_ID_AT..STORE_ID_AT + 8].copy_from_slice(&store_id.get().to_le_bytes());
                bytes[EPOCH_AT..EPOCH_AT + 4].copy_from_slice(&self.epoch.to_le_bytes());
            }
            let crc = crc32fast::hash(&bytes[..SEGMENT_CRC_AT]);
            bytes[SEGMENT_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
            debug_assert_eq!(SegmentHeader::decode(&bytes), Ok(*self), "a header decodes back");
            bytes
        }
    }

    pub_for_testing! {
        /// Decodes and checks a header of format 1 or 2.
        fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
            if bytes.get(..8) == Some(&SEGMENT_MAGIC[..]) && bytes.len() >= 16 {
                let version = read_u32(bytes, 8);
                if version > FORMAT_VERSION {
                    return Err(later_version(bytes, version));
                }
            }
            let bytes = bytes.get(..SEGMENT_HEADER_BYTES as usize).ok_or(HeaderError::Invalid)?;
            let version = read_u32(bytes, 8);
            let reserved_from = if version == FORMAT_VERSION { SEGMENT_CRC_AT } else { STORE_ID_AT };
            if bytes[0..8] != SEGMENT_MAGIC
                || !(FORMAT_VERSION_OLDEST..=FORMAT_VERSION).contains(&version)
                || u64::from(read_u32(bytes, 12)) != SEGMENT_HEADER_BYTES
                || bytes[reserved_from..SEGMENT_CRC_AT].iter().any(|&b| b != 0)
                || crc32fast::hash(&bytes[..SEGMENT_CRC_AT]) != read_u32(bytes, SEGMENT_CRC_AT)
            {
                return Err(HeaderError::Invalid);
            }
            let (store_id, epoch) = match version {
                FORMAT_VERSION => {
                    let store_id = StoreId::from_u64(read_u64(bytes, STORE_ID_AT)).ok_or(HeaderError::Invalid)?;
                    (Some(store_id), read_u32(bytes, EPOCH_AT))
                }
                _ => (None, 0),
            };
            let header = SegmentHeader {
                number: read_u64(bytes, 16),
                lsn_first: read_u64(bytes, 24),
                salt: read_u64(bytes, 32),
                segment_bytes: read_u64(bytes, 40),
                store_id,
                epoch,
            };
            let sizes_plausible = header.segment_bytes > SEGMENT_HEADER_BYTES && header.segment_bytes <= SEGMENT_BYTES_MAX;
            if header.lsn_first == 0 || !sizes_plausible {
                return Err(HeaderError::Invalid);
            }
            Ok(header)
        }
    }

    /// Largest payload a record of this segment can have: bounded by the
    /// format and by the segment's size, whatever today's configuration says.
    pub fn max_record_bytes(&self) -> u64 {
        let room = self.segment_bytes.saturating_sub(SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES);
        room.min(RECORD_BYTES_MAX)
    }
}

/// A header whose version field is above this build's: a newer format when
/// the header's own size and checksum hold (see `HEADER_BYTES_LATER_MAX`),
/// damage otherwise.
fn later_version(bytes: &[u8], version: u32) -> HeaderError {
    let header_bytes = u64::from(read_u32(bytes, 12));
    if !(SEGMENT_HEADER_BYTES..=HEADER_BYTES_LATER_MAX).contains(&header_bytes) {
        return HeaderError::Invalid;
    }
    let Some(header) = bytes.get(..header_bytes as usize) else { return HeaderError::Invalid };
    let crc_at = header.len() - 4;
    if crc32fast::hash(&header[..crc_at]) == read_u32(header, crc_at) {
        HeaderError::NewerVersion(version)
    } else {
        HeaderError::Invalid
    }
}

/// Appends one record (header, then payload) to `out`.
pub fn encode_record(out: &mut Vec<u8>, header: &SegmentHeader, lsn: Lsn, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&header.salt.to_le_bytes());
    out.extend_from_slice(&header.number.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    // Paired with the read side: the record decodes back, whole, in its own
    // segment. An empty payload is invalid by the format (a batch holds at
    // least one operation), so the engine never writes one; the recovery
    // fuzz target and tests craft one on purpose, and it must read back as
    // invalid, never as a record.
    let decoded = decode_record(&out[start..], header, RECORD_BYTES_MAX);
    if payload.is_empty() {
        debug_assert_eq!(decoded, Decoded::Invalid, "an empty payload is never a record");
    } else {
        let written = Decoded::Valid { lsn, payload, encoded_bytes: encoded_bytes(payload.len()) };
        debug_assert_eq!(decoded, written, "a record decodes back");
    }
}

/// Bytes a record with this payload takes on disk.
pub fn encoded_bytes(payload_bytes: usize) -> u64 {
    RECORD_HEADER_BYTES + payload_bytes as u64
}

/// What is found at one offset of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole record of this segment with a valid checksum.
    Valid {
        /// The record's LSN.
        lsn: Lsn,
        /// The payload bytes.
        payload: &'a [u8],
        /// Total bytes of the record, header included.
        encoded_bytes: u64,
    },
    /// Zeros where a header would be: preallocated space never written.
    Zeroes,
    /// Anything else: a torn or corrupted record, or a stale one from an
    /// earlier use of the file.
    Invalid,
}

/// Decodes the record at the start of `bytes`, which belong to the segment
/// `header`. Never panics and never allocates; a length above
/// `max_record_bytes` is invalid.
pub fn decode_record<'a>(
    bytes: &'a [u8],
    header: &SegmentHeader,
    max_record_bytes: u64,
) -> Decoded<'a> {
    let head_len = RECORD_HEADER_BYTES as usize;
    let Some(head) = bytes.get(..head_len) else {
        return if bytes.iter().all(|&b| b == 0) { Decoded::Zeroes } else { Decoded::Invalid };
    };
    if head.iter().all(|&b| b == 0) {
        return Decoded::Zeroes;
    }
    let payload_bytes = u64::from(read_u32(head, 4));
    if read_u64(head, 16) != header.salt
        || read_u64(head, 24) != header.number
        || payload_bytes == 0
        || payload_bytes > max_record_bytes
    {
        return Decoded::Invalid;
    }
    let Some(record) = bytes.get(..head_len + payload_bytes as usize) else {
        return Decoded::Invalid;
    };
    if crc32fast::hash(&record[4..]) != read_u32(head, 0) {
        return Decoded::Invalid;
    }
    Decoded::Valid {
        lsn: read_u64(head, 8),
        payload: &record[head_len..],
        encoded_bytes: record.len() as u64,
    }
}

/// What a search for a valid record after an invalid one found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// A valid record of this segment starts here (position, LSN).
    Found(u64, Lsn),
    /// No valid record of this segment starts anywhere after position 0.
    NotFound,
    /// The checksum budget ran out at this position: bytes crafted to look
    /// like many overlapping records. Whether valid data follows is unknown.
    Undecided(u64),
}

/// Looks for a valid record of this segment starting anywhere in `bytes`
/// after position 0; returns its position and LSN. Used by recovery to tell a
/// torn tail (nothing valid after the bad record) from mid-log corruption.
#[cfg(any(test, feature = "testing"))]
pub fn find_valid_record_after(
    bytes: &[u8],
    header: &SegmentHeader,
    max_record_bytes: u64,
) -> Option<(u64, Lsn)> {
    let mut unbounded = u64::MAX;
    match search_valid_record(bytes, header, max_record_bytes, &mut unbounded) {
        Search::Found(position, lsn) => Some((position, lsn)),
        Search::NotFound | Search::Undecided(_) => None,
    }
}

/// [`find_valid_record_after`] checksumming at most `checksum_budget` bytes,
/// which it lowers by what it used: no input makes one search, or a series
/// of searches sharing one budget, quadratic.
pub fn search_valid_record(
    bytes: &[u8],
    header: &SegmentHeader,
    max_record_bytes: u64,
    checksum_budget: &mut u64,
) -> Search {
    let salt = header.salt.to_le_bytes();
    let head_len = RECORD_HEADER_BYTES as usize;
    // A record's header is never all zeros, so no record starts after the
    // last non-zero byte: the zero-filled rest of a segment is skipped at
    // memory speed instead of being tried offset by offset.
    let Some(last_non_zero) = bytes.iter().rposition(|&b| b != 0) else { return Search::NotFound };
    let end = bytes.len().saturating_sub(head_len - 1).min(last_non_zero + 1);
    for position in 1..end {
        // The salt sits at bytes 16..24 of a record header; only positions
        // where it matches are worth a checksum.
        if bytes[position + 16..position + 24] != salt {
            continue;
        }
        let claimed = RECORD_HEADER_BYTES + u64::from(read_u32(&bytes[position..], 4));
        if claimed > *checksum_budget {
            *checksum_budget = 0;
            return Search::Undecided(position as u64);
        }
        *checksum_budget -= claimed;
        if let Decoded::Valid { lsn, .. } =
            decode_record(&bytes[position..], header, max_record_bytes)
        {
            return Search::Found(position as u64, lsn);
        }
    }
    Search::NotFound
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SegmentHeader {
        SegmentHeader {
            number: 7,
            lsn_first: 100,
            salt: 0xdead_beef_cafe_f00d,
            segment_bytes: 1 << 20,
            store_id: StoreId::from_u64(0x51),
            epoch: 0xe90c,
        }
    }

    #[test]
    fn header_round_trip_and_every_bit_flip_is_caught() {
        // Encodes a header, decodes it back, then flips each bit in turn and
        // checks the decoder refuses every variant.
        for header in [header(), SegmentHeader { store_id: None, epoch: 0, ..header() }] {
            let bytes = header.encode();
            assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes;
                flipped[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(SegmentHeader::decode(&flipped), Err(HeaderError::Invalid), "bit {bit}");
            }
            assert_eq!(SegmentHeader::decode(&bytes[..63]), Err(HeaderError::Invalid));
        }
        assert_eq!(header().version(), 2);
        assert_eq!(SegmentHeader { store_id: None, epoch: 0, ..header() }.version(), 1);
    }

    #[test]
    fn a_newer_version_is_recognised_only_with_its_own_checksum() {
        // A later format keeps magic, version and header size in place and
        // ends its header with a CRC: such a header is a newer version, not
        // damage. The same header with a bad checksum, or an implausible
        // size, is damage.
        let mut later = vec![0u8; 128];
        later[0..8].copy_from_slice(&SEGMENT_MAGIC);
        later[8..12].copy_from_slice(&3u32.to_le_bytes());
        later[12..16].copy_from_slice(&128u32.to_le_bytes());
        let crc = crc32fast::hash(&later[..124]);
        later[124..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&later), Err(HeaderError::NewerVersion(3)));
        let mut damaged = later.clone();
        damaged[40] ^= 1;
        assert_eq!(SegmentHeader::decode(&damaged), Err(HeaderError::Invalid));
        let mut oversized = later.clone();
        oversized[12..16].copy_from_slice(&8192u32.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&oversized), Err(HeaderError::Invalid));
        assert_eq!(SegmentHeader::decode(&later[..100]), Err(HeaderError::Invalid));
    }

    #[test]
    fn the_payload_bound_comes_from_the_format_and_the_segment() {
        assert_eq!(header().max_record_bytes(), (1 << 20) - 96);
        let huge = SegmentHeader { segment_bytes: SEGMENT_BYTES_MAX, ..header() };
        assert_eq!(huge.max_record_bytes(), RECORD_BYTES_MAX);
    }

    #[test]
    fn record_round_trip_truncation_and_foreign_salt() {
        // A record decodes whole; every truncation is invalid; the same bytes
        // read as part of a segment with another salt or number are invalid.
        let mut bytes = Vec::new();
        encode_record(&mut bytes, &header(), 101, b"payload");
        assert_eq!(
            decode_record(&bytes, &header(), 1024),
            Decoded::Valid { lsn: 101, payload: b"payload", encoded_bytes: 39 }
        );
        for cut in 1..bytes.len() {
            assert_eq!(
                decode_record(&bytes[..cut], &header(), 1024),
                Decoded::Invalid,
                "cut {cut}"
            );
        }
        assert_eq!(
            decode_record(&bytes, &header(), 6),
            Decoded::Invalid,
            "above the payload limit"
        );
        let other = SegmentHeader { salt: 1, ..header() };
        assert_eq!(decode_record(&bytes, &other, 1024), Decoded::Invalid);
        let renumbered = SegmentHeader { number: 8, ..header() };
        assert_eq!(decode_record(&bytes, &renumbered, 1024), Decoded::Invalid);
        assert_eq!(decode_record(&[0; 40], &header(), 1024), Decoded::Zeroes);
        assert_eq!(decode_record(&[0; 3], &header(), 1024), Decoded::Zeroes);
    }

    #[test]
    fn crafted_overlapping_candidates_exhaust_the_budget() {
        // A tail repeating salt and number every 16 bytes makes every other
        // position a candidate claiming a long record: the bounded search
        // gives up instead of checksumming the tail over and over.
        let header = header();
        let mut bytes = vec![0xAB];
        for _ in 0..4096 {
            bytes.extend_from_slice(&header.salt.to_le_bytes());
            bytes.extend_from_slice(&header.number.to_le_bytes());
        }
        let mut budget = 4 * bytes.len() as u64;
        let outcome = search_valid_record(&bytes, &header, 1 << 30, &mut budget);
        assert!(matches!(outcome, Search::Undecided(_)), "{outcome:?}");
        assert_eq!(budget, 0, "an exhausted budget stays exhausted for the next search");
        assert_eq!(search_valid_record(&[0; 100], &header, 1024, &mut 0), Search::NotFound);
    }

    #[test]
    fn finds_a_valid_record_behind_garbage() {
        let mut bytes = vec![0xAB; 50];
        encode_record(&mut bytes, &header(), 102, b"x");
        assert_eq!(find_valid_record_after(&bytes, &header(), 1024), Some((50, 102)));
        assert_eq!(find_valid_record_after(&bytes[..60], &header(), 1024), None);
    }
}
