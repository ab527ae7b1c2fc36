//! The bytes of one segment object as the Parquet reader sees them: either the whole object
//! or only the byte ranges a read needs (its footer and the column chunks it decodes),
//! fetched through the storage seam in one request before decoding starts.

use std::ops::Range;

use bytes::{Buf, Bytes};
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};

/// Fetched ranges of an object of `size` bytes; reading outside them is an error (a read
/// plan that missed a range), never a silent zero.
#[derive(Debug, Clone)]
pub struct SegmentBytes {
    size: u64,
    /// Sorted by start, not overlapping.
    ranges: Vec<(u64, Bytes)>,
}

impl SegmentBytes {
    /// The whole object.
    pub fn whole(bytes: Bytes) -> Self {
        Self {
            size: bytes.len() as u64,
            ranges: vec![(0, bytes)],
        }
    }

    /// Some ranges of an object of `size` bytes.
    pub(crate) fn sparse(size: u64, fetched: impl IntoIterator<Item = (u64, Bytes)>) -> Self {
        let mut ranges: Vec<(u64, Bytes)> = fetched.into_iter().collect();
        ranges.sort_by_key(|(start, _)| *start);
        Self { size, ranges }
    }

    /// The whole object's bytes, if this is the whole object.
    pub fn as_whole(&self) -> Option<&Bytes> {
        match self.ranges.as_slice() {
            [(0, bytes)] if bytes.len() as u64 == self.size => Some(bytes),
            _ => None,
        }
    }

    /// The fetched bytes from `start` to the end of a range that holds `start..start + len`
    /// (ranges may overlap: the footer's is fetched first, on its own).
    fn from(&self, start: u64, len: u64) -> Result<Bytes, ParquetError> {
        let before = self.ranges.partition_point(|(s, _)| *s <= start);
        self.ranges[..before]
            .iter()
            .rev()
            .find(|(first, bytes)| first + bytes.len() as u64 >= start + len)
            .map(|(first, bytes)| bytes.slice((start - first) as usize..))
            .ok_or_else(|| {
                ParquetError::General(format!(
                    "bytes {start}..{} of the segment were not fetched (a read plan missed them)",
                    start + len
                ))
            })
    }
}

/// Merges byte ranges that touch or overlap, so one fetch covers them.
pub(crate) fn coalesce(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.retain(|r| !r.is_empty());
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

impl Length for SegmentBytes {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for SegmentBytes {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> Result<Self::T, ParquetError> {
        Ok(self.from(start, 0)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        Ok(self.from(start, length as u64)?.slice(..length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inside_fetched_ranges_succeed_and_reads_outside_them_fail() {
        let bytes = SegmentBytes::sparse(
            100,
            [
                (90, Bytes::from_static(b"0123456789")),
                (10, Bytes::from_static(b"abcd")),
            ],
        );
        assert_eq!(bytes.get_bytes(11, 2).unwrap(), Bytes::from_static(b"bc"));
        assert_eq!(
            bytes.get_bytes(95, 5).unwrap(),
            Bytes::from_static(b"56789")
        );
        assert!(bytes.get_bytes(12, 5).is_err(), "past the end of a range");
        assert!(bytes.get_bytes(0, 1).is_err(), "before the first range");
        assert!(bytes.get_bytes(50, 1).is_err(), "between ranges");
        assert!(bytes.as_whole().is_none());
        let overlapping = SegmentBytes::sparse(
            20,
            [
                (0, Bytes::from_static(b"0123456789")),
                (5, Bytes::from_static(b"56")),
            ],
        );
        assert_eq!(
            overlapping.get_bytes(5, 4).unwrap(),
            Bytes::from_static(b"5678")
        );
        let whole = SegmentBytes::whole(Bytes::from_static(b"xyz"));
        assert_eq!(whole.as_whole(), Some(&Bytes::from_static(b"xyz")));
        assert_eq!(whole.get_bytes(1, 2).unwrap(), Bytes::from_static(b"yz"));
    }

    #[test]
    fn touching_and_overlapping_ranges_are_fetched_once() {
        assert_eq!(
            coalesce(vec![5..8, 0..2, 2..4, 7..9, 20..20]),
            vec![0..4, 5..9]
        );
    }
}
