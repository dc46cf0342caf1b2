//! The fold's whole state as bytes, so that a projector restarts from where it stopped instead
//! of refolding the log from sequence 1.
//!
//! [`write`] encodes a [`Ledger`] with postcard (a compact serde format) into any writer the
//! caller hands it, and [`read`] decodes one. The encoding is this build's: it starts with
//! [`FORMAT`] and the sizes of the reference tables the state indexes into, and [`read`] refuses
//! bytes of another format or other tables rather than guess. Every country, area and currency
//! index is checked as it is decoded, so that no decoded key can index past a table.
//!
//! What this module does not do is decide whether bytes can be trusted: the caller keeps a
//! digest of what it wrote and checks it before it uses a decoded ledger (the projector's
//! snapshot file does), and a decoded ledger is only ever a starting point for a fold whose
//! checkpoint is compared with the read model's. The serde impls of the state's types exist for
//! this encoding only: decimals are their 16 raw bytes, not strings, so they are no API.

use std::io;

use fundflow_refdata::{COUNTRIES, CURRENCIES, REGIONS};
use serde::{Deserialize, Serialize};

use crate::Ledger;
use crate::reject::RejectCode;

/// The version of the encoding. Bump it with any change to a type the ledger's state holds.
pub const FORMAT: u32 = 3;

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The writer or reader failed.
    #[error("cannot {doing} the fold's state: {source}")]
    Io {
        /// "write" or "read".
        doing: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The bytes are of another format version or were written against other reference data.
    #[error(
        "the fold's state was written by another build (format {found}, this build reads {expected})"
    )]
    OtherBuild {
        /// What the bytes say.
        found: String,
        /// What this build writes.
        expected: String,
    },
    /// The bytes do not decode as a ledger's state.
    #[error("the fold's state does not decode: {0}")]
    Malformed(String),
}

/// What a snapshot's first bytes say: the format and the reference tables it was written
/// against, whose indexes it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Layout {
    format: u32,
    countries: u32,
    regions: u32,
    currencies: u32,
    reject_codes: u32,
}

impl Layout {
    fn this_build() -> Layout {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Layout {
            format: FORMAT,
            countries: count(COUNTRIES.len()),
            regions: count(REGIONS.len()),
            currencies: count(CURRENCIES.len()),
            reject_codes: count(RejectCode::ALL.len()),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{}, {} countries, {} areas, {} currencies, {} rejection codes",
            self.format, self.countries, self.regions, self.currencies, self.reject_codes
        )
    }
}

/// Writes `ledger`'s state to `out` and returns the writer.
pub fn write<W: io::Write>(ledger: &Ledger, out: W) -> Result<W, SnapshotError> {
    let encoded =
        postcard::to_io(&Layout::this_build(), out).and_then(|out| postcard::to_io(ledger, out));
    // postcard reports the writer's failure as its own error (a full buffer), without the
    // I/O error: the writer failing is all an encoding of our own types can fail by.
    encoded.map_err(|err| SnapshotError::Io {
        doing: "write",
        source: io::Error::other(err),
    })
}

/// The longest string a snapshot holds (a rejection's message, an interned name); a longer one
/// is malformed. Decoding a string needs a scratch buffer of this size.
const STRING_BYTES_MAX: usize = 1 << 20;

/// Reads a ledger's state written by [`write`] from `input`, consuming exactly its bytes.
pub fn read<R: io::Read>(input: R) -> Result<Ledger, SnapshotError> {
    let mut scratch = vec![0u8; STRING_BYTES_MAX];
    let malformed = |err: postcard::Error| SnapshotError::Malformed(err.to_string());
    let (layout, (input, _)) =
        postcard::from_io::<Layout, _>((input, &mut scratch[..])).map_err(malformed)?;
    let expected = Layout::this_build();
    if layout != expected {
        return Err(SnapshotError::OtherBuild {
            found: layout.describe(),
            expected: expected.describe(),
        });
    }
    let (ledger, _) =
        postcard::from_io::<Ledger, _>((input, &mut scratch[..])).map_err(malformed)?;
    ledger
        .check_references()
        .map_err(SnapshotError::Malformed)?;
    Ok(ledger)
}

