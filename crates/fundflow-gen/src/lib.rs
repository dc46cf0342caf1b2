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

/// The `recorded_at` of builder envelopes, and the generator's first timestamp.
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
            partners: 24,
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

/// An open pledge the generator may pay against.
struct OpenPledge {
    partner: u32,
    pledge_id: String,
    currency: usize,
    /// (recipient code, outstanding in minor units)
    lines: Vec<(&'static str, i64)>,
}

/// A seeded, deterministic stream of encoded envelopes (see the crate docs).
pub struct LogGenerator {
    rng: ChaCha8Rng,
    config: GenConfig,
    produced: u64,
    countries: Vec<&'static str>,
    pledges: Vec<OpenPledge>,
    /// Recent events that may be reversed: (partner, id number).
    reversible: Vec<(u32, u128)>,
    /// Recent envelopes, for deliberate resends and id reuse.
    recent: Vec<Envelope>,
    next_id: u64,
}

impl LogGenerator {
    /// A generator of `config.events` records from `seed`.
    pub fn new(seed: u64, config: GenConfig) -> LogGenerator {
        let countries = fundflow_refdata::COUNTRIES
            .iter()
            .filter(|c| c.region.is_some())
            .map(|c| c.alpha3)
            .collect();
        LogGenerator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            config,
            produced: 0,
            countries,
            pledges: Vec::new(),
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

    fn make_flow(&mut self, currency: usize, lines: &[(&'static str, i64)]) -> Flow {
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
            with_rate(flow, rate)
        } else {
            flow
        }
    }

    fn recipients(&mut self) -> Vec<&'static str> {
        let count = *[1usize, 1, 1, 2, 3]
            .get(self.rng.random_range(0..5))
            .unwrap_or(&1);
        (0..count)
            .map(|_| {
                if self.rng.random_ratio(1, 20) {
                    AREAS[self.rng.random_range(0..AREAS.len())]
                } else {
                    self.countries[self.rng.random_range(0..self.countries.len())]
                }
            })
            .collect()
    }

    fn monetary_lines(&mut self) -> Vec<(&'static str, i64)> {
        let recipients = self.recipients();
        let total = self
            .rng
            .random_range(100..50_000_000i64)
            .max(recipients.len() as i64);
        let shares = self.split(total, recipients.len());
        recipients.into_iter().zip(shares).collect()
    }

    fn next_envelope(&mut self) -> (Envelope, Option<Vec<u8>>) {
        let partner = self.rng.random_range(0..self.config.partners.max(1));
        let id = self.fresh_id();
        let roll = self.rng.random_range(0..1000u32);
        if roll < self.config.invalid_per_mille {
            return self.invalid(partner, id);
        }
        let currency = self.rng.random_range(0..CURRENCIES.len());
        let kind = self.rng.random_range(0..100u32);
        let body = match kind {
            0..20 => {
                let lines = self.monetary_lines();
                let pledge_id = format!("pledge-{id:x}");
                let flow = self.make_flow(currency, &lines);
                self.pledges.push(OpenPledge {
                    partner,
                    pledge_id: pledge_id.clone(),
                    currency,
                    lines,
                });
                if self.pledges.len() > 4096 {
                    let i = self.rng.random_range(0..self.pledges.len());
                    self.pledges.swap_remove(i);
                }
                pledge(&pledge_id, flow)
            }
            20..45 if !self.pledges.is_empty() => {
                let i = self.rng.random_range(0..self.pledges.len());
                let open = &mut self.pledges[i];
                let (pledge_partner, pledge_id, currency) =
                    (open.partner, open.pledge_id.clone(), open.currency);
                let mut lines = Vec::new();
                for (to, outstanding) in &mut open.lines {
                    if *outstanding > 0 {
                        let pay = (*outstanding / 2).max(1);
                        *outstanding -= pay;
                        lines.push((*to, pay));
                    }
                }
                if lines.is_empty() {
                    self.pledges.swap_remove(i);
                    let lines = self.monetary_lines();
                    let flow = self.make_flow(currency, &lines);
                    payment(&format!("pay-{id:x}"), "", flow)
                } else {
                    let flow = self.make_flow(currency, &lines);
                    let body = payment(&format!("pay-{id:x}"), &pledge_id, flow);
                    let envelope = self.wrap(pledge_partner, id, body);
                    return (envelope, None);
                }
            }
            20..55 => {
                let lines = self.monetary_lines();
                let flow = self.make_flow(currency, &lines);
                payment(&format!("pay-{id:x}"), "", flow)
            }
            55..75 => {
                let lines = self.monetary_lines();
                let flow = self.make_flow(currency, &lines);
                parallel_funding(&format!("pf-{id:x}"), flow)
            }
            75..95 => {
                let lines = self.monetary_lines();
                let flow = self.make_flow(currency, &lines);
                let (item, unit) = ITEMS[self.rng.random_range(0..ITEMS.len())];
                let quantity = self.rng.random_range(1..250_000u32).to_string();
                in_kind(&format!("ik-{id:x}"), flow, &[(item, unit, &quantity)])
            }
            _ if !self.reversible.is_empty() => {
                let i = self.rng.random_range(0..self.reversible.len());
                let (target_partner, target) = self.reversible.swap_remove(i);
                let envelope = self.wrap(target_partner, id, reversal(target));
                return (envelope, None);
            }
            _ => {
                let lines = self.monetary_lines();
                let flow = self.make_flow(currency, &lines);
                parallel_funding(&format!("pf-{id:x}"), flow)
            }
        };
        let reversible = !matches!(body, Body::PledgeRecorded(_));
        let envelope = self.wrap(partner, id, body);
        if reversible && self.rng.random_ratio(1, 10) {
            self.reversible.push((partner, id));
            if self.reversible.len() > 1024 {
                self.reversible.swap_remove(0);
            }
        }
        (envelope, None)
    }

    /// A deliberately invalid record: the fold must reject it and keep going.
    fn invalid(&mut self, partner: u32, id: u128) -> (Envelope, Option<Vec<u8>>) {
        let pick = self.rng.random_range(0..5u32);
        match pick {
            0 => {
                let len = self.rng.random_range(1..64usize);
                let bytes: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
                (Envelope::default(), Some(bytes))
            }
            1 if !self.recent.is_empty() => {
                // A resend: same content, same id, later timestamp.
                let mut again = self.recent[self.rng.random_range(0..self.recent.len())].clone();
                again.recorded_at = self.timestamp();
                (again, None)
            }
            2 if !self.recent.is_empty() => {
                // A reused id with other content.
                let mut reused = self.recent[self.rng.random_range(0..self.recent.len())].clone();
                reused.occurred_on = "2020-01-02".to_owned();
                (reused, None)
            }
            3 => {
                let body = payment("pay-x", "", flow("10.00", "XYZ", &[("NPL", "10.00")]));
                (self.wrap(partner, id, body), None)
            }
            _ => {
                let body = payment("pay-y", "", flow("10.005", "USD", &[("NPL", "10.005")]));
                (self.wrap(partner, id, body), None)
            }
        }
    }

    fn timestamp(&self) -> String {
        // One event per second from 2020-01-01, within the year's seconds.
        let second = self.produced % (365 * 86_400);
        let day = second / 86_400;
        let (month, day_of_month) = month_day(day);
        format!(
            "2020-{month:02}-{day_of_month:02}T{:02}:{:02}:{:02}Z",
            (second % 86_400) / 3600,
            (second % 3600) / 60,
            second % 60
        )
    }

    fn wrap(&mut self, partner: u32, id: u128, body: Body) -> Envelope {
        let recorded_at = self.timestamp();
        let occurred_on = recorded_at[..10].to_owned();
        let envelope = Envelope {
            event_id: uuid_text(id),
            partner_id: Self::partner_name(partner),
            recorded_at,
            occurred_on,
            schema_version: fundflow_proto::SCHEMA_VERSION,
            body: Some(body),
        };
        if self.recent.len() < 256 {
            self.recent.push(envelope.clone());
        } else {
            let i = self.rng.random_range(0..self.recent.len());
            self.recent[i] = envelope.clone();
        }
        envelope
    }
}

/// Month and day of month of the `day`-th day (0-based) of 2020, a leap year.
fn month_day(day: u64) -> (u64, u64) {
    const DAYS: [u64; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut left = day;
    for (month, &days) in DAYS.iter().enumerate() {
        if left < days {
            return (month as u64 + 1, left + 1);
        }
        left -= days;
    }
    (12, 31)
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
