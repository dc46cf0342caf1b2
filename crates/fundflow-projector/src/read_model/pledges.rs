//! The pledge book on disk: one value per active pledge under `p<partner>\0<pledge id>`, so that
//! a pledge is one point read and a partner's pledges are one prefix scan in pledge-id order.

use std::ops::Bound;

use fundflow_domain::{Node, PledgeLine, PledgeRow};
#[cfg(test)]
use rust_decimal::Decimal;
use time::Date;

use super::codec::{Reader, date_of, put_decimal, put_name, unreadable};
use super::prefix;
use crate::ProjectorError;

/// Which pledges a pledge-book page keeps by what is paid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PledgeStatus {
    /// Some line is paid less than pledged.
    Open,
    /// Every line is paid in full.
    Paid,
    /// Both.
    #[default]
    All,
}

/// The filters of a pledge-book page; `None` keeps everything. `grant` is a pledge id; `from`
/// and `to` bound the pledge's `occurred_on`, inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PledgeFilter {
    /// The pledging partner.
    pub partner: Option<String>,
    /// The pledge id (a pledge is the grant its payments count under).
    pub grant: Option<String>,
    /// The sector.
    pub sector: Option<String>,
    /// Open, paid in full, or all.
    pub status: PledgeStatus,
    /// The first day.
    pub from: Option<Date>,
    /// The last day.
    pub to: Option<Date>,
}

/// A pledge-book cursor: the last (partner, pledge id) returned.
pub type PledgeCursor = (String, String);

pub(super) fn pledge_key(partner_id: &str, pledge_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + partner_id.len() + pledge_id.len());
    key.push(prefix::PLEDGE);
    key.extend_from_slice(partner_id.as_bytes());
    // Partner ids never hold a NUL, so the first one ends the partner.
    key.push(0);
    key.extend_from_slice(pledge_id.as_bytes());
    key
}

pub(super) fn split_pledge_key(key: &[u8]) -> Option<(String, String)> {
    let rest = key.strip_prefix(&[prefix::PLEDGE])?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let partner = std::str::from_utf8(&rest[..nul]).ok()?;
    let pledge = std::str::from_utf8(&rest[nul + 1..]).ok()?;
    Some((partner.to_owned(), pledge.to_owned()))
}

/// The value: currency u16, occurred_on (Julian day i32), a flags byte (bit 0: a USD rate
/// follows, bit 1: a pledged USD sum follows), those decimals, paid USD, payments unconverted
/// u32, donor and sector (length-prefixed), then per line node u16, pledged, paid.
pub(super) fn encode_pledge(row: &PledgeRow) -> Result<Vec<u8>, ProjectorError> {
    let mut value = Vec::with_capacity(64 + row.donor.len() + row.lines.len() * 34);
    value.extend_from_slice(&row.currency.to_be_bytes());
    value.extend_from_slice(&row.occurred_on.to_julian_day().to_be_bytes());
    let flags = u8::from(row.usd_rate.is_some()) | (u8::from(row.pledged_usd.is_some()) << 1);
    value.push(flags);
    for decimal in [row.usd_rate, row.pledged_usd].into_iter().flatten() {
        put_decimal(&mut value, decimal);
    }
    put_decimal(&mut value, row.paid_usd);
    value.extend_from_slice(&row.payments_unconverted.to_be_bytes());
    put_name(&mut value, row.donor.as_bytes())?;
    put_name(&mut value, row.sector.as_bytes())?;
    for line in &row.lines {
        value.extend_from_slice(&line.node.index().to_be_bytes());
        put_decimal(&mut value, line.pledged);
        put_decimal(&mut value, line.paid);
    }
    Ok(value)
}

pub(super) fn decode_pledge(
    partner_id: String,
    pledge_id: String,
    value: &[u8],
) -> Option<PledgeRow> {
    let mut r = Reader::new(value);
    let currency = r.u16()?;
    let occurred_on = date_of(r.i32()?)?;
    let flags = r.u8()?;
    let usd_rate = if flags & 1 != 0 {
        Some(r.decimal()?)
    } else {
        None
    };
    let pledged_usd = if flags & 2 != 0 {
        Some(r.decimal()?)
    } else {
        None
    };
    let paid_usd = r.decimal()?;
    let payments_unconverted = r.u32()?;
    let donor = r.name_str()?.to_owned();
    let sector = r.name_str()?.to_owned();
    let mut lines = Vec::new();
    while !r.is_empty() {
        lines.push(PledgeLine {
            node: Node::from_index(r.u16()?)?,
            pledged: r.decimal()?,
            paid: r.decimal()?,
        });
    }
    Some(PledgeRow {
        partner_id,
        pledge_id,
        currency,
        lines,
        donor,
        sector,
        occurred_on,
        usd_rate,
        pledged_usd,
        paid_usd,
        payments_unconverted,
    })
}

