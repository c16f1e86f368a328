//! The on-disk layout of segments and records, byte by byte as in
//! `docs/FORMAT.md`. Fixed-width little-endian; nothing depends on `usize` or
//! platform layout. Pure functions: no I/O here.

use crate::error::Lsn;

/// The first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"FACTWAL\0";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the segment header; records start right after it.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
/// Bytes of a record header (before its payload).
pub const RECORD_HEADER_BYTES: u64 = 32;

const SEGMENT_CRC_AT: usize = 60;

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
}

impl SegmentHeader {
    /// Encodes the header, checksum included.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES as usize];
        bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
        bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        bytes[16..24].copy_from_slice(&self.number.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.lsn_first.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.salt.to_le_bytes());
        bytes[40..48].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..SEGMENT_CRC_AT]);
        bytes[SEGMENT_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes and checks a header; `None` when anything is off.
    pub fn decode(bytes: &[u8]) -> Option<SegmentHeader> {
        let bytes = bytes.get(..SEGMENT_HEADER_BYTES as usize)?;
        let crc = u32::from_le_bytes(bytes[SEGMENT_CRC_AT..].try_into().ok()?);
        if bytes[0..8] != SEGMENT_MAGIC
            || read_u32(bytes, 8) != FORMAT_VERSION
            || u64::from(read_u32(bytes, 12)) != SEGMENT_HEADER_BYTES
            || bytes[48..SEGMENT_CRC_AT].iter().any(|&b| b != 0)
            || crc32fast::hash(&bytes[..SEGMENT_CRC_AT]) != crc
        {
            return None;
        }
        let header = SegmentHeader {
            number: read_u64(bytes, 16),
            lsn_first: read_u64(bytes, 24),
            salt: read_u64(bytes, 32),
            segment_bytes: read_u64(bytes, 40),
        };
        (header.lsn_first >= 1 && header.segment_bytes > SEGMENT_HEADER_BYTES).then_some(header)
    }
}

/// Appends one framed record to `out`.
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
}

/// Bytes a record with this payload takes on disk.
pub fn record_bytes(payload_bytes: usize) -> u64 {
    RECORD_HEADER_BYTES + payload_bytes as u64
}

/// What is found at one offset of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole record of this segment with a valid checksum.
    Valid {
        /// The record's LSN.
        lsn: Lsn,
        /// The payload bytes.
        payload: &'a [u8],
        /// Total bytes of the record, header included.
        record_bytes: u64,
    },
    /// Zeros where a header would be: preallocated space never written.
    Zeroes,
    /// Anything else: a torn or corrupted record, or a stale one from an
    /// earlier use of the file.
    Invalid,
}

/// Decodes the record at the start of `bytes`, which belong to the segment
/// `header`. Never panics and never allocates; a length above
/// `payload_bytes_max` is invalid.
pub fn decode_record<'a>(bytes: &'a [u8], header: &SegmentHeader, payload_bytes_max: u64) -> Frame<'a> {
    let head_len = RECORD_HEADER_BYTES as usize;
    let Some(head) = bytes.get(..head_len) else {
        return if bytes.iter().all(|&b| b == 0) { Frame::Zeroes } else { Frame::Invalid };
    };
    if head.iter().all(|&b| b == 0) {
        return Frame::Zeroes;
    }
    let payload_bytes = u64::from(read_u32(head, 4));
    if read_u64(head, 16) != header.salt
        || read_u64(head, 24) != header.number
        || payload_bytes == 0
        || payload_bytes > payload_bytes_max
    {
        return Frame::Invalid;
    }
    let Some(record) = bytes.get(..head_len + payload_bytes as usize) else {
        return Frame::Invalid;
    };
    if crc32fast::hash(&record[4..]) != read_u32(head, 0) {
        return Frame::Invalid;
    }
    Frame::Valid { lsn: read_u64(head, 8), payload: &record[head_len..], record_bytes: record.len() as u64 }
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
pub fn find_valid_record_after(bytes: &[u8], header: &SegmentHeader, payload_bytes_max: u64) -> Option<(u64, Lsn)> {
    match search_valid_record(bytes, header, payload_bytes_max, u64::MAX) {
        Search::Found(position, lsn) => Some((position, lsn)),
        Search::NotFound | Search::Undecided(_) => None,
    }
}

