//! Length-delimited records: each record is a protobuf varint length followed by that many
//! bytes, one after another, as prost's `encode_length_delimited` writes them.
//!
//! The reader streams: it holds one record at a time, so memory stays flat however long the file
//! is, and it refuses a record longer than [`MAX_RECORD_BYTES`] instead of allocating for it.

use std::io::{self, BufRead, Write};

/// The largest record the reader accepts. A length prefix above it is corruption, not an event:
/// envelopes are limited far below this by the domain's validation.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Why a record file could not be read further.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    /// The underlying reader failed; the caller reports it and stops.
    #[error("reading the record file failed")]
    Io(#[from] io::Error),
    /// The file ends inside a length prefix or a record body: it was cut short.
    #[error("record {index} is truncated: the file ends inside it")]
    Truncated {
        /// 1-based position of the record in the file.
        index: u64,
    },
    /// A length prefix is not a valid varint or is larger than [`MAX_RECORD_BYTES`].
    #[error("record {index} has an invalid length prefix ({detail})")]
    BadLength {
        /// 1-based position of the record in the file.
        index: u64,
        /// What is wrong with the prefix.
        detail: String,
    },
}

/// Streams the records of a length-delimited file.
pub struct RecordReader<R> {
    /// The buffered source; `fill_buf` lets the varint be read without a byte-at-a-time syscall.
    inner: R,
    /// How many records were returned so far, so errors can name the record.
    index: u64,
}

impl<R: BufRead> RecordReader<R> {
    /// Wraps a buffered reader positioned at the first record.
    pub fn new(inner: R) -> Self {
        RecordReader { inner, index: 0 }
    }

    /// Reads the next record into `buf` (replacing its contents). Returns `Ok(false)` at a clean
    /// end of file, that is, at a record boundary.
    pub fn read_into(&mut self, buf: &mut Vec<u8>) -> Result<bool, FramingError> {
        let index = self.index + 1;
        let Some(len) = self.read_length(index)? else {
            return Ok(false);
        };
        buf.clear();
        buf.resize(len, 0);
        self.inner.read_exact(buf).map_err(|err| match err.kind() {
            io::ErrorKind::UnexpectedEof => FramingError::Truncated { index },
            _ => FramingError::Io(err),
        })?;
        self.index = index;
        Ok(true)
    }

    /// The varint length prefix, or `None` at a clean end of file.
    fn read_length(&mut self, index: u64) -> Result<Option<usize>, FramingError> {
        let mut value: u64 = 0;
        for position in 0..10u32 {
            let byte = match self.inner.fill_buf()?.first() {
                Some(&byte) => byte,
                None if position == 0 => return Ok(None),
                None => return Err(FramingError::Truncated { index }),
            };
            self.inner.consume(1);
            value |= u64::from(byte & 0x7f) << (7 * position);
            if byte & 0x80 == 0 {
                return usize::try_from(value)
                    .ok()
                    .filter(|&len| len <= MAX_RECORD_BYTES)
                    .map(Some)
                    .ok_or_else(|| FramingError::BadLength {
                        index,
                        detail: format!("{value} bytes is more than {MAX_RECORD_BYTES}"),
                    });
            }
        }
        Err(FramingError::BadLength {
            index,
            detail: "varint longer than 10 bytes".into(),
        })
    }
}

impl<R: BufRead> Iterator for RecordReader<R> {
    type Item = Result<Vec<u8>, FramingError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut buf = Vec::new();
        self.read_into(&mut buf)
            .map(|more| more.then_some(buf))
            .transpose()
    }
}

/// Appends one record (length prefix and bytes) to `out`.
pub fn write_record(out: &mut impl Write, record: &[u8]) -> io::Result<()> {
    let mut prefix = Vec::with_capacity(10);
    prost::encoding::encode_varint(record.len() as u64, &mut prefix);
    out.write_all(&prefix)?;
    out.write_all(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_all(records: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for record in records {
            write_record(&mut out, record).unwrap();
        }
        out
    }

    #[test]
    fn reads_back_what_was_written() {
        let long = vec![7u8; 300];
        let bytes = write_all(&[b"a", b"", &long]);
        let records: Vec<Vec<u8>> = RecordReader::new(&bytes[..])
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records, vec![b"a".to_vec(), Vec::new(), long]);
    }

    #[test]
    fn matches_prost_length_delimited_encoding() {
        use prost::Message;
        let envelope = crate::v1::Envelope {
            event_id: "x".into(),
            ..Default::default()
        };
        let mut ours = Vec::new();
        write_record(&mut ours, &envelope.encode_to_vec()).unwrap();
        assert_eq!(ours, envelope.encode_length_delimited_to_vec());
    }

    #[test]
    fn truncated_body_names_the_record() {
        let mut bytes = write_all(&[b"first", b"second"]);
        bytes.pop();
        let results: Vec<_> = RecordReader::new(&bytes[..]).collect();
        assert!(matches!(results[0], Ok(ref r) if r == b"first"));
        assert!(matches!(
            results[1],
            Err(FramingError::Truncated { index: 2 })
        ));
    }

    #[test]
    fn oversized_length_is_refused_without_allocating() {
        let mut bytes = Vec::new();
        prost::encoding::encode_varint(u64::MAX, &mut bytes);
        let err = RecordReader::new(&bytes[..]).next().unwrap().unwrap_err();
        assert!(
            matches!(err, FramingError::BadLength { index: 1, .. }),
            "{err}"
        );
    }
}
