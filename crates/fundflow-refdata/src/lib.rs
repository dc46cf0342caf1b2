//! Reference data compiled into the binary: ISO 3166-1 countries (alpha-2, alpha-3, numeric,
//! English short name), the UN M49 hierarchy (region, sub-region, intermediate region, World) and
//! ISO 4217 currencies with their minor units.
//!
//! The tables are generated at build time from the vendored `data/country-codes.csv` (provenance in
//! `data/PROVENANCE.md`), and checked as they are generated: a malformed or contradictory row is a
//! build error, never a runtime surprise. Lookups are allocation-free binary searches over sorted
//! static arrays, so the ledger's fold can call them for every allocation of every event.

/// A level of the UN M49 geographic hierarchy. Every M49 area code belongs to exactly one level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RegionLevel {
    /// `001`, the whole world: the root of the hierarchy and the global total.
    World,
    /// A continent-level region such as `002` Africa.
    Region,
    /// A sub-region such as `202` Sub-Saharan Africa.
    Subregion,
    /// An intermediate region such as `014` Eastern Africa; not every country has one.
    Intermediate,
}

impl RegionLevel {
    /// The name the read API and reports use for this level ("region", "subregion", ...).
    pub fn scope(self) -> &'static str {
        match self {
            RegionLevel::World => "global",
            RegionLevel::Region => "region",
            RegionLevel::Subregion => "subregion",
            RegionLevel::Intermediate => "intermediate",
        }
    }
}

/// A country or territory with an ISO 3166-1 code.
#[derive(Debug, PartialEq, Eq)]
pub struct Country {
    /// ISO 3166-1 alpha-2 code, e.g. `NP`.
    pub alpha2: &'static str,
    /// ISO 3166-1 alpha-3 code, e.g. `NPL`: how fundflow stores and reports a country.
    pub alpha3: &'static str,
    /// ISO 3166-1 numeric code.
    pub numeric: u16,
    /// English short name, e.g. `Nepal`.
    pub name: &'static str,
    /// UN M49 country code (equal to the numeric code for ISO countries).
    pub m49: u16,
    /// M49 region code (level [`RegionLevel::Region`]); `None` for Antarctica.
    pub region: Option<u16>,
    /// M49 sub-region code.
    pub subregion: Option<u16>,
    /// M49 intermediate region code, where the country has one.
    pub intermediate: Option<u16>,
    /// ISO 4217 codes of the currencies in use.
    pub currencies: &'static [&'static str],
}

impl Country {
    /// The M49 areas this country rolls up into, innermost first, ending with World (`001`).
    pub fn ancestors(&self) -> impl Iterator<Item = u16> + '_ {
        [self.intermediate, self.subregion, self.region, Some(WORLD)]
            .into_iter()
            .flatten()
    }
}

/// A UN M49 area above the country level.
#[derive(Debug, PartialEq, Eq)]
pub struct Region {
    /// The M49 code as a number, e.g. `14`.
    pub code: u16,
    /// The M49 code as fundflow writes it: three digits, e.g. `014`.
    pub key: &'static str,
    /// English name, e.g. `Eastern Africa`.
    pub name: &'static str,
    /// Which level of the hierarchy the area is.
    pub level: RegionLevel,
    /// The enclosing area; `None` only for World.
    pub parent: Option<u16>,
}

/// An ISO 4217 currency.
#[derive(Debug, PartialEq, Eq)]
pub struct Currency {
    /// Alphabetic code, e.g. `USD`.
    pub code: &'static str,
    /// How many decimals an amount may have: 2 for USD, 0 for JPY, 3 for KWD.
    pub minor_unit: u8,
}

/// M49 code of the World, the root area and the key of the global total.
pub const WORLD: u16 = 1;

mod tables {
    #![allow(clippy::large_const_arrays, clippy::large_stack_arrays)]
    use super::{Country, Currency, Region, RegionLevel};
    include!(concat!(env!("OUT_DIR"), "/tables.rs"));
}

pub use tables::{COUNTRIES, CURRENCIES, REGIONS};

/// Looks a three-upper-case-letter code up in a direct-index table (no search, no comparison).
fn by_letters(table: &[u16; 17576], code: &str) -> Option<u16> {
    let bytes: &[u8; 3] = code.as_bytes().try_into().ok()?;
    let mut index = 0usize;
    for &b in bytes {
        if !b.is_ascii_uppercase() {
            return None;
        }
        index = index * 26 + usize::from(b - b'A');
    }
    table.get(index).copied().filter(|&i| i != u16::MAX)
}

