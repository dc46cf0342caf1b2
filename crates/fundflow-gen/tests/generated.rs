//! What a generated log looks like along the dimensions analytics count flows under (partner,
//! date, grant, sector, donor), and that its valid events would pass the ledger's rules: the
//! domain crate depends on this one, so these tests keep their own small model of those rules.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use fundflow_gen::{GenConfig, LogGenerator};
use fundflow_proto::Message;
use fundflow_proto::v1::{Envelope, Flow, allocation::Recipient, envelope::Body};
use time::{Date, OffsetDateTime, format_description::well_known::Rfc3339};

fn decoded(seed: u64, config: GenConfig) -> Vec<Envelope> {
    LogGenerator::new(seed, config)
        .filter_map(|bytes| Envelope::decode(bytes.as_slice()).ok())
        // Random bytes may decode to a message; generated envelopes always have a body.
        .filter(|e| e.body.is_some() && e.partner_id.starts_with("partner-"))
        .collect()
}

fn minor_units(value: &str) -> i64 {
    value.replace('.', "").parse().unwrap()
}

fn recipient_key(flow: &Flow, i: usize) -> String {
    match &flow.allocations[i].recipient {
        Some(Recipient::Country(c)) => c.clone(),
        Some(Recipient::Region(r)) => format!("m49:{r}"),
        None => panic!("an allocation without a recipient"),
    }
}

/// What one log holds: events per kind, distinct values per dimension, and some shares.
#[derive(Default)]
struct Survey {
    kinds: BTreeMap<&'static str, u64>,
    partners: BTreeSet<String>,
    years: BTreeSet<i32>,
    quarters: BTreeSet<(i32, u8)>,
    grants: BTreeSet<String>,
    pool_grants: BTreeSet<String>,
    sectors: BTreeSet<String>,
    donors: BTreeSet<String>,
    sources: BTreeSet<String>,
    payments: u64,
    payments_with_donor: u64,
    payments_against_pledges: u64,
    payments_against_pledges_with_donor: u64,
    standalone_with_donor: u64,
    funding: u64,
    funding_of_other_partners_pledged_grant: u64,
    funding_of_own_pledged_grant: u64,
    backdated: u64,
    allocations: u64,
    area_allocations: u64,
}