/// A decimal as its 16 raw bytes (`Decimal::serialize`), for `#[serde(with)]`.
pub(crate) mod decimal {
    use rust_decimal::Decimal;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    // `with` hands a reference to the field.
    #[allow(clippy::trivially_copy_pass_by_ref)]
    pub(crate) fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        value.serialize().serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let bytes = <[u8; 16]>::deserialize(d)?;
        let value = Decimal::deserialize(bytes);
        // The flags' scale bits can say more than rust_decimal's maximum; such bytes are no
        // decimal it wrote.
        if value.scale() > Decimal::MAX_SCALE {
            return Err(D::Error::custom("a decimal's scale is out of range"));
        }
        Ok(value)
    }
}

/// A decimal packed for the effects' arena, for `#[serde(with)]`: a byte with its sign (top
/// bit) and scale, then its 96-bit mantissa as an integer, which postcard writes as a varint
/// (an amount like `250.00` takes 4 bytes, not 16).
pub(crate) mod packed_decimal {
    use rust_decimal::Decimal;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    const NEGATIVE: u8 = 0x80;

    // `with` hands a reference to the field.
    #[allow(clippy::trivially_copy_pass_by_ref)]
    pub(crate) fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        // `Decimal::serialize` is four flag bytes (the scale in the third, the sign in the top
        // bit of the fourth) and the mantissa's 12 bytes, little-endian.
        let raw = value.serialize();
        let mut wide = [0u8; 16];
        wide[..12].copy_from_slice(&raw[4..]);
        (raw[2] | (raw[3] & NEGATIVE), u128::from_le_bytes(wide)).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let (flags, mantissa) = <(u8, u128)>::deserialize(d)?;
        let scale = u32::from(flags & !NEGATIVE);
        if mantissa >> 96 != 0 || scale > Decimal::MAX_SCALE {
            return Err(D::Error::custom("a packed decimal is out of range"));
        }
        // Back into `Decimal::serialize`'s layout, so that every bit (a negative zero's sign
        // too) comes back as it was.
        let mut raw = [0u8; 16];
        raw[2] = flags & !NEGATIVE;
        raw[3] = flags & NEGATIVE;
        raw[4..].copy_from_slice(&mantissa.to_le_bytes()[..12]);
        Ok(Decimal::deserialize(raw))
    }
}

/// An optional packed decimal, likewise.
pub(crate) mod packed_decimal_option {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Packed(#[serde(with = "super::packed_decimal")] Decimal);

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Decimal>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        value.map(Packed).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Decimal>, D::Error> {
        Ok(Option::<Packed>::deserialize(d)?.map(|Packed(value)| value))
    }
}

/// An optional decimal, likewise.
pub(crate) mod decimal_option {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Raw(#[serde(with = "super::decimal")] Decimal);

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Decimal>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        value.map(Raw).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Decimal>, D::Error> {
        Ok(Option::<Raw>::deserialize(d)?.map(|Raw(value)| value))
    }
}

/// A currency index, checked against the table as it is decoded, for `#[serde(with)]`.
pub(crate) mod currency {
    use fundflow_refdata::{CURRENCIES, CurrencyIndex};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &CurrencyIndex, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(*value)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CurrencyIndex, D::Error> {
        let index = CurrencyIndex::deserialize(d)?;
        if usize::from(index) >= CURRENCIES.len() {
            return Err(D::Error::custom("a currency index is out of range"));
        }
        Ok(index)
    }
}

/// A map keyed by (an interned id, a currency), as the parallel funding per grant is: written as
/// a sequence of entries, each currency checked as it is decoded.
pub(crate) mod by_id_and_currency {
    use fundflow_refdata::CurrencyIndex;
    use rustc_hash::FxHashMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::values::Total;

    #[derive(Serialize)]
    struct EntryRef<'a>(u32, CurrencyIndex, &'a Total);

    #[derive(Deserialize)]
    struct Entry(u32, #[serde(with = "super::currency")] CurrencyIndex, Total);

    pub(crate) fn serialize<S: Serializer>(
        map: &FxHashMap<(u32, CurrencyIndex), Total>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            map.iter()
                .map(|(&(id, currency), total)| EntryRef(id, currency, total)),
        )
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<FxHashMap<(u32, CurrencyIndex), Total>, D::Error> {
        let entries = Vec::<Entry>::deserialize(d)?;
        Ok(entries
            .into_iter()
            .map(|Entry(id, currency, total)| ((id, currency), total))
            .collect())
    }
}

/// A decimal wrapped so that it can sit in a map or a sequence with the encoding of
/// [`decimal`].
#[derive(Serialize, Deserialize)]
struct RawDecimal(#[serde(with = "decimal")] rust_decimal::Decimal);

/// A map of decimals, each as [`decimal`], for `#[serde(with)]`.
pub(crate) mod decimal_map {
    use std::hash::Hash;

    use rust_decimal::Decimal;
    use rustc_hash::FxHashMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::RawDecimal;

    pub(crate) fn serialize<K: Serialize, S: Serializer>(
        map: &FxHashMap<K, Decimal>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k, RawDecimal(*v))))
    }

