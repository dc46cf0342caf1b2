//! Turns the vendored `data/country-codes.csv` into static tables, checking it on the way: a
//! malformed code, a duplicate, or an M49 hierarchy that contradicts itself fails the build.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

struct CountryRow {
    alpha2: String,
    alpha3: String,
    numeric: u16,
    name: String,
    m49: u16,
    region: Option<u16>,
    subregion: Option<u16>,
    intermediate: Option<u16>,
    currencies: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let csv_path = manifest.join("data/country-codes.csv");
    println!("cargo:rerun-if-changed={}", csv_path.display());

    let mut reader = csv::Reader::from_path(&csv_path)?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| -> Result<usize, String> {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("column {name:?} missing"))
    };
    let (c_a2, c_a3, c_num, c_cldr, c_off, c_m49) = (
        column("ISO3166-1-Alpha-2")?,
        column("ISO3166-1-Alpha-3")?,
        column("ISO3166-1-numeric")?,
        column("CLDR display name")?,
        column("official_name_en")?,
        column("M49")?,
    );
    let levels = [
        (column("Region Code")?, column("Region Name")?),
        (column("Sub-region Code")?, column("Sub-region Name")?),
        (
            column("Intermediate Region Code")?,
            column("Intermediate Region Name")?,
        ),
    ];
    let (c_cur, c_minor) = (
        column("ISO4217-currency_alphabetic_code")?,
        column("ISO4217-currency_minor_unit")?,
    );

    let mut countries = Vec::new();
    // code -> (name, level, parent)
    let mut regions: BTreeMap<u16, (String, &str, Option<u16>)> = BTreeMap::new();
    regions.insert(1, ("World".into(), "World", None));
    let mut currencies: BTreeMap<String, u8> = BTreeMap::new();

    for (line, record) in reader.records().enumerate() {
        let record = record?;
        let at = |i: usize| record.get(i).unwrap_or("").trim().to_string();
        let where_ = format!("country-codes.csv row {}", line + 2);
        let alpha3 = at(c_a3);
        if alpha3.is_empty() {
            continue; // Not an ISO 3166-1 entity (none in the current snapshot).
        }
        let alpha2 = at(c_a2);
        check(
            is_upper(&alpha3, 3),
            &where_,
            "alpha-3 is not three letters",
        )?;
        check(is_upper(&alpha2, 2), &where_, "alpha-2 is not two letters")?;
        let numeric: u16 = at(c_num)
            .parse()
            .map_err(|_| format!("{where_}: bad numeric code"))?;
        let m49: u16 = at(c_m49)
            .parse()
            .map_err(|_| format!("{where_}: bad M49 code"))?;
        let name = Some(at(c_cldr))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| at(c_off));
        check(!name.is_empty(), &where_, "no English name")?;

        let mut codes = [None; 3];
        let mut parent = Some(1u16);
        for (slot, (level, &(c_code, c_name))) in ["Region", "Subregion", "Intermediate"]
            .iter()
            .zip(&levels)
            .enumerate()
        {
            let code = at(c_code);
            if code.is_empty() {
                continue;
            }
            let code: u16 = code
                .parse()
                .map_err(|_| format!("{where_}: bad {level} code"))?;
            let entry = regions.entry(code).or_insert((at(c_name), level, parent));
            if entry.1 != *level || entry.2 != parent {
                return Err(format!("{where_}: M49 {code:03} contradicts an earlier row").into());
            }
            codes[slot] = Some(code);
            parent = Some(code);
        }

        let codes_cell = at(c_cur);
        let minors_cell = at(c_minor);
        let mut own = Vec::new();
        if !codes_cell.is_empty() {
            let minors: Vec<&str> = minors_cell.split(',').collect();
            for (i, code) in codes_cell.split(',').enumerate() {
                let code = code.trim().to_string();
                check(
                    is_upper(&code, 3),
                    &where_,
                    "currency code is not three letters",
                )?;
                let minor: u8 = minors
                    .get(i)
                    .and_then(|m| m.trim().parse().ok())
                    .ok_or_else(|| format!("{where_}: no minor unit for {code}"))?;
                if let Some(old) = currencies.insert(code.clone(), minor) {
                    check(
                        old == minor,
                        &where_,
                        "currency minor unit contradicts another row",
                    )?;
                }
                own.push(code);
            }
        }
        countries.push(CountryRow {
            alpha2,
            alpha3,
            numeric,
            name,
            m49,
            region: codes[0],
            subregion: codes[1],
            intermediate: codes[2],
            currencies: own,
        });
    }

    countries.sort_by(|a, b| a.alpha3.cmp(&b.alpha3));
    for pair in countries.windows(2) {
        check(
            pair[0].alpha3 != pair[1].alpha3,
            &pair[1].alpha3,
            "duplicate alpha-3",
        )?;
    }
    check(
        countries.len() > 200,
        "country-codes.csv",
        "fewer than 200 countries",
    )?;
    for code in countries.iter().map(|c| c.m49) {
        check(
            !regions.contains_key(&code),
            "M49",
            "a country code is also a region code",
        )?;
    }

    let mut out = String::from("// Generated by build.rs from data/country-codes.csv.\n\n");
    writeln!(
        out,
        "/// Every ISO 3166-1 country and territory, sorted by alpha-3 code."
    )?;
    writeln!(
        out,
        "pub static COUNTRIES: [Country; {}] = [",
        countries.len()
    )?;
    for c in &countries {
        writeln!(
            out,
            "    Country {{ alpha2: {:?}, alpha3: {:?}, numeric: {}, name: {:?}, m49: {}, \
             region: {:?}, subregion: {:?}, intermediate: {:?}, currencies: &{:?} }},",
            c.alpha2,
            c.alpha3,
            c.numeric,
            c.name,
            c.m49,
            c.region,
            c.subregion,
            c.intermediate,
            c.currencies
        )?;
    }
    out.push_str("];\n\n");
    writeln!(
        out,
        "/// Every UN M49 area above the country level, World included, sorted by code."
    )?;
    writeln!(out, "pub static REGIONS: [Region; {}] = [", regions.len())?;
    for (code, (name, level, parent)) in &regions {
        writeln!(
            out,
            "    Region {{ code: {code}, key: \"{code:03}\", name: {name:?}, \
             level: RegionLevel::{level}, parent: {parent:?} }},"
        )?;
    }
    out.push_str("];\n\n");
    writeln!(
        out,
        "/// Every ISO 4217 currency in use by a country, sorted by code."
    )?;
    writeln!(
        out,
        "pub static CURRENCIES: [Currency; {}] = [",
        currencies.len()
    )?;
    for (code, minor) in &currencies {
        writeln!(
            out,
            "    Currency {{ code: {code:?}, minor_unit: {minor} }},"
        )?;
    }
    out.push_str("];\n\n");

    // Direct-index tables for the hot path: a three-letter code is a number below 26^3.
    let mut alpha3 = vec![u16::MAX; 26 * 26 * 26];
    for (i, c) in countries.iter().enumerate() {
        alpha3[letters_index(&c.alpha3)] = u16::try_from(i)?;
    }
    let mut currency = vec![u16::MAX; 26 * 26 * 26];
    for (i, code) in currencies.keys().enumerate() {
        currency[letters_index(code)] = u16::try_from(i)?;
    }
    for (name, table) in [("ALPHA3_INDEX", &alpha3), ("CURRENCY_INDEX", &currency)] {
        writeln!(out, "pub(crate) static {name}: [u16; 17576] = {table:?};")?;
    }

    let dest = PathBuf::from(std::env::var("OUT_DIR")?).join("tables.rs");
    std::fs::write(dest, out)?;
    Ok(())
}

/// The position of a three-upper-case-letter code in a 26^3 table.
fn letters_index(code: &str) -> usize {
    code.bytes()
        .fold(0, |acc, b| acc * 26 + usize::from(b - b'A'))
}

fn is_upper(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_uppercase())
}

fn check(ok: bool, at: &str, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{at}: {what}"))
    }
}