/// Surveys `log`, asserting on the way that every valid event passes the ledger's rules on
/// dates, pledges, payments and reversals.
fn survey(log: &[Envelope]) -> Survey {
    let mut s = Survey::default();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    // (partner, pledge id) → (currency, recipient → outstanding).
    let mut pledges: BTreeMap<(String, String), (String, BTreeMap<String, i64>)> = BTreeMap::new();
    let mut grant_owner: BTreeMap<String, String> = BTreeMap::new();
    let mut event_partner: BTreeMap<String, String> = BTreeMap::new();
    let day = time::macros::format_description!("[year]-[month]-[day]");
    for e in log {
        // Dates: valid, within 2018 to 2023, never occurring after the day recorded.
        let recorded = OffsetDateTime::parse(&e.recorded_at, &Rfc3339).unwrap();
        let occurred = Date::parse(&e.occurred_on, day).unwrap();
        assert!(occurred <= recorded.date(), "{e:?}");
        for date in [occurred, recorded.date()] {
            assert!((2018..=2023).contains(&date.year()), "{e:?}");
        }
        // Resends and reused ids are deliberately invalid: the first envelope of an id counts.
        if !seen.insert((e.partner_id.clone(), e.event_id.clone())) {
            continue;
        }
        let Some(body) = &e.body else { unreachable!() };
        let flow = match body {
            Body::PledgeRecorded(p) => p.flow.as_ref(),
            Body::ContributionPaid(p) => p.flow.as_ref(),
            Body::ParallelFundingMobilized(p) => p.flow.as_ref(),
            Body::InKindDonationRecorded(p) => p.flow.as_ref(),
            Body::EventReversed(_) => None,
        };
        if let Some(flow) = flow {
            let money = flow.amount.as_ref().unwrap();
            if money.currency == "XYZ" || money.value.ends_with("10.005") {
                continue; // The deliberately invalid payments.
            }
            let sum: i64 = flow.allocations.iter().map(|a| minor_units(&a.value)).sum();
            assert_eq!(sum, minor_units(&money.value), "{e:?}");
            for allocation in &flow.allocations {
                s.allocations += 1;
                if matches!(allocation.recipient, Some(Recipient::Region(_))) {
                    s.area_allocations += 1;
                }
            }
        }
        event_partner.insert(e.event_id.clone(), e.partner_id.clone());
        s.partners.insert(e.partner_id.clone());
        s.years.insert(occurred.year());
        s.quarters
            .insert((occurred.year(), (u8::from(occurred.month()) - 1) / 3 + 1));
        if occurred < recorded.date() {
            s.backdated += 1;
        }
        let kind = match body {
            Body::PledgeRecorded(p) => {
                let key = (e.partner_id.clone(), p.pledge_id.clone());
                assert!(!pledges.contains_key(&key), "pledge id in use: {e:?}");
                let flow = p.flow.as_ref().unwrap();
                let mut lines = BTreeMap::new();
                for (i, a) in flow.allocations.iter().enumerate() {
                    *lines.entry(recipient_key(flow, i)).or_insert(0) += minor_units(&a.value);
                }
                let currency = flow.amount.as_ref().unwrap().currency.clone();
                pledges.insert(key, (currency, lines));
                if p.pledge_id.starts_with("sg-") {
                    let before = grant_owner.insert(p.pledge_id.clone(), e.partner_id.clone());
                    assert!(before.is_none(), "a small grant pledged twice: {e:?}");
                    s.pool_grants.insert(p.pledge_id.clone());
                }
                s.grants.insert(p.pledge_id.clone());
                s.sectors.insert(p.sector.clone());
                s.donors.insert(p.donor.clone());
                "pledge"
            }
            Body::ContributionPaid(p) => {
                s.payments += 1;
                if !p.donor.is_empty() {
                    s.payments_with_donor += 1;
                    s.donors.insert(p.donor.clone());
                }
                if p.pledge_id.is_empty() {
                    s.standalone_with_donor += u64::from(!p.donor.is_empty());
                } else {
                    s.payments_against_pledges += 1;
                    s.payments_against_pledges_with_donor += u64::from(!p.donor.is_empty());
                    s.grants.insert(p.pledge_id.clone());
                    let key = (e.partner_id.clone(), p.pledge_id.clone());
                    let (currency, lines) = pledges
                        .get_mut(&key)
                        .unwrap_or_else(|| panic!("unknown pledge: {e:?}"));
                    let flow = p.flow.as_ref().unwrap();
                    assert_eq!(&flow.amount.as_ref().unwrap().currency, currency, "{e:?}");
                    for (i, a) in flow.allocations.iter().enumerate() {
                        let outstanding = lines
                            .get_mut(&recipient_key(flow, i))
                            .unwrap_or_else(|| panic!("recipient not pledged: {e:?}"));
                        *outstanding -= minor_units(&a.value);
                        assert!(*outstanding >= 0, "overpaid: {e:?}");
                    }
                }
                "payment"
            }
            Body::ParallelFundingMobilized(p) => {
                s.funding += 1;
                s.grants.insert(p.grant_id.clone());
                s.sources.insert(p.source.clone());
                match grant_owner.get(&p.grant_id) {
                    Some(owner) if *owner != e.partner_id => {
                        s.funding_of_other_partners_pledged_grant += 1;
                    }
                    Some(_) => s.funding_of_own_pledged_grant += 1,
                    None => {}
                }
                "parallel funding"
            }
            Body::InKindDonationRecorded(p) => {
                s.donors.insert(p.donor.clone());
                "in kind"
            }
            Body::EventReversed(r) => {
                assert_eq!(
                    event_partner.get(&r.reverses_event_id),
                    Some(&e.partner_id),
                    "a reversal of another partner's event: {e:?}"
                );
                "reversal"
            }
        };
        *s.kinds.entry(kind).or_insert(0) += 1;
    }
    s
}

