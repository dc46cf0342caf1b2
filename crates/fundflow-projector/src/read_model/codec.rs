//! Byte-level pieces the read model's codecs share: big-endian integers, 16-byte decimals
//! (`Decimal::serialize`), packed decimals, and length-prefixed names, read through a cursor
//! that fails with `None` rather than panic on a short or malformed value.

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

    /// A decimal written by [`put_packed_decimal`]: exactly the value written, sign and scale
    /// included; `None` for a scale past 28 or a mantissa past 96 bits.
    pub(super) fn packed_decimal(&mut self) -> Option<Decimal> {
        let head = self.u8()?;
        let scale = head & PACKED_SCALE_MASK;
        if head & !(PACKED_NEGATIVE | PACKED_SCALE_MASK) != 0 || u32::from(scale) > MAX_SCALE {
            return None;
        }
        let mut mantissa: u128 = 0;
        let mut shift = 0u32;
        loop {
            let byte = self.u8()?;
            let bits = u128::from(byte & 0x7f);
            // 96 bits is 14 groups of 7; a 14th group may only hold the top 5 bits.
            if shift >= 98 || (shift == 91 && bits >> 5 != 0) {
                return None;
            }
            mantissa |= bits << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let mut flags = u32::from(scale) << 16;
        if head & PACKED_NEGATIVE != 0 {
            flags |= 1 << 31;
        }
        let mut bytes = [0u8; DECIMAL_BYTES];
        bytes[..4].copy_from_slice(&flags.to_le_bytes());
        // The low 96 bits, as `Decimal::serialize` lays them out (lo, mid, hi, little-endian).
        bytes[4..].copy_from_slice(&mantissa.to_le_bytes()[..12]);
        Some(Decimal::deserialize(bytes))
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

/// The sign bit and the scale bits of a packed decimal's first byte.
const PACKED_NEGATIVE: u8 = 0x80;
const PACKED_SCALE_MASK: u8 = 0x1f;
/// `Decimal`'s largest scale.
const MAX_SCALE: u32 = 28;

/// Writes a decimal in 2 to 15 bytes: one byte of sign and scale, then the 96-bit mantissa as
/// LEB128. Cells hold amounts of a few digits, so their three sums take about 12 bytes instead
/// of 48: cells are most of what the projector writes, and sled's write rate is what bounds it.
/// The value read back is bit for bit the one written (a negative zero and trailing zeros
/// included), as with [`put_decimal`].
pub(super) fn put_packed_decimal(out: &mut Vec<u8>, value: Decimal) {
    let bytes = value.serialize();
    // `serialize` writes its flags little-endian: the scale (at most 28) in the third byte, the
    // sign in the top bit of the fourth.
    let scale = bytes[2] & PACKED_SCALE_MASK;
    let negative = bytes[3] & PACKED_NEGATIVE;
    out.push(negative | scale);
    let mut wide = [0u8; 16];
    wide[..12].copy_from_slice(&bytes[4..]);
    let mut mantissa = u128::from_le_bytes(wide);
    loop {
        let low = mantissa.to_le_bytes()[0] & 0x7f;
        mantissa >>= 7;
        if mantissa == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(value: Decimal) -> (Decimal, usize) {
        let mut out = Vec::new();
        put_packed_decimal(&mut out, value);
        let mut reader = Reader::new(&out);
        let back = reader
            .packed_decimal()
            .expect("a packed decimal reads back");
        assert!(reader.is_empty(), "{value}: bytes left over");
        (back, out.len())
    }

    #[test]
    fn packed_decimals_read_back_bit_for_bit() {
        let mut negative_zero = Decimal::new(0, 2);
        negative_zero.set_sign_negative(true);
        for value in [
            Decimal::ZERO,
            Decimal::new(0, 2),
            negative_zero,
            Decimal::new(125050, 2),
            Decimal::new(-125050, 2),
            Decimal::MAX,
            Decimal::MIN,
            Decimal::new(1, 28),
        ] {
            let (back, _) = round_trip(value);
            assert_eq!(back.serialize(), value.serialize(), "{value}");
        }
        // What cells hold: amounts of a few digits at two decimals.
        assert_eq!(round_trip(Decimal::new(6_470_000, 2)).1, 5);
        assert_eq!(round_trip(Decimal::ZERO).1, 2);
        assert_eq!(round_trip(Decimal::MAX).1, 15);
    }

    #[test]
    fn malformed_packed_decimals_are_refused() {
        for bytes in [
            &[][..],
            &[29, 0][..],   // scale 29
            &[0x40, 0][..], // a flag bit no decimal has
            &[2, 0x80][..], // the mantissa cut short
            &[
                0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0x20,
            ][..], // 97 bits
            &[
                0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                0x80, 0,
            ][..], // 15 groups
        ] {
            assert_eq!(Reader::new(bytes).packed_decimal(), None, "{bytes:?}");
        }
    }

    proptest! {
        #[test]
        fn any_decimal_reads_back_bit_for_bit(lo: u32, mid: u32, hi: u32, negative: bool, scale in 0u32..=28) {
            let value = Decimal::from_parts(lo, mid, hi, negative, scale);
            let (back, len) = round_trip(value);
            prop_assert_eq!(back.serialize(), value.serialize());
            prop_assert!(len <= 15);
        }
    }
}