/// [`find_valid_record_after`] with at most `checksum_bytes_max` bytes
/// checksummed in all, so that no input makes the search quadratic.
pub fn search_valid_record(
    bytes: &[u8],
    header: &SegmentHeader,
    payload_bytes_max: u64,
    checksum_bytes_max: u64,
) -> Search {
    let salt = header.salt.to_le_bytes();
    let head_len = RECORD_HEADER_BYTES as usize;
    // A record's header is never all zeros, so no record starts after the
    // last non-zero byte: the zero-filled rest of a segment is skipped at
    // memory speed instead of being tried offset by offset.
    let Some(last_non_zero) = bytes.iter().rposition(|&b| b != 0) else { return Search::NotFound };
    let end = bytes.len().saturating_sub(head_len - 1).min(last_non_zero + 1);
    let mut checksummed = 0u64;
    for position in 1..end {
        // The salt sits at bytes 16..24 of a record header; only positions
        // where it matches are worth a checksum.
        if bytes[position + 16..position + 24] != salt {
            continue;
        }
        let claimed = RECORD_HEADER_BYTES + u64::from(read_u32(&bytes[position..], 4));
        checksummed = checksummed.saturating_add(claimed);
        if checksummed > checksum_bytes_max {
            return Search::Undecided(position as u64);
        }
        if let Frame::Valid { lsn, .. } = decode_record(&bytes[position..], header, payload_bytes_max) {
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
        SegmentHeader { number: 7, lsn_first: 100, salt: 0xdead_beef_cafe_f00d, segment_bytes: 1 << 20 }
    }

    #[test]
    fn header_round_trip_and_every_bit_flip_is_caught() {
        // Encodes a header, decodes it back, then flips each bit in turn and
        // checks the decoder refuses every variant.
        let bytes = header().encode();
        assert_eq!(SegmentHeader::decode(&bytes), Some(header()));
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(SegmentHeader::decode(&flipped), None, "bit {bit}");
        }
        assert_eq!(SegmentHeader::decode(&bytes[..63]), None);
    }

    #[test]
    fn record_round_trip_truncation_and_foreign_salt() {
        // A record decodes whole; every truncation is invalid; the same bytes
        // read as part of a segment with another salt or number are invalid.
        let mut bytes = Vec::new();
        encode_record(&mut bytes, &header(), 101, b"payload");
        assert_eq!(
            decode_record(&bytes, &header(), 1024),
            Frame::Valid { lsn: 101, payload: b"payload", record_bytes: 39 }
        );
        for cut in 1..bytes.len() {
            assert_eq!(decode_record(&bytes[..cut], &header(), 1024), Frame::Invalid, "cut {cut}");
        }
        assert_eq!(decode_record(&bytes, &header(), 6), Frame::Invalid, "above the payload limit");
        let other = SegmentHeader { salt: 1, ..header() };
        assert_eq!(decode_record(&bytes, &other, 1024), Frame::Invalid);
        let renumbered = SegmentHeader { number: 8, ..header() };
        assert_eq!(decode_record(&bytes, &renumbered, 1024), Frame::Invalid);
        assert_eq!(decode_record(&[0; 40], &header(), 1024), Frame::Zeroes);
        assert_eq!(decode_record(&[0; 3], &header(), 1024), Frame::Zeroes);
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
        let outcome = search_valid_record(&bytes, &header, 1 << 30, 4 * bytes.len() as u64);
        assert!(matches!(outcome, Search::Undecided(_)), "{outcome:?}");
        assert_eq!(search_valid_record(&[0; 100], &header, 1024, 0), Search::NotFound);
    }

    #[test]
    fn finds_a_valid_record_behind_garbage() {
        let mut bytes = vec![0xAB; 50];
        encode_record(&mut bytes, &header(), 102, b"x");
        assert_eq!(find_valid_record_after(&bytes, &header(), 1024), Some((50, 102)));
        assert_eq!(find_valid_record_after(&bytes[..60], &header(), 1024), None);
    }
}