#[test]
fn a_default_log_exercises_every_analytics_dimension() {
    let log = decoded(
        7,
        GenConfig {
            events: 20_000,
            ..GenConfig::default()
        },
    );
    let s = survey(&log);
    let total: u64 = s.kinds.values().sum();
    let share = |kind: &str| s.kinds.get(kind).copied().unwrap_or(0) * 100 / total;
    println!(
        "kinds {:?}; distinct: {} partners, {} years, {} grants ({} small grants), {} sectors, \
         {} donors, {} sources",
        s.kinds,
        s.partners.len(),
        s.years.len(),
        s.grants.len(),
        s.pool_grants.len(),
        s.sectors.len(),
        s.donors.len(),
        s.sources.len()
    );
    assert_eq!(
        s.years,
        (2018..=2023).collect::<BTreeSet<_>>(),
        "six years of dates"
    );
    assert_eq!(s.quarters.len(), 24);
    assert!(s.partners.len() >= 90, "{} partners", s.partners.len());
    assert!(s.grants.len() >= 300, "{} grants", s.grants.len());
    assert!(
        s.pool_grants.len() >= 300,
        "{} small grants pledged",
        s.pool_grants.len()
    );
    assert!(s.sectors.len() >= 10, "{} sectors", s.sectors.len());
    assert!(s.donors.len() >= 150, "{} donors", s.donors.len());
    assert!(s.sources.len() >= 100, "{} sources", s.sources.len());
    // Parallel funding names pledged small grants, mostly other partners'.
    let named = s.funding_of_other_partners_pledged_grant + s.funding_of_own_pledged_grant;
    assert!(
        named * 10 >= s.funding * 9,
        "{named} of {} name a pledged grant",
        s.funding
    );
    let others = s.funding_of_other_partners_pledged_grant * 100 / named;
    assert!(
        (60..=85).contains(&others),
        "{others}% of another partner's"
    );
    // About 40% of payments name a donor; those on their own 60%.
    let with_donor = s.payments_with_donor * 100 / s.payments;
    assert!(
        (30..=50).contains(&with_donor),
        "{with_donor}% of payments name a donor"
    );
    let standalone = s.payments - s.payments_against_pledges;
    let standalone_share = s.standalone_with_donor * 100 / standalone;
    assert!((50..=70).contains(&standalone_share), "{standalone_share}%");
    assert!(s.payments_against_pledges_with_donor > 0);
    // About 3% backdated, about 5% of allocations to areas.
    let backdated = s.backdated * 1000 / total;
    assert!((20..=40).contains(&backdated), "{backdated}‰ backdated");
    let areas = s.area_allocations * 1000 / s.allocations;
    assert!(
        (25..=80).contains(&areas),
        "{areas}‰ of allocations to areas"
    );
    // The mix of kinds.
    assert!((10..=16).contains(&share("pledge")), "{:?}", s.kinds);
    assert!((33..=40).contains(&share("payment")), "{:?}", s.kinds);
    assert!(
        (15..=21).contains(&share("parallel funding")),
        "{:?}",
        s.kinds
    );
    assert!((20..=26).contains(&share("in kind")), "{:?}", s.kinds);
    assert!((2..=4).contains(&share("reversal")), "{:?}", s.kinds);
}

#[test]
fn small_partner_counts_still_give_valid_logs() {
    for partners in [1, 2, 3, 4, 5] {
        for seed in 0..4 {
            let config = GenConfig {
                events: 3_000,
                partners,
                invalid_per_mille: 0,
            };
            let log = decoded(seed, config);
            assert_eq!(log.len(), 3_000);
            let s = survey(&log);
            assert_eq!(s.partners.len(), partners as usize);
            assert!(s.kinds.len() == 5, "{:?}", s.kinds);
        }
    }
    // And many invalid records do not confuse the model of what is open.
    let log = decoded(
        11,
        GenConfig {
            events: 20_000,
            partners: 5,
            invalid_per_mille: 250,
        },
    );
    survey(&log);
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    let config = GenConfig {
        events: 20_000,
        ..GenConfig::default()
    };
    let a: Vec<Vec<u8>> = LogGenerator::new(42, config).collect();
    let b: Vec<Vec<u8>> = LogGenerator::new(42, config).collect();
    assert_eq!(a.len(), 20_000);
    assert!(a == b, "two generators of one seed differ");
    let c: Vec<Vec<u8>> = LogGenerator::new(43, config).collect();
    assert!(a != c, "two seeds give one log");
}