fn keeps(filter: &PledgeFilter, row: &PledgeRow) -> bool {
    let paid = row.lines.iter().all(|l| l.paid >= l.pledged);
    let status = match filter.status {
        PledgeStatus::Open => !paid,
        PledgeStatus::Paid => paid,
        PledgeStatus::All => true,
    };
    status
        && filter.grant.as_deref().is_none_or(|g| g == row.pledge_id)
        && filter.sector.as_deref().is_none_or(|s| s == row.sector)
        && filter.from.is_none_or(|from| row.occurred_on >= from)
        && filter.to.is_none_or(|to| row.occurred_on <= to)
}

/// A page of the pledge book in (partner, pledge id) order after `after` (see
/// [`crate::Snapshot::pledges`]).
pub(super) fn pledges(
    tree: &sled::Tree,
    filter: &PledgeFilter,
    after: Option<&PledgeCursor>,
    limit: usize,
) -> Result<(Vec<PledgeRow>, Option<PledgeCursor>), ProjectorError> {
    let storage = |e| ProjectorError::storage("cannot read the pledges", e);
    let scope = match &filter.partner {
        // `p<partner>\0`: that partner's pledges, and no other partner's.
        Some(partner) => pledge_key(partner, ""),
        None => vec![prefix::PLEDGE],
    };
    let start = match after {
        Some((partner, pledge)) => Bound::Excluded(pledge_key(partner, pledge)),
        None => Bound::Included(scope.clone()),
    };
    let mut rows = Vec::new();
    for entry in tree.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
        let (key, value) = entry.map_err(storage)?;
        if !key.starts_with(&scope) {
            break;
        }
        let row = split_pledge_key(&key)
            .and_then(|(partner, pledge)| decode_pledge(partner, pledge, &value))
            .ok_or_else(|| unreadable("pledge"))?;
        if keeps(filter, &row) {
            if rows.len() == limit {
                // One more follows: the page ends at its last row.
                let next = rows
                    .last()
                    .map(|r: &PledgeRow| (r.partner_id.clone(), r.pledge_id.clone()));
                return Ok((rows, next));
            }
            rows.push(row);
        }
    }
    Ok((rows, None))
}

/// A pledge row for the codec tests.
#[cfg(test)]
pub(super) fn sample(partner: &str, pledge: &str) -> PledgeRow {
    let d = |t: &str| t.parse::<Decimal>().unwrap_or_default();
    PledgeRow {
        partner_id: partner.into(),
        pledge_id: pledge.into(),
        currency: 3,
        lines: vec![
            PledgeLine {
                node: Node::from_index(0).unwrap_or_else(Node::world),
                pledged: d("100.00"),
                paid: d("40.00"),
            },
            PledgeLine {
                node: Node::world(),
                pledged: d("5"),
                paid: d("0"),
            },
        ],
        donor: "Fondation \u{e9}".into(),
        sector: "health".into(),
        occurred_on: Date::MIN,
        usd_rate: Some(d("1.2215")),
        pledged_usd: None,
        paid_usd: d("48.86"),
        payments_unconverted: 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pledges_round_trip() {
        let mut pledge = sample("icshp", "sg-2020-01");
        let key = pledge_key(&pledge.partner_id, &pledge.pledge_id);
        let (partner, id) = split_pledge_key(&key).unwrap();
        let value = encode_pledge(&pledge).unwrap();
        assert_eq!(
            decode_pledge(partner.clone(), id.clone(), &value).unwrap(),
            pledge
        );
        assert!(decode_pledge(partner.clone(), id.clone(), &value[..value.len() - 1]).is_none());
        (pledge.usd_rate, pledge.pledged_usd) = (None, Some(Decimal::ONE));
        let value = encode_pledge(&pledge).unwrap();
        assert_eq!(decode_pledge(partner, id, &value).unwrap(), pledge);
    }
}