/// Index of a country in [`COUNTRIES`]: a compact, copyable handle for hot paths.
pub type CountryIndex = u16;
/// Index of an M49 area in [`REGIONS`].
pub type RegionIndex = u16;
/// Index of a currency in [`CURRENCIES`].
pub type CurrencyIndex = u16;

/// Finds a country by its alpha-3 code (upper case, exactly as stored).
pub fn country_by_alpha3(code: &str) -> Option<CountryIndex> {
    by_letters(&tables::ALPHA3_INDEX, code)
}

/// Finds a country by its alpha-2 code (upper case), for inputs that use the two-letter form.
pub fn country_by_alpha2(code: &str) -> Option<CountryIndex> {
    index(COUNTRIES.iter().position(|c| c.alpha2 == code))
}

/// Finds an M49 area by its three-digit code (`"014"`, `"001"`).
pub fn region_by_key(key: &str) -> Option<RegionIndex> {
    if key.len() != 3 || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = key.parse().ok()?;
    region_by_code(code)
}

/// Finds an M49 area by its numeric code.
pub fn region_by_code(code: u16) -> Option<RegionIndex> {
    index(REGIONS.binary_search_by(|r| r.code.cmp(&code)).ok())
}

/// Finds a currency by its alphabetic code.
pub fn currency_by_code(code: &str) -> Option<CurrencyIndex> {
    by_letters(&tables::CURRENCY_INDEX, code)
}

fn index(position: Option<usize>) -> Option<u16> {
    position.and_then(|i| u16::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(key: &str) -> &'static Region {
        &REGIONS[usize::from(region_by_key(key).unwrap())]
    }

    fn country(alpha3: &str) -> &'static Country {
        &COUNTRIES[usize::from(country_by_alpha3(alpha3).unwrap())]
    }

    #[test]
    fn tanzania_rolls_up_through_eastern_africa() {
        let tza = country("TZA");
        assert_eq!((tza.alpha2, tza.numeric, tza.name), ("TZ", 834, "Tanzania"));
        let ancestors: Vec<_> = tza
            .ancestors()
            .map(|c| region_by_code(c).unwrap())
            .collect();
        let keys: Vec<_> = ancestors
            .iter()
            .map(|&i| REGIONS[usize::from(i)].key)
            .collect();
        assert_eq!(keys, ["014", "202", "002", "001"]);
        assert_eq!(region("014").name, "Eastern Africa");
        assert_eq!(region("202").level, RegionLevel::Subregion);
    }

    #[test]
    fn brazil_is_in_south_america_and_latin_america() {
        let bra = country("BRA");
        assert_eq!(
            (bra.intermediate, bra.subregion, bra.region),
            (Some(5), Some(419), Some(19))
        );
        assert_eq!(region("005").name, "South America");
        assert_eq!(region("419").name, "Latin America and the Caribbean");
        assert_eq!(region("019").name, "Americas");
    }

    #[test]
    fn nepal_has_no_intermediate_region() {
        let npl = country("NPL");
        assert_eq!(npl.ancestors().collect::<Vec<_>>(), [34, 142, 1]);
    }

    #[test]
    fn currencies_carry_their_minor_units() {
        let minor = |c: &str| CURRENCIES[usize::from(currency_by_code(c).unwrap())].minor_unit;
        assert_eq!(
            (minor("USD"), minor("JPY"), minor("KWD"), minor("EUR")),
            (2, 0, 3, 2)
        );
        assert_eq!(currency_by_code("XXX"), None);
        assert_eq!(currency_by_code("usd"), None);
    }

    #[test]
    fn lookups_reject_what_is_not_a_code() {
        assert_eq!(country_by_alpha3("ZZZ"), None);
        assert_eq!(country_by_alpha3("npl"), None);
        assert_eq!(country_by_alpha2("NP"), country_by_alpha3("NPL"));
        assert_eq!(region_by_key("14"), None);
        assert_eq!(region_by_key("+14"), None);
        assert_eq!(region_by_key("999"), None);
        assert_eq!(region("001").level, RegionLevel::World);
    }

    #[test]
    fn every_area_chain_ends_at_world() {
        for area in &REGIONS {
            let mut code = Some(area.code);
            let mut steps = 0;
            while let Some(c) = code.filter(|&c| c != WORLD) {
                code = REGIONS[usize::from(region_by_code(c).unwrap())].parent;
                steps += 1;
                assert!(steps < 4, "{} does not reach World", area.key);
            }
            assert_eq!(code, Some(WORLD), "{}", area.key);
        }
    }
}