    pub(crate) fn deserialize<'de, K, D>(d: D) -> Result<FxHashMap<K, Decimal>, D::Error>
    where
        K: Deserialize<'de> + Eq + Hash,
        D: Deserializer<'de>,
    {
        let map = FxHashMap::<K, RawDecimal>::deserialize(d)?;
        Ok(map.into_iter().map(|(k, RawDecimal(v))| (k, v)).collect())
    }
}

/// A map of maps of decimals (the quantity cells by block), likewise.
pub(crate) mod nested_decimal_map {
    use std::hash::Hash;

    use rust_decimal::Decimal;
    use rustc_hash::FxHashMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct Inner<'a, K>(&'a FxHashMap<K, Decimal>);

    impl<K: Serialize> Serialize for Inner<'_, K> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            super::decimal_map::serialize(self.0, s)
        }
    }

    #[derive(Deserialize)]
    #[serde(bound = "K: Deserialize<'de> + Eq + Hash")]
    struct Owned<K>(
        #[serde(deserialize_with = "super::decimal_map::deserialize")] FxHashMap<K, Decimal>,
    );

    pub(crate) fn serialize<B: Serialize, K: Serialize, S: Serializer>(
        map: &FxHashMap<B, FxHashMap<K, Decimal>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(b, inner)| (b, Inner(inner))))
    }

    pub(crate) fn deserialize<'de, B, K, D>(
        d: D,
    ) -> Result<FxHashMap<B, FxHashMap<K, Decimal>>, D::Error>
    where
        B: Deserialize<'de> + Eq + Hash,
        K: Deserialize<'de> + Eq + Hash,
        D: Deserializer<'de>,
    {
        let map = FxHashMap::<B, Owned<K>>::deserialize(d)?;
        Ok(map
            .into_iter()
            .map(|(b, Owned(inner))| (b, inner))
            .collect())
    }
}

/// A large map, decoded into a table sized for its length at once: serde's own impl reserves
/// cautiously and grows by doubling, which for the event index of ten million events spent
/// most of a start in rehashing and in faulting in tables it then dropped. The length is
/// capped like every capacity hint ([`crate::limits::CAPACITY_HINT_MAX`]), so that a damaged
/// length cannot reserve more than a hint could.
pub(crate) mod presized_map {
    use std::fmt;
    use std::hash::Hash;
    use std::marker::PhantomData;

    use rustc_hash::FxHashMap;
    use serde::de::{MapAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &FxHashMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map)
    }

    pub(crate) fn deserialize<'de, K, V, D>(d: D) -> Result<FxHashMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        struct Entries<K, V>(PhantomData<(K, V)>);
        impl<'de, K, V> Visitor<'de> for Entries<K, V>
        where
            K: Deserialize<'de> + Eq + Hash,
            V: Deserialize<'de>,
        {
            type Value = FxHashMap<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                let len = entries
                    .size_hint()
                    .unwrap_or(0)
                    .min(crate::limits::CAPACITY_HINT_MAX);
                let mut map = FxHashMap::with_capacity_and_hasher(len, Default::default());
                while let Some((key, value)) = entries.next_entry()? {
                    map.insert(key, value);
                }
                Ok(map)
            }
        }
        d.deserialize_map(Entries(PhantomData))
    }
}

/// A large vector, likewise.
pub(crate) mod presized_vec {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<T: Serialize, S: Serializer>(
        items: &[T],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(items)
    }

    pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<Vec<T>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        struct Items<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Items<T> {
            type Value = Vec<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
                let len = items
                    .size_hint()
                    .unwrap_or(0)
                    .min(crate::limits::CAPACITY_HINT_MAX);
                let mut out = Vec::with_capacity(len);
                while let Some(item) = items.next_element()? {
                    out.push(item);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Items(PhantomData))
    }
}
