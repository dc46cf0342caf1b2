//! Byte-level pieces the read model's codecs share: big-endian integers, 16-byte decimals
//! (`Decimal::serialize`) and length-prefixed names, read through a cursor that fails with
//! `None` rather than panic on a short or malformed value.

use rust_decimal::Decimal;

use crate::ProjectorError;

/// A decimal's stored size (`Decimal::serialize`).
pub(super) const DECIMAL_BYTES: usize = 16;

/// Reads fields off the front of a stored value.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.bytes.split_at_checked(n)?;
        self.bytes = rest;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }

    pub(super) fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_be_bytes)
    }

    pub(super) fn decimal(&mut self) -> Option<Decimal> {
        self.array().map(Decimal::deserialize)
    }

    /// A name written by [`put_name`].
    pub(super) fn name(&mut self) -> Option<&'a [u8]> {
        let len = usize::from(self.u16()?);
        self.take(len)
    }

    /// A name written by [`put_name`], as UTF-8.
    pub(super) fn name_str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.name()?).ok()
    }

    /// A text written by [`put_text`].
    pub(super) fn text(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.u32()?).ok()?;
        std::str::from_utf8(self.take(len)?).ok()
    }
}

/// Writes a name with a u16 length: every name the fold keeps is bounded far below 64 KiB
/// (`limits::NAME_LEN_MAX` and the like), so a longer one is refused rather than cut.
pub(super) fn put_name(out: &mut Vec<u8>, name: &[u8]) -> Result<(), ProjectorError> {
    let len = u16::try_from(name.len()).map_err(|_| {
        ProjectorError::corrupt(format!(
            "a name of {} bytes is too long for the read model",
            name.len()
        ))
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(name);
    Ok(())
}

/// Writes a text with a u32 length (reasons and messages, bounded by `limits::TEXT_LEN_MAX`).
pub(super) fn put_text(out: &mut Vec<u8>, text: &str) -> Result<(), ProjectorError> {
    let len = u32::try_from(text.len())
        .map_err(|_| ProjectorError::corrupt("a text too long for the read model"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

pub(super) fn put_decimal(out: &mut Vec<u8>, value: Decimal) {
    out.extend_from_slice(&value.serialize());
}

/// A length that must fit the u32 field it is stored in (counts and offsets of one value, which
/// sled could not hold anyway past 4 GiB).
pub(super) fn u32_of(n: usize) -> Result<u32, ProjectorError> {
    u32::try_from(n).map_err(|_| ProjectorError::corrupt("a read model value past 4 GiB"))
}

/// The error for a value this build cannot read.
pub(super) fn unreadable(what: &str) -> ProjectorError {
    ProjectorError::corrupt(format!("an unreadable {what} in the read model"))
}

/// Days are stored as their Julian day number: fixed width and ordered.
pub(super) fn date_of(julian: i32) -> Option<time::Date> {
    time::Date::from_julian_day(julian).ok()
}
