//! Synthetic fundflow logs for tests and benchmarks: envelope builders for hand-written cases, and
//! [`LogGenerator`], a seeded generator of realistic logs (every event kind, 100+ countries, five
//! currencies, payments against open pledges, reversals, and a share of invalid records).
//!
//! The same seed gives the same bytes on every machine and every run: the generator uses ChaCha8,
//! whose output is specified, and takes its clock from the seed, never from the system.

use fundflow_proto::Message;
use fundflow_proto::v1::{
    self, Allocation, ContributionPaid, Envelope, EventReversed, Flow, InKindDonationRecorded,
    InKindItem, Money, ParallelFundingMobilized, PledgeRecorded, ValuationBasis,
    allocation::Recipient, envelope::Body,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The `recorded_at` of builder envelopes.
pub const RECORDED_AT: &str = "2020-12-31T12:00:00Z";

/// An envelope of `partner` with the given id number (formatted as a UUID), dated 2020-12-15.
pub fn envelope(partner: &str, id: u128, body: Body) -> Envelope {
    Envelope {
        event_id: uuid_text(id),
        partner_id: partner.to_owned(),
        recorded_at: RECORDED_AT.to_owned(),
        occurred_on: "2020-12-15".to_owned(),
        schema_version: fundflow_proto::SCHEMA_VERSION,
        body: Some(body),
    }
}

/// The hyphenated text form of a UUID number.
pub fn uuid_text(id: u128) -> String {
    let h = format!("{id:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A recipient: three letters name a country, three digits an M49 area.
pub fn recipient(code: &str) -> Recipient {
    if code.bytes().all(|b| b.is_ascii_digit()) {
        Recipient::Region(code.to_owned())
    } else {
        Recipient::Country(code.to_owned())
    }
}

/// A flow of `value` `currency`, allocated as given (`[("NPL", "100.00")]`), without a USD rate.
pub fn flow(value: &str, currency: &str, allocations: &[(&str, &str)]) -> Flow {
    Flow {
        amount: Some(Money {
            value: value.to_owned(),
            currency: currency.to_owned(),
        }),
        allocations: allocations
            .iter()
            .map(|(to, value)| Allocation {
                recipient: Some(recipient(to)),
                value: (*value).to_owned(),
                ..Allocation::default()
            })
            .collect(),
        ..Flow::default()
    }
}

/// `flow` with a USD rate, dated and sourced.
pub fn with_rate(mut flow: Flow, rate: &str) -> Flow {
    flow.usd_rate = rate.to_owned();
    flow.usd_rate_date = "2020-12-01".to_owned();
    flow.usd_rate_source = "UN operational rate of exchange".to_owned();
    flow
}

/// A `PledgeRecorded` body.
pub fn pledge(pledge_id: &str, flow: Flow) -> Body {
    Body::PledgeRecorded(PledgeRecorded {
        flow: Some(flow),
        pledge_id: pledge_id.to_owned(),
        donor: "Test Foundation".to_owned(),
        sector: "health".to_owned(),
        description: String::new(),
    })
}

/// A `ContributionPaid` body, against `pledge_id` unless it is empty.
pub fn payment(payment_id: &str, pledge_id: &str, flow: Flow) -> Body {
    Body::ContributionPaid(ContributionPaid {
        flow: Some(flow),
        payment_id: payment_id.to_owned(),
        pledge_id: pledge_id.to_owned(),
        description: String::new(),
        donor: String::new(),
    })
}

/// A `ParallelFundingMobilized` body.
pub fn parallel_funding(funding_id: &str, flow: Flow) -> Body {
    Body::ParallelFundingMobilized(ParallelFundingMobilized {
        flow: Some(flow),
        funding_id: funding_id.to_owned(),
        source: "Implementing partner".to_owned(),
        grant_id: "grant-1".to_owned(),
        description: String::new(),
    })
}

/// An `InKindDonationRecorded` body; every allocation gets `items` (item, unit, quantity).
pub fn in_kind(donation_id: &str, mut flow: Flow, items: &[(&str, &str, &str)]) -> Body {
    for allocation in &mut flow.allocations {
        allocation.items = items
            .iter()
            .map(|(item, unit, quantity)| InKindItem {
                item: (*item).to_owned(),
                unit: (*unit).to_owned(),
                quantity: (*quantity).to_owned(),
            })
            .collect();
    }
    Body::InKindDonationRecorded(InKindDonationRecorded {
        flow: Some(flow),
        donation_id: donation_id.to_owned(),
        donor: "Test Donor".to_owned(),
        description: String::new(),
        valuation_basis: ValuationBasis::Declared as i32,
    })
}

/// An `EventReversed` body undoing the event with id number `target`.
pub fn reversal(target: u128) -> Body {
    Body::EventReversed(EventReversed {
        reverses_event_id: uuid_text(target),
        reason: "entered twice".to_owned(),
    })
}

/// What the generator produces, besides its seed.
#[derive(Debug, Clone, Copy)]
pub struct GenConfig {
    /// How many records.
    pub events: u64,
    /// How many distinct partners send them.
    pub partners: u32,
    /// Out of 1,000 records, how many are deliberately invalid (bad bytes, unknown codes,
    /// over-payments, resends, reused ids).
    pub invalid_per_mille: u32,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            events: 10_000,
            partners: 100,
            invalid_per_mille: 20,
        }
    }
}

/// Currencies the generator uses, with minor units and a USD rate (USD per unit).
const CURRENCIES: [(&str, u32, &str); 5] = [
    ("USD", 2, "1"),
    ("EUR", 2, "1.2215"),
    ("CNY", 2, "0.15322"),
    ("JPY", 0, "0.0096881"),
    ("KES", 2, "0.0091491"),
];

/// Areas that receive directly, as COMESA's secretariat does for Eastern Africa.
const AREAS: [&str; 6] = ["014", "202", "002", "142", "419", "001"];

const ITEMS: [(&str, &str); 5] = [
    ("disposable surgical mask", "piece"),
    ("nucleic acid testing kit", "kit"),
    ("protective gown", "piece"),
    ("rice", "kg"),
    ("portable PCR device", "unit"),
];

/// The sectors pledges name.
const SECTORS: [&str; 12] = [
    "health",
    "agriculture",
    "education",
    "water and sanitation",
    "energy",
    "disaster risk reduction",
    "digital",
    "trade",
    "climate",
    "food security",
    "gender",
    "governance",
];

/// Donor names are every first word with every kind: 20 × 10 = 200 donors.
const DONOR_WORDS: [&str; 20] = [
    "Aurora",
    "Baobab",
    "Cedar",
    "Delta",
    "Everest",
    "Fjord",
    "Granite",
    "Harbour",
    "Iris",
    "Juniper",
    "Kestrel",
    "Lotus",
    "Meridian",
    "Nile",
    "Olive",
    "Prairie",
    "Quartz",
    "Riverside",
    "Sahel",
    "Tamarind",
];
const DONOR_KINDS: [&str; 10] = [
    "Foundation",
    "Trust",
    "Development Fund",
    "Charitable Trust",
    "Relief Society",
    "Family Foundation",
    "Philanthropies",
    "Partnership Fund",
    "Giving Circle",
    "Endowment",
];

/// Sources of parallel funding are every place with every kind: 15 × 10 = 150 organisations.
const SOURCE_PLACES: [&str; 15] = [
    "Kathmandu",
    "Nairobi",
    "Lima",
    "Dhaka",
    "Accra",
    "Hanoi",
    "Quito",
    "Kampala",
    "Tbilisi",
    "Dakar",
    "Lusaka",
    "Manila",
    "La Paz",
    "Ulaanbaatar",
    "Maputo",
];
const SOURCE_KINDS: [&str; 10] = [
    "Chamber of Commerce",
    "Municipality",
    "Farmers' Cooperative",
    "Women's Association",
    "Rotary Club",
    "Community Trust",
    "Microfinance Institution",
    "Water Users' Association",
    "District Council",
    "Diaspora Network",
];

/// The first year of generated logs: day 0 is 1 January of it.
const FIRST_YEAR: i32 = 2018;
/// How many years generated logs span (2018 to 2023).
const YEARS: i32 = 6;
/// Days from 2018-01-01 to 2023-12-31, both included.
const DAYS: u32 = 2191;
/// Seconds in those days.
const SECONDS: u64 = DAYS as u64 * 86_400;
/// Small grants in the pool (`sg-2019-017`), each pledged once by the partner that owns it.
const GRANTS: u32 = 400;
/// Open pledges a partner's payments choose from; beyond it a random one is no longer paid.
const OPEN_PER_PARTNER: usize = 128;
/// Out of 100 valid events, how many are backdated (occurred 1 to 400 days before recorded).
const BACKDATED_PERCENT: u32 = 3;

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_year(year: i32) -> u32 {
    if is_leap(year) { 366 } else { 365 }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The date of the `day`-th day (0-based) from 2018-01-01: (year, month, day of month).
fn civil(day: u32) -> (i32, u32, u32) {
    let mut year = FIRST_YEAR;
    let mut left = day;
    while left >= days_in_year(year) {
        left -= days_in_year(year);
        year += 1;
    }
    let mut month = 1;
    while left >= days_in_month(year, month) {
        left -= days_in_month(year, month);
        month += 1;
    }
    (year, month, left + 1)
}

/// The day number of 1 January of `year` (2018 or later).
fn year_start(year: i32) -> u32 {
    (FIRST_YEAR..year).map(days_in_year).sum()
}

/// The ISO 8601 text of the `day`-th day from 2018-01-01.
fn date_text(day: u32) -> String {
    let (year, month, day_of_month) = civil(day);
    format!("{year:04}-{month:02}-{day_of_month:02}")
}

/// The ISO 8601 text of the first day of the `day`-th day's month.
fn month_start_text(day: u32) -> String {
    let (year, month, _) = civil(day);
    format!("{year:04}-{month:02}-01")
}

/// `count` distinct elements of `pool` (all of it when it is shorter), in a seeded order.
fn distinct<T: Copy>(rng: &mut ChaCha8Rng, pool: &[T], count: usize) -> Vec<T> {
    let mut order: Vec<usize> = (0..pool.len()).collect();
    let count = count.min(pool.len());
    for i in 0..count {
        let j = rng.random_range(i..order.len());
        order.swap(i, j);
    }
    order[..count].iter().map(|&i| pool[i]).collect()
}

/// One of a short list of favourites (the first ones more often), or `None` for an empty list.
fn favourite<T: Copy>(rng: &mut ChaCha8Rng, favourites: &[T]) -> Option<T> {
    if favourites.is_empty() {
        return None;
    }
    // Half the time the first favourite, else any of them.
    if rng.random_ratio(1, 2) {
        favourites.first().copied()
    } else {
        favourites
            .get(rng.random_range(0..favourites.len()))
            .copied()
    }
}

/// An open pledge the generator may pay against.
struct OpenPledge {
    pledge_id: String,
    currency: usize,
    /// Index into `LogGenerator::donors`.
    donor: usize,
    /// The day it occurred on: payments against it do not occur before.
    occurred: u32,
    /// Its small grant in `LogGenerator::grants`, when it is one.
    grant: Option<usize>,
    /// (recipient code, outstanding in minor units)
    lines: Vec<(&'static str, i64)>,
}

/// A small grant of the pool.
struct Grant {
    /// `sg-{year}-{nnn}`.
    id: String,
    /// The partner that pledges it.
    owner: u32,
    /// The first day it may be pledged.
    due: u32,
    /// Pledged and not yet fully paid.
    open: bool,
}

/// What one partner works with, drawn from the seed when the generator starts.
struct Partner {
    countries: Vec<&'static str>,
    /// Areas the partner allocates to directly (most partners have none).
    areas: Vec<&'static str>,
    /// Indices into `CURRENCIES`: the one or two it mostly uses.
    currencies: Vec<usize>,
    /// Indices into `LogGenerator::donors`: the few it mostly records for.
    donors: Vec<usize>,
    /// Indices into `SECTORS`.
    sectors: Vec<usize>,
    /// Its small grants (indices into `LogGenerator::grants`), in the order they fall due.
    grants: Vec<usize>,
    /// How many of `grants` are pledged: they are pledged in order, each once.
    pledged: usize,
    /// Its open pledges, which its payments choose from.
    open: Vec<OpenPledge>,
}

impl Partner {
    fn draw(
        rng: &mut ChaCha8Rng,
        index: u32,
        countries: &[&'static str],
        donors: usize,
    ) -> Partner {
        let country_count = rng.random_range(3..=10usize);
        let countries = distinct(rng, countries, country_count);
        // Every third partner also allocates to an area or two: with 3 in 20 of its allocations
        // going to them, about 1 in 20 allocations overall.
        let areas = if index.is_multiple_of(3) {
            let count = rng.random_range(1..=2usize);
            distinct(rng, &AREAS, count)
        } else {
            Vec::new()
        };
        let currency_count = rng.random_range(1..=2usize);
        let currencies = distinct(rng, &[0, 1, 2, 3, 4], currency_count);
        let donor_count = rng.random_range(3..=6usize);
        let all_donors: Vec<usize> = (0..donors).collect();
        let donors = distinct(rng, &all_donors, donor_count);
        let sector_count = rng.random_range(2..=4usize);
        let all_sectors: Vec<usize> = (0..SECTORS.len()).collect();
        let sectors = distinct(rng, &all_sectors, sector_count);
        Partner {
            countries,
            areas,
            currencies,
            donors,
            sectors,
            grants: Vec::new(),
            pledged: 0,
            open: Vec::new(),
        }
    }
}

/// The clock of one record: when it is recorded.
struct Now {
    /// RFC 3339.
    recorded_at: String,
    /// The day number of `recorded_at`.
    day: u32,
}

/// A seeded, deterministic stream of encoded envelopes (see the crate docs).
///
/// Records are spread evenly over 2018-01-01 to 2023-12-31 by their index, so `recorded_at`
/// never goes back; a few events are backdated (occurred up to 400 days before they were
/// recorded). About 100 partners by default each send to a handful of countries, in one or two
/// currencies, for a few favourite donors; pledges name small grants of a pool of 400
/// (`sg-2019-017`, each pledged once by the partner owning it, then `pledge-…` ids), and
/// parallel funding names those grants, mostly other partners'.
pub struct LogGenerator {
    rng: ChaCha8Rng,
    config: GenConfig,
    produced: u64,
    partners: Vec<Partner>,
    grants: Vec<Grant>,
    /// Pledged grants, in the order pledged.
    pledged_grants: Vec<usize>,
    /// Pledged grants not yet fully paid.
    open_grants: Vec<usize>,
    donors: Vec<String>,
    sources: Vec<String>,
    /// Recent events that may be reversed: (partner, id number).
    reversible: Vec<(u32, u128)>,
    /// Recent envelopes with the day they occurred on, for deliberate resends and id reuse.
    recent: Vec<(Envelope, u32)>,
    next_id: u64,
}

impl LogGenerator {
    /// A generator of `config.events` records from `seed`.
    pub fn new(seed: u64, config: GenConfig) -> LogGenerator {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let countries: Vec<&'static str> = fundflow_refdata::COUNTRIES
            .iter()
            .filter(|c| c.region.is_some())
            .map(|c| c.alpha3)
            .collect();
        let donors: Vec<String> = DONOR_KINDS
            .iter()
            .flat_map(|kind| DONOR_WORDS.iter().map(move |word| format!("{word} {kind}")))
            .collect();
        let sources: Vec<String> = SOURCE_KINDS
            .iter()
            .flat_map(|kind| {
                SOURCE_PLACES
                    .iter()
                    .map(move |place| format!("{place} {kind}"))
            })
            .collect();
        let partner_count = config.partners.max(1);
        let mut partners: Vec<Partner> = (0..partner_count)
            .map(|p| Partner::draw(&mut rng, p, &countries, donors.len()))
            .collect();
        let mut grants = Vec::new();
        for (offset, year) in (FIRST_YEAR..FIRST_YEAR + YEARS).enumerate() {
            // 400 over six years: 67, 67, 67, 67, 66, 66.
            let count = GRANTS / 6 + u32::from(offset < (GRANTS % 6) as usize);
            let (start, length) = (year_start(year), days_in_year(year));
            let step = length / count;
            let mut number = 0u32;
            for k in 0..count {
                // Now and then a number is skipped (a grant withdrawn before it was pledged).
                number += if rng.random_ratio(1, 8) { 2 } else { 1 };
                let owner = rng.random_range(0..partner_count);
                let due = start + k * length / count + rng.random_range(0..step.max(1));
                if let Some(partner) = partners.get_mut(owner as usize) {
                    partner.grants.push(grants.len());
                }
                grants.push(Grant {
                    id: format!("sg-{year}-{number:03}"),
                    owner,
                    due,
                    open: false,
                });
            }
        }
        LogGenerator {
            rng,
            config,
            produced: 0,
            partners,
            grants,
            pledged_grants: Vec::new(),
            open_grants: Vec::new(),
            donors,
            sources,
            reversible: Vec::new(),
            recent: Vec::new(),
            next_id: 0,
        }
    }

    fn partner_name(partner: u32) -> String {
        format!("partner-{partner:02}")
    }

    fn fresh_id(&mut self) -> u128 {
        self.next_id += 1;
        // A version-4-shaped UUID whose random half comes from the seeded stream.
        (u128::from(self.rng.random::<u64>()) << 64) | u128::from(self.next_id)
    }

    fn amount_text(minor_units: i64, scale: u32) -> String {
        if scale == 0 {
            return minor_units.to_string();
        }
        let unit = 10i64.pow(scale);
        format!(
            "{}.{:0width$}",
            minor_units / unit,
            minor_units % unit,
            width = scale as usize
        )
    }

    /// Splits `total` minor units over `recipients` (each share at least 1).
    fn split(&mut self, total: i64, recipients: usize) -> Vec<i64> {
        let mut shares = Vec::with_capacity(recipients);
        let mut left = total;
        for i in 0..recipients {
            let remaining = (recipients - i - 1) as i64;
            let share = if remaining == 0 {
                left
            } else {
                self.rng.random_range(1..=(left - remaining).max(1))
            };
            shares.push(share);
            left -= share;
        }
        shares
    }

    /// A flow of `lines` in `currency`; a non-USD flow carries a rate 4 times in 5, dated the
    /// first of the month the flow occurred in.
    fn make_flow(&mut self, currency: usize, lines: &[(&'static str, i64)], occurred: u32) -> Flow {
        let (code, scale, rate) = CURRENCIES[currency];
        let total: i64 = lines.iter().map(|(_, v)| v).sum();
        let allocations: Vec<(&str, String)> = lines
            .iter()
            .map(|(to, v)| (*to, Self::amount_text(*v, scale)))
            .collect();
        let refs: Vec<(&str, &str)> = allocations
            .iter()
            .map(|(to, v)| (*to, v.as_str()))
            .collect();
        let flow = flow(&Self::amount_text(total, scale), code, &refs);
        if code != "USD" && self.rng.random_ratio(4, 5) {
            let mut flow = with_rate(flow, rate);
            flow.usd_rate_date = month_start_text(occurred);
            flow
        } else {
            flow
        }
    }

    fn partner(&self, partner: u32) -> Option<&Partner> {
        self.partners.get(partner as usize)
    }

    /// One to three distinct recipients from the partner's countries and areas.
    fn recipients(&mut self, partner: u32) -> Vec<&'static str> {
        let count = *[1usize, 1, 1, 2, 3]
            .get(self.rng.random_range(0..5))
            .unwrap_or(&1);
        let Some(p) = self.partners.get(partner as usize) else {
            return vec!["NPL"];
        };
        let mut chosen: Vec<&'static str> = Vec::with_capacity(count);
        for _ in 0..count {
            let pool = if !p.areas.is_empty() && self.rng.random_ratio(3, 20) {
                &p.areas
            } else {
                &p.countries
            };
            if let Some(&to) = pool.get(self.rng.random_range(0..pool.len().max(1)))
                && !chosen.contains(&to)
            {
                chosen.push(to);
            }
        }
        if chosen.is_empty() {
            chosen.push("NPL");
        }
        chosen
    }

    fn monetary_lines(&mut self, partner: u32) -> Vec<(&'static str, i64)> {
        let recipients = self.recipients(partner);
        let total = self
            .rng
            .random_range(100..50_000_000i64)
            .max(recipients.len() as i64);
        let shares = self.split(total, recipients.len());
        recipients.into_iter().zip(shares).collect()
    }

    /// Mostly one of the partner's currencies, now and then any.
    fn currency(&mut self, partner: u32) -> usize {
        let own = self.partners.get(partner as usize).map(|p| &p.currencies);
        match own {
            Some(own) if !self.rng.random_ratio(3, 20) => {
                favourite(&mut self.rng, own).unwrap_or(0)
            }
            _ => self.rng.random_range(0..CURRENCIES.len()),
        }
    }

    /// Mostly one of the partner's favourite donors, else any of the pool (an index).
    fn donor(&mut self, partner: u32) -> usize {
        let own = self.partners.get(partner as usize).map(|p| &p.donors);
        match own {
            Some(own) if self.rng.random_ratio(4, 5) => favourite(&mut self.rng, own).unwrap_or(0),
            _ => self.rng.random_range(0..self.donors.len()),
        }
    }

    fn sector(&mut self, partner: u32) -> &'static str {
        let own = self.partners.get(partner as usize).map(|p| &p.sectors);
        let index = match own {
            Some(own) if self.rng.random_ratio(7, 10) => favourite(&mut self.rng, own).unwrap_or(0),
            _ => self.rng.random_range(0..SECTORS.len()),
        };
        SECTORS.get(index).copied().unwrap_or("health")
    }

    fn donor_name(&self, donor: usize) -> String {
        self.donors.get(donor).cloned().unwrap_or_default()
    }

    /// A new pledge of `partner`: its next small grant once that is due, else a unique id.
    fn pledge_body(&mut self, partner: u32, id: u128, now: &Now, occurred: u32) -> Body {
        let lines = self.monetary_lines(partner);
        let currency = self.currency(partner);
        let donor = self.donor(partner);
        let sector = self.sector(partner);
        let flow = self.make_flow(currency, &lines, occurred);
        let mut grant = None;
        if let Some(p) = self.partners.get_mut(partner as usize)
            && let Some(&g) = p.grants.get(p.pledged)
            && let Some(state) = self.grants.get_mut(g)
            && state.due <= now.day
        {
            p.pledged += 1;
            state.open = true;
            self.pledged_grants.push(g);
            self.open_grants.push(g);
            grant = Some(g);
        }
        let pledge_id = match grant.and_then(|g| self.grants.get(g)) {
            Some(state) => state.id.clone(),
            None => format!("pledge-{id:x}"),
        };
        let body = Body::PledgeRecorded(PledgeRecorded {
            flow: Some(flow),
            pledge_id: pledge_id.clone(),
            donor: self.donor_name(donor),
            sector: sector.to_owned(),
            description: String::new(),
        });
        if let Some(p) = self.partners.get_mut(partner as usize) {
            p.open.push(OpenPledge {
                pledge_id,
                currency,
                donor,
                occurred,
                grant,
                lines,
            });
            if p.open.len() > OPEN_PER_PARTNER {
                let i = self.rng.random_range(0..p.open.len());
                p.open.swap_remove(i);
            }
        }
        body
    }

    /// A payment of `partner` against one of its open pledges, paying part of what is
    /// outstanding (a third of the time all of it); `None` when it has none open. Returns the
    /// body and the day it occurred on (not before the pledge).
    fn payment_against_pledge(
        &mut self,
        partner: u32,
        id: u128,
        occurred: u32,
    ) -> Option<(Body, u32)> {
        let p = self.partners.get_mut(partner as usize)?;
        if p.open.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..p.open.len());
        let open = p.open.get_mut(i)?;
        let pay_all = self.rng.random_ratio(1, 3);
        let mut lines = Vec::with_capacity(open.lines.len());
        for (to, outstanding) in &mut open.lines {
            if *outstanding > 0 {
                let pay = if pay_all {
                    *outstanding
                } else {
                    let low = (*outstanding / 4).max(1);
                    let high = (*outstanding / 2).max(1);
                    self.rng.random_range(low..=high)
                };
                *outstanding -= pay;
                lines.push((*to, pay));
            }
        }
        let (pledge_id, currency, pledge_donor) =
            (open.pledge_id.clone(), open.currency, open.donor);
        let occurred = occurred.max(open.occurred);
        let closed = open.lines.iter().all(|(_, outstanding)| *outstanding == 0);
        if closed {
            let done = p.open.swap_remove(i);
            if let Some(g) = done.grant {
                if let Some(state) = self.grants.get_mut(g) {
                    state.open = false;
                }
                if let Some(at) = self.open_grants.iter().position(|&x| x == g) {
                    self.open_grants.swap_remove(at);
                }
            }
        }
        if lines.is_empty() {
            return None;
        }
        // About a third of payments against a pledge name their donor: mostly the pledge's,
        // sometimes another (a co-funder paying in). The others inherit the pledge's.
        let donor = if self.rng.random_ratio(8, 25) {
            if self.rng.random_ratio(3, 5) {
                self.donor_name(pledge_donor)
            } else {
                let other = self.donor(partner);
                self.donor_name(other)
            }
        } else {
            String::new()
        };
        let flow = self.make_flow(currency, &lines, occurred);
        let body = Body::ContributionPaid(ContributionPaid {
            flow: Some(flow),
            payment_id: format!("pay-{id:x}"),
            pledge_id,
            description: String::new(),
            donor,
        });
        Some((body, occurred))
    }

    /// A payment against no pledge; it names its donor 3 times in 5.
    fn standalone_payment(&mut self, partner: u32, id: u128, occurred: u32) -> Body {
        let lines = self.monetary_lines(partner);
        let currency = self.currency(partner);
        let flow = self.make_flow(currency, &lines, occurred);
        let donor = if self.rng.random_ratio(3, 5) {
            let donor = self.donor(partner);
            self.donor_name(donor)
        } else {
            String::new()
        };
        Body::ContributionPaid(ContributionPaid {
            flow: Some(flow),
            payment_id: format!("pay-{id:x}"),
            pledge_id: String::new(),
            description: String::new(),
            donor,
        })
    }

    /// The grant a parallel funding of `partner` backs: a pledged small grant, open ones first,
    /// another partner's 7 times in 10.
    fn funded_grant(&mut self, partner: u32) -> String {
        let others = self.rng.random_ratio(7, 10);
        if !others
            && let Some(p) = self.partners.get(partner as usize)
            && p.pledged > 0
        {
            let own = &p.grants[..p.pledged.min(p.grants.len())];
            let mut pick = None;
            for _ in 0..8 {
                let g = own.get(self.rng.random_range(0..own.len())).copied();
                pick = pick.or(g);
                if let Some(g) = g
                    && self.grants.get(g).is_some_and(|state| state.open)
                {
                    pick = Some(g);
                    break;
                }
            }
            if let Some(state) = pick.and_then(|g| self.grants.get(g)) {
                return state.id.clone();
            }
        }
        for pool in [&self.open_grants, &self.pledged_grants] {
            if pool.is_empty() {
                continue;
            }
            for _ in 0..24 {
                let g = pool.get(self.rng.random_range(0..pool.len())).copied();
                if let Some(state) = g.and_then(|g| self.grants.get(g))
                    && state.owner != partner
                {
                    return state.id.clone();
                }
            }
        }
        // Nothing of another partner's is pledged (yet, or there is one partner): any pledged
        // grant, else an open pledge of the partner's own, else the pool's first grant.
        if let Some(state) = self.pledged_grants.last().and_then(|&g| self.grants.get(g)) {
            return state.id.clone();
        }
        if let Some(open) = self.partner(partner).and_then(|p| p.open.last()) {
            return open.pledge_id.clone();
        }
        self.grants
            .first()
            .map_or_else(|| "grant-1".to_owned(), |g| g.id.clone())
    }

    fn parallel_funding_body(&mut self, partner: u32, id: u128, occurred: u32) -> Body {
        let lines = self.monetary_lines(partner);
        let currency = self.currency(partner);
        let flow = self.make_flow(currency, &lines, occurred);
        let grant_id = self.funded_grant(partner);
        let source = self
            .sources
            .get(self.rng.random_range(0..self.sources.len()))
            .cloned()
            .unwrap_or_default();
        Body::ParallelFundingMobilized(ParallelFundingMobilized {
            flow: Some(flow),
            funding_id: format!("pf-{id:x}"),
            source,
            grant_id,
            description: String::new(),
        })
    }

    fn in_kind_body(&mut self, partner: u32, id: u128, occurred: u32) -> Body {
        let lines = self.monetary_lines(partner);
        let currency = self.currency(partner);
        let flow = self.make_flow(currency, &lines, occurred);
        let (item, unit) = ITEMS[self.rng.random_range(0..ITEMS.len())];
        let quantity = self.rng.random_range(1..250_000u32).to_string();
        let mut body = in_kind(&format!("ik-{id:x}"), flow, &[(item, unit, &quantity)]);
        let donor = self.donor(partner);
        if let Body::InKindDonationRecorded(donation) = &mut body {
            donation.donor = self.donor_name(donor);
        }
        body
    }

    fn next_envelope(&mut self) -> (Envelope, Option<Vec<u8>>) {
        let partner = self.rng.random_range(0..self.config.partners.max(1));
        let id = self.fresh_id();
        let now = self.now();
        let roll = self.rng.random_range(0..1000u32);
        if roll < self.config.invalid_per_mille {
            return self.invalid(partner, id, &now);
        }
        let occurred = if self.rng.random_range(0..100u32) < BACKDATED_PERCENT {
            now.day.saturating_sub(self.rng.random_range(1..=400u32))
        } else {
            now.day
        };
        let kind = self.rng.random_range(0..100u32);
        let (partner, body, occurred) = match kind {
            0..15 => {
                let body = self.pledge_body(partner, id, &now, occurred);
                let envelope = self.wrap(partner, id, body, &now, occurred);
                return (envelope, None);
            }
            15..41 => match self.payment_against_pledge(partner, id, occurred) {
                Some((body, occurred)) => (partner, body, occurred),
                None => (
                    partner,
                    self.standalone_payment(partner, id, occurred),
                    occurred,
                ),
            },
            41..53 => (
                partner,
                self.standalone_payment(partner, id, occurred),
                occurred,
            ),
            53..73 => (
                partner,
                self.parallel_funding_body(partner, id, occurred),
                occurred,
            ),
            73..97 => (partner, self.in_kind_body(partner, id, occurred), occurred),
            _ if !self.reversible.is_empty() => {
                let i = self.rng.random_range(0..self.reversible.len());
                let (target_partner, target) = self.reversible.swap_remove(i);
                let envelope = self.wrap(target_partner, id, reversal(target), &now, occurred);
                return (envelope, None);
            }
            _ => (
                partner,
                self.parallel_funding_body(partner, id, occurred),
                occurred,
            ),
        };
        let envelope = self.wrap(partner, id, body, &now, occurred);
        if self.rng.random_ratio(1, 10) {
            self.reversible.push((partner, id));
            if self.reversible.len() > 1024 {
                self.reversible.swap_remove(0);
            }
        }
        (envelope, None)
    }

    /// A deliberately invalid record: the fold must reject it and keep going.
    fn invalid(&mut self, partner: u32, id: u128, now: &Now) -> (Envelope, Option<Vec<u8>>) {
        let pick = self.rng.random_range(0..5u32);
        match pick {
            0 => {
                let len = self.rng.random_range(1..64usize);
                let bytes: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
                (Envelope::default(), Some(bytes))
            }
            1 if !self.recent.is_empty() => {
                // A resend: same content, same id, later timestamp.
                let i = self.rng.random_range(0..self.recent.len());
                let mut again = self.recent[i].0.clone();
                again.recorded_at = now.recorded_at.clone();
                (again, None)
            }
            2 if !self.recent.is_empty() => {
                // A reused id with other content: the same event a day earlier (on the first
                // day, with another description or reason).
                let i = self.rng.random_range(0..self.recent.len());
                let (mut reused, occurred) = self.recent[i].clone();
                if occurred > 0 {
                    reused.occurred_on = date_text(occurred - 1);
                } else {
                    match &mut reused.body {
                        Some(Body::PledgeRecorded(b)) => b.description.push_str(" (again)"),
                        Some(Body::ContributionPaid(b)) => b.description.push_str(" (again)"),
                        Some(Body::ParallelFundingMobilized(b)) => {
                            b.description.push_str(" (again)");
                        }
                        Some(Body::InKindDonationRecorded(b)) => {
                            b.description.push_str(" (again)");
                        }
                        Some(Body::EventReversed(b)) => b.reason.push_str(" (again)"),
                        None => {}
                    }
                }
                (reused, None)
            }
            3 => {
                let body = payment("pay-x", "", flow("10.00", "XYZ", &[("NPL", "10.00")]));
                (self.wrap(partner, id, body, now, now.day), None)
            }
            _ => {
                let body = payment("pay-y", "", flow("10.005", "USD", &[("NPL", "10.005")]));
                (self.wrap(partner, id, body, now, now.day), None)
            }
        }
    }

    /// The clock of the next record: records are spread evenly over 2018-01-01 to 2023-12-31
    /// by their index.
    fn now(&self) -> Now {
        let events = u128::from(self.config.events.max(1));
        let at = u128::from(self.produced) * u128::from(SECONDS) / events;
        let second = u64::try_from(at).unwrap_or(SECONDS - 1).min(SECONDS - 1);
        let day = u32::try_from(second / 86_400).unwrap_or(DAYS - 1);
        let recorded_at = format!(
            "{}T{:02}:{:02}:{:02}Z",
            date_text(day),
            (second % 86_400) / 3600,
            (second % 3600) / 60,
            second % 60
        );
        Now { recorded_at, day }
    }

    fn wrap(&mut self, partner: u32, id: u128, body: Body, now: &Now, occurred: u32) -> Envelope {
        let envelope = Envelope {
            event_id: uuid_text(id),
            partner_id: Self::partner_name(partner),
            recorded_at: now.recorded_at.clone(),
            occurred_on: date_text(occurred),
            schema_version: fundflow_proto::SCHEMA_VERSION,
            body: Some(body),
        };
        if self.recent.len() < 256 {
            self.recent.push((envelope.clone(), occurred));
        } else {
            let i = self.rng.random_range(0..self.recent.len());
            self.recent[i] = (envelope.clone(), occurred);
        }
        envelope
    }
}

impl Iterator for LogGenerator {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.produced >= self.config.events {
            return None;
        }
        let (envelope, raw) = self.next_envelope();
        self.produced += 1;
        Some(raw.unwrap_or_else(|| envelope.encode_to_vec()))
    }
}

/// Re-exported so callers can build bodies without naming the proto crate.
pub use v1::envelope::Body as EnvelopeBody;

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test, with its location.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_calendar_knows_leap_years() {
        assert_eq!(date_text(0), "2018-01-01");
        assert_eq!(date_text(364), "2018-12-31");
        assert_eq!(date_text(365), "2019-01-01");
        assert_eq!(date_text(730), "2020-01-01");
        assert_eq!(date_text(730 + 58), "2020-02-28");
        assert_eq!(date_text(730 + 59), "2020-02-29");
        assert_eq!(date_text(730 + 60), "2020-03-01");
        assert_eq!(date_text(730 + 365), "2020-12-31");
        assert_eq!(date_text(730 + 366), "2021-01-01");
        assert_eq!(date_text(365 + 58), "2019-02-28");
        assert_eq!(date_text(365 + 59), "2019-03-01");
        assert_eq!(date_text(DAYS - 1), "2023-12-31");
        assert_eq!(year_start(2020), 730);
        assert_eq!(year_start(2024), DAYS);
        assert!(is_leap(2020) && is_leap(2000) && !is_leap(1900) && !is_leap(2023));
    }

    #[test]
    fn every_day_agrees_with_the_time_crate() {
        let first = time::Date::from_calendar_date(2018, time::Month::January, 1).unwrap();
        for day in 0..DAYS {
            let expected = first + time::Duration::days(i64::from(day));
            let (year, month, day_of_month) = civil(day);
            assert_eq!(
                (year, month, day_of_month),
                (
                    expected.year(),
                    u32::from(u8::from(expected.month())),
                    u32::from(expected.day())
                ),
                "day {day}"
            );
            assert_eq!(
                month_start_text(day),
                format!("{}-01", &date_text(day)[..7])
            );
        }
    }

    #[test]
    fn the_clock_spans_six_years_and_never_goes_back() {
        let mut generator = LogGenerator::new(
            1,
            GenConfig {
                events: 5_000,
                ..GenConfig::default()
            },
        );
        let mut last = String::new();
        let mut days = Vec::new();
        for produced in 0..5_000 {
            generator.produced = produced;
            let now = generator.now();
            assert!(now.recorded_at >= last, "{} after {last}", now.recorded_at);
            assert_eq!(now.recorded_at[..10], date_text(now.day));
            last = now.recorded_at;
            days.push(now.day);
        }
        assert_eq!(days.first(), Some(&0));
        assert!(days.last().is_some_and(|&d| d > DAYS - 2));
    }

    #[test]
    fn the_grant_pool_has_400_distinct_owned_ids() {
        let generator = LogGenerator::new(3, GenConfig::default());
        assert_eq!(generator.grants.len(), 400);
        let mut ids: Vec<&str> = generator.grants.iter().map(|g| g.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 400);
        for (i, grant) in generator.grants.iter().enumerate() {
            let year: i32 = grant.id[3..7].parse().unwrap();
            assert!((2018..=2023).contains(&year), "{}", grant.id);
            assert_eq!(grant.id.len(), "sg-2019-017".len(), "{}", grant.id);
            assert!(grant.due >= year_start(year) && grant.due < year_start(year + 1));
            assert!(generator.partners[grant.owner as usize].grants.contains(&i));
        }
        for partner in &generator.partners {
            let dues: Vec<u32> = partner
                .grants
                .iter()
                .map(|&g| generator.grants[g].due)
                .collect();
            assert!(dues.is_sorted(), "a partner's grants fall due in order");
            assert!((3..=10).contains(&partner.countries.len()));
            assert!((1..=2).contains(&partner.currencies.len()));
        }
        assert_eq!(generator.donors.len(), 200);
        assert_eq!(generator.sources.len(), 150);
        let mut names = generator.donors.clone();
        names.extend(generator.sources.iter().cloned());
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 350);
    }
}
