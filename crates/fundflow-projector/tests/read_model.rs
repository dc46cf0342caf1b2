//! The read model's queries over real sled and a real embedded log, each checked against an
//! oracle computed here from an in-memory fold of the same log: cells at every level, quantity
//! cells, outcomes per day, the pledge book, parallel funding per grant, and the flows list
//! with its filters, pages and pinned snapshots.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use fundflow_domain::{
    CellLevel, CellRef, Ledger, Month, Node, Outcome, PledgeRow, Source, TotalKind,
};
use fundflow_gen::{EnvelopeBody, GenConfig, LogGenerator};
use fundflow_log::embedded::EmbeddedLog;
use fundflow_log::{AppendRequest, EventLog};
use fundflow_projector::{
    FlowQuery, FlowStatus, PledgeFilter, PledgeStatus, Projector, ProjectorConfig, ReadModel,
    RunUntil,
};
use fundflow_proto::{Message, v1};
use rust_decimal::Decimal;
use time::Date;

/// `events` generated records from `seed`, with `occurred_on` spread over 2018 and 2019 (the
/// generator puts a day's worth of events on each day, all in January 2020) so that pages cross
/// days, months and years, and dates do not follow seqs.
fn spread_log(seed: u64, events: u64) -> Vec<AppendRequest> {
    let first = Date::from_calendar_date(2018, time::Month::January, 1).unwrap();
    LogGenerator::new(
        seed,
        GenConfig {
            events,
            ..GenConfig::default()
        },
    )
    .enumerate()
    .filter_map(|(i, record)| {
        let mut e = v1::Envelope::decode(record.as_slice()).ok()?;
        if !fundflow_domain::wire::is_valid_partner_id(&e.partner_id) {
            return None;
        }
        let day = first + time::Duration::days(i64::try_from((i * 7919) % 730).unwrap());
        e.occurred_on = day.to_string();
        Some(AppendRequest {
            partner_id: e.partner_id.clone(),
            event_id: e.event_id.clone(),
            envelope: Bytes::from(e.encode_to_vec()),
        })
    })
    .collect()
}

async fn log_of(dir: &std::path::Path, requests: &[AppendRequest]) -> EventLog {
    let log = EventLog::from(EmbeddedLog::open(dir).await.unwrap());
    log.append_batch(requests).await.unwrap();
    log
}

fn config(batch_max: usize) -> ProjectorConfig {
    ProjectorConfig {
        batch_max,
        ..ProjectorConfig::default()
    }
}

/// One applied flow as the oracle knows it.
#[derive(Debug, Clone)]
struct Flow {
    seq: u64,
    day: Date,
    partner: String,
    kind: TotalKind,
    grant: String,
    sector: String,
    donor: String,
    nodes: Vec<Node>,
    reversed_at: Option<u64>,
}

/// Folds the log in memory, keeping every applied flow and when it was reversed.
async fn oracle(log: &EventLog) -> (Ledger, Vec<Flow>) {
    let mut ledger = Ledger::new();
    let mut flows: Vec<Flow> = Vec::new();
    let last = log.last_seq().await.unwrap();
    let mut reader = log.reader(1).await.unwrap();
    while ledger.last_seq() < last {
        for r in reader
            .next_batch(1000, std::time::Duration::from_secs(1))
            .await
            .unwrap()
        {
            let source = Source {
                subject_partner: Some(&r.partner),
            };
            let (outcome, touched) = ledger.apply_tracked(r.seq, &r.bytes, source);
            let Some(touched) = touched else {
                assert!(matches!(outcome, Outcome::Rejected(_)));
                continue;
            };
            if let Some(target) = touched.reversed_seq() {
                let flow = flows.iter_mut().find(|f| f.seq == target).unwrap();
                flow.reversed_at = Some(r.seq);
                continue;
            }
            let dims = touched.dims();
            flows.push(Flow {
                seq: r.seq,
                day: dims.occurred_on,
                partner: dims.partner.to_owned(),
                kind: touched.kind(),
                grant: dims.grant.to_owned(),
                sector: dims.sector.to_owned(),
                donor: dims.donor.to_owned(),
                nodes: touched.parts().map(|(n, _, _)| n).collect(),
                reversed_at: None,
            });
        }
    }
    (ledger, flows)
}

/// The seqs a query must return as of `as_of`, in page order, filtered here, independently of
/// the read model's indexes.
fn expected(flows: &[Flow], q: &FlowQuery, as_of: u64) -> Vec<u64> {
    let same = |f: &Option<String>, v: &str| f.as_deref().is_none_or(|f| f == v);
    let mut kept: Vec<&Flow> = flows
        .iter()
        .filter(|f| f.seq <= as_of)
        .filter(|f| {
            let reversed = f.reversed_at.is_some_and(|r| r <= as_of);
            match q.status {
                FlowStatus::Applied => !reversed,
                FlowStatus::Reversed => reversed,
                FlowStatus::All => true,
            }
        })
        .filter(|f| q.kind.is_none_or(|k| k == f.kind))
        .filter(|f| same(&q.partner, &f.partner))
        .filter(|f| same(&q.grant, &f.grant))
        .filter(|f| same(&q.donor, &f.donor))
        .filter(|f| same(&q.sector, &f.sector))
        .filter(|f| {
            q.node
                .is_none_or(|node| f.nodes.iter().any(|n| n.rollup().any(|up| up == node)))
        })
        .filter(|f| q.from.is_none_or(|d| f.day >= d) && q.to.is_none_or(|d| f.day <= d))
        .collect();
    kept.sort_by_key(|f| std::cmp::Reverse((f.day, f.seq)));
    kept.into_iter().map(|f| f.seq).collect()
}

/// Every page of a listing, checking each page's shape; returns the seqs in order.
fn all_pages(
    model: &ReadModel,
    q: &FlowQuery,
    as_of: u64,
    limit: usize,
    after: Option<(Date, u64)>,
) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut cursor = after;
    loop {
        let (page, next) = model.flows(q, as_of, cursor, limit).unwrap();
        assert!(page.len() <= limit);
        for record in &page {
            seqs.push(record.seq);
            assert!(record.seq <= as_of);
        }
        let Some(next) = next else {
            break;
        };
        let last = page.last().expect("a page with a next cursor is not empty");
        assert_eq!(next, (last.occurred_on().unwrap(), last.seq));
        assert_eq!(page.len(), limit, "only the last page is short");
        cursor = Some(next);
    }
    seqs
}

/// A cell as comparable owned data: (period), (names), (recipient, kind, currency), (total).
type OwnedCell = (
    (i32, Option<Month>, Option<Date>),
    (String, Option<String>, Option<String>, Option<String>),
    (Node, TotalKind, u16),
    (Decimal, Decimal, Decimal),
);

fn owned_ref<'a>(cells: impl IntoIterator<Item = CellRef<'a>>) -> Vec<OwnedCell> {
    let name = |n: Option<&str>| n.map(str::to_owned);
    let mut out: Vec<OwnedCell> = cells
        .into_iter()
        .map(|c| {
            (
                (c.year, c.month, c.day),
                (
                    c.partner.to_owned(),
                    name(c.grant),
                    name(c.sector),
                    name(c.donor),
                ),
                (c.node, c.kind, c.currency),
                (c.total.amount, c.total.usd_equivalent, c.total.unconverted),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn cells_outcomes_and_the_model_digest_equal_the_fold_after_many_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(&dir.path().join("log"), &spread_log(11, 5_000)).await;
    let last = log.last_seq().await.unwrap();
    let model_dir = dir.path().join("model");
    let projector = Projector::open(&model_dir, &log, config(150))
        .await
        .unwrap();
    let model = projector.model().clone();

    // A reader beside the projector: every snapshot must be one fold's state, so the cells of
    // each snapshot add up to its direct totals, and its day outcomes to its applied count.
    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));
    let reader = {
        let (model, stop, checked) = (model.clone(), Arc::clone(&stop), Arc::clone(&checked));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                model.read(|s| {
                    let state = s.totals().unwrap();
                    let cells = s.cells(CellLevel::Year, None, None).unwrap();
                    let mut sums = std::collections::BTreeMap::new();
                    for cell in cells.iter() {
                        let cell = cell.unwrap();
                        *sums
                            .entry((cell.node, cell.kind, cell.currency))
                            .or_insert(Decimal::ZERO) += cell.total.amount;
                    }
                    let mut direct: std::collections::BTreeMap<_, _> = state
                        .direct_totals
                        .iter()
                        .map(|(k, t)| ((k.node, k.kind, k.currency), t.amount))
                        .collect();
                    sums.retain(|_, v| !v.is_zero());
                    direct.retain(|_, v: &mut Decimal| !v.is_zero());
                    assert_eq!(sums, direct, "at seq {}", state.checkpoint.last_seq);
                    let days = s.day_outcomes(None, None).unwrap();
                    assert_eq!(days.applied, state.checkpoint.applied);
                    assert!(days.rejected <= state.checkpoint.rejected);
                });
                checked.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let projector = projector
        .run(log.clone(), RunUntil::Seq(last))
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert!(checked.load(Ordering::Relaxed) > 0);
    assert!(projector.metrics().batches.load(Ordering::Relaxed) >= 20);

    let (ledger, flows) = oracle(&log).await;
    assert!(
        flows.iter().any(|f| f.reversed_at.is_some()),
        "the log has reversals"
    );
    assert_eq!(model.state().unwrap().model_digest(), ledger.model_digest());
    for level in [CellLevel::Year, CellLevel::Month, CellLevel::Day] {
        let stored = model.cells(level, None, None).unwrap();
        let stored = owned_ref(stored.iter().map(Result::unwrap));
        assert_eq!(stored, owned_ref(ledger.cells(level)), "{level:?}");
        assert!(stored.len() > 100, "{level:?}: {}", stored.len());
        // One partner, some periods: exactly that part of the fold's cells.
        let partner = "partner-07";
        let periods = match level {
            CellLevel::Year => 2019..=2019,
            _ => Month::new(2018, 11).unwrap().0..=Month::new(2019, 2).unwrap().0,
        };
        let part = model
            .cells(level, Some(periods.clone()), Some(partner))
            .unwrap();
        let part = owned_ref(part.iter().map(Result::unwrap));
        let period_of = |c: &CellRef<'_>| match level {
            CellLevel::Year => u32::try_from(c.year).unwrap(),
            _ => c.month.unwrap().0,
        };
        let want = owned_ref(
            ledger
                .cells(level)
                .into_iter()
                .filter(|c| c.partner == partner && periods.contains(&period_of(c))),
        );
        assert!(!want.is_empty());
        assert_eq!(part, want, "{level:?} of {partner}");
    }
    let quantities = model.quantity_cells(None, None).unwrap();
    let mut stored: Vec<_> = quantities
        .iter()
        .map(|c| {
            let c = c.unwrap();
            (
                c.day,
                c.partner.to_owned(),
                c.node,
                c.item.to_owned(),
                c.unit.to_owned(),
                c.quantity,
            )
        })
        .collect();
    let mut folded: Vec<_> = ledger
        .quantity_cells()
        .into_iter()
        .map(|c| {
            (
                c.day,
                c.partner.to_owned(),
                c.node,
                c.item.to_owned(),
                c.unit.to_owned(),
                c.quantity,
            )
        })
        .collect();
    stored.sort();
    folded.sort();
    assert_eq!(stored, folded);
    assert!(!stored.is_empty());

    let from = Date::from_calendar_date(2018, time::Month::March, 3).unwrap();
    let to = Date::from_calendar_date(2019, time::Month::February, 28).unwrap();
    let (checkpoint, days) = model.day_outcomes(Some(from), Some(to)).unwrap();
    assert_eq!(checkpoint, ledger.checkpoint());
    let (applied, rejected) = ledger
        .day_outcomes()
        .filter(|(d, _)| (from..=to).contains(d))
        .fold((0, 0), |(a, r), (_, o)| (a + o.applied, r + o.rejected));
    assert_eq!((days.applied, days.rejected), (applied, rejected));
    assert!(applied > 0 && rejected > 0);

    // A restart checks the model against a refold, the coarser levels included.
    drop(projector);
    drop(model);
    let reopened = Projector::open(&model_dir, &log, config(150))
        .await
        .unwrap();
    assert_eq!(reopened.ledger().model_digest(), ledger.model_digest());
}

#[tokio::test(flavor = "multi_thread")]
async fn flows_pages_return_every_flow_once_in_order_under_every_filter() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(&dir.path().join("log"), &spread_log(12, 4_000)).await;
    let last = log.last_seq().await.unwrap();
    let projector = Projector::open(&dir.path().join("model"), &log, config(200))
        .await
        .unwrap();
    let projector = projector
        .run(log.clone(), RunUntil::Seq(last))
        .await
        .unwrap();
    let model = projector.model();
    let (_, flows) = oracle(&log).await;

    let mut country_counts = std::collections::BTreeMap::new();
    for f in &flows {
        for n in &f.nodes {
            if n.scope() == fundflow_domain::Scope::Country {
                *country_counts.entry(*n).or_insert(0) += 1;
            }
        }
    }
    let busiest = country_counts
        .iter()
        .max_by_key(|(_, c)| **c)
        .map(|(n, _)| *n)
        .unwrap();
    let paid_grant = flows
        .iter()
        .filter(|f| f.kind == TotalKind::Paid && !f.grant.is_empty())
        .map(|f| f.grant.clone())
        .find(|g| flows.iter().filter(|f| &f.grant == g).count() >= 2)
        .unwrap();
    let day = |y, m, d| Date::from_calendar_date(y, m, d).unwrap();
    let queries = [
        FlowQuery::default(),
        FlowQuery {
            node: Some(busiest),
            ..FlowQuery::default()
        },
        FlowQuery {
            node: Some(Node::region("014").unwrap()),
            ..FlowQuery::default()
        },
        FlowQuery {
            node: Some(Node::region("002").unwrap()),
            from: Some(day(2018, time::Month::June, 10)),
            ..FlowQuery::default()
        },
        FlowQuery {
            node: Some(Node::world()),
            kind: Some(TotalKind::InKind),
            ..FlowQuery::default()
        },
        FlowQuery {
            partner: Some("partner-03".into()),
            ..FlowQuery::default()
        },
        FlowQuery {
            partner: Some("partner-03".into()),
            kind: Some(TotalKind::Pledged),
            status: FlowStatus::All,
            ..FlowQuery::default()
        },
        FlowQuery {
            grant: Some(paid_grant),
            status: FlowStatus::All,
            ..FlowQuery::default()
        },
        FlowQuery {
            kind: Some(TotalKind::ParallelFunding),
            from: Some(day(2018, time::Month::December, 31)),
            to: Some(day(2019, time::Month::March, 1)),
            ..FlowQuery::default()
        },
        FlowQuery {
            donor: Some("Test Donor".into()),
            to: Some(day(2018, time::Month::April, 15)),
            ..FlowQuery::default()
        },
        FlowQuery {
            sector: Some("health".into()),
            ..FlowQuery::default()
        },
        FlowQuery {
            status: FlowStatus::Reversed,
            ..FlowQuery::default()
        },
        FlowQuery {
            status: FlowStatus::Reversed,
            node: Some(Node::region("142").unwrap()),
            partner: Some("partner-11".into()),
            ..FlowQuery::default()
        },
        FlowQuery {
            status: FlowStatus::All,
            ..FlowQuery::default()
        },
        FlowQuery {
            grant: Some("no such grant".into()),
            ..FlowQuery::default()
        },
    ];
    for q in &queries {
        let want = expected(&flows, q, last);
        for limit in [1000, 37] {
            let got = all_pages(model, q, last, limit, None);
            assert_eq!(got, want, "{q:?} in pages of {limit}");
        }
        if q.grant.as_deref() != Some("no such grant") {
            assert!(!want.is_empty(), "{q:?} finds something");
        }
    }
    // The records read back carry what the fold decided and the envelope as logged.
    let (page, _) = model
        .flows(
            &FlowQuery {
                status: FlowStatus::Reversed,
                ..FlowQuery::default()
            },
            last,
            None,
            5,
        )
        .unwrap();
    for record in &page {
        let flow = flows.iter().find(|f| f.seq == record.seq).unwrap();
        assert_eq!(Some(record.reversed_seq), flow.reversed_at);
        assert!(!record.reversed_by.is_empty());
        assert_eq!(record.reason, "entered twice");
        assert_eq!(record.decode_envelope().unwrap().partner_id, flow.partner);
        assert_eq!(record.kind(), Some(flow.kind));
        assert_eq!(
            record.recipients().map(Option::unwrap).collect::<Vec<_>>(),
            flow.nodes
        );
    }
    // As of an earlier seq the same flows are not reversed yet.
    let first = page[0].clone();
    let (before, _) = model
        .flows(
            &FlowQuery {
                status: FlowStatus::All,
                grant: Some(first.grant.clone()),
                partner: Some(first.partner.clone()),
                ..FlowQuery::default()
            },
            first.reversed_seq - 1,
            None,
            1000,
        )
        .unwrap();
    let again = before.iter().find(|r| r.seq == first.seq).unwrap();
    assert!(!again.is_reversed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_cursor_pinned_at_a_seq_ignores_what_is_folded_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let requests = spread_log(13, 4_000);
    let (early, late) = requests.split_at(2_000);
    let log = log_of(&dir.path().join("log"), early).await;
    let pinned = log.last_seq().await.unwrap();
    let projector = Projector::open(&dir.path().join("model"), &log, config(300))
        .await
        .unwrap();
    let projector = projector
        .run(log.clone(), RunUntil::Seq(pinned))
        .await
        .unwrap();
    let queries = [
        FlowQuery::default(),
        FlowQuery {
            status: FlowStatus::All,
            ..FlowQuery::default()
        },
        FlowQuery {
            node: Some(Node::region("150").unwrap()),
            ..FlowQuery::default()
        },
        FlowQuery {
            partner: Some("partner-05".into()),
            status: FlowStatus::Reversed,
            ..FlowQuery::default()
        },
    ];
    let mut first_pages = Vec::new();
    for q in &queries {
        let (page, next) = projector.model().flows(q, pinned, None, 25).unwrap();
        first_pages.push((page.iter().map(|r| r.seq).collect::<Vec<_>>(), next));
    }

    // More flows (some dated before the cursor) and reversals of early flows arrive.
    log.append_batch(late).await.unwrap();
    let last = log.last_seq().await.unwrap();
    let projector = projector
        .run(log.clone(), RunUntil::Seq(last))
        .await
        .unwrap();
    let (_, flows) = oracle(&log).await;
    assert!(
        flows
            .iter()
            .any(|f| f.seq <= pinned && f.reversed_at.is_some_and(|r| r > pinned)),
        "early flows are reversed late"
    );
    for (q, (first, next)) in queries.iter().zip(first_pages) {
        let mut got = first;
        if next.is_some() {
            got.extend(all_pages(projector.model(), q, pinned, 25, next));
        }
        assert_eq!(got, expected(&flows, q, pinned), "{q:?} pinned at {pinned}");
        assert_ne!(
            expected(&flows, q, pinned),
            expected(&flows, q, last),
            "{q:?}: the later records change the listing"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pledge_book_pages_in_key_order_with_its_filters() {
    let dir = tempfile::tempdir().unwrap();
    let mut requests = spread_log(14, 4_000);
    // The generator pays pledges by halves: one pledge paid in full.
    let full = fundflow_gen::flow("100.00", "USD", &[("NPL", "100.00")]);
    for (id, body) in [
        (1u128 << 100, fundflow_gen::pledge("full-1", full.clone())),
        (
            (1 << 100) + 1,
            fundflow_gen::payment("pay-full", "full-1", full),
        ),
    ] {
        let e = fundflow_gen::envelope("partner-01", id, body);
        requests.push(AppendRequest {
            partner_id: e.partner_id.clone(),
            event_id: e.event_id.clone(),
            envelope: Bytes::from(e.encode_to_vec()),
        });
    }
    let log = log_of(&dir.path().join("log"), &requests).await;
    let last = log.last_seq().await.unwrap();
    let projector = Projector::open(&dir.path().join("model"), &log, config(250))
        .await
        .unwrap();
    let projector = projector
        .run(log.clone(), RunUntil::Seq(last))
        .await
        .unwrap();
    let model = projector.model();
    let ledger = projector.ledger();
    let mut all: Vec<PledgeRow> = ledger
        .pledges()
        .map(|p| ledger.pledge_row(p.partner_id, p.pledge_id).unwrap())
        .collect();
    all.sort_by(|a, b| (&a.partner_id, &a.pledge_id).cmp(&(&b.partner_id, &b.pledge_id)));
    assert!(all.len() > 100);
    let paid = |r: &PledgeRow| r.lines.iter().all(|l| l.paid >= l.pledged);
    assert!(
        all.iter().any(paid) && !all.iter().all(paid),
        "some paid, some open"
    );
    let from = Date::from_calendar_date(2019, time::Month::January, 1).unwrap();
    type Keep = Box<dyn Fn(&PledgeRow) -> bool>;
    let filters: Vec<(PledgeFilter, Keep)> = vec![
        (PledgeFilter::default(), Box::new(|_| true)),
        (
            PledgeFilter {
                status: PledgeStatus::Open,
                ..PledgeFilter::default()
            },
            Box::new(move |r| !paid(r)),
        ),
        (
            PledgeFilter {
                status: PledgeStatus::Paid,
                ..PledgeFilter::default()
            },
            Box::new(paid),
        ),
        (
            PledgeFilter {
                partner: Some("partner-09".into()),
                from: Some(from),
                ..PledgeFilter::default()
            },
            Box::new(move |r| r.partner_id == "partner-09" && r.occurred_on >= from),
        ),
        (
            PledgeFilter {
                partner: Some(all[7].partner_id.clone()),
                grant: Some(all[7].pledge_id.clone()),
                sector: Some("health".into()),
                ..PledgeFilter::default()
            },
            {
                let (p, g) = (all[7].partner_id.clone(), all[7].pledge_id.clone());
                Box::new(move |r| r.partner_id == p && r.pledge_id == g)
            },
        ),
    ];
    for (filter, keep) in &filters {
        let want: Vec<&PledgeRow> = all.iter().filter(|r| keep(r)).collect();
        assert!(!want.is_empty(), "{filter:?}");
        let mut got = Vec::new();
        let mut cursor = None;
        loop {
            let (rows, next) = model.pledges(filter, cursor.as_ref(), 33).unwrap();
            got.extend(rows);
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "{filter:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_funding_per_grant_follows_its_reversals() {
    let envelope = |partner: &str, id: u128, day: &str, body| {
        let mut e = fundflow_gen::envelope(partner, id, body);
        e.occurred_on = day.to_owned();
        e
    };
    let funding = |id: &str, grant: &str, flow| {
        let EnvelopeBody::ParallelFundingMobilized(mut p) =
            fundflow_gen::parallel_funding(id, flow)
        else {
            unreachable!()
        };
        p.grant_id = grant.to_owned();
        EnvelopeBody::ParallelFundingMobilized(p)
    };
    let usd = |v: &str, to: &str| fundflow_gen::flow(v, "USD", &[(to, v)]);
    let eur = fundflow_gen::with_rate(
        fundflow_gen::flow("50.00", "EUR", &[("KEN", "50.00")]),
        "1.2",
    );
    let envelopes = [
        envelope(
            "icshp",
            1,
            "2020-03-01",
            funding("f1", "sg-7", usd("100.00", "NPL")),
        ),
        envelope("unido", 2, "2020-03-02", funding("f2", "sg-7", eur)),
        envelope(
            "icshp",
            3,
            "2020-03-02",
            funding("f3", "sg-7", usd("30.00", "NPL")),
        ),
        envelope(
            "icshp",
            4,
            "2020-12-15",
            funding("f4", "other", usd("5.00", "NPL")),
        ),
        envelope("icshp", 5, "2020-12-20", fundflow_gen::reversal(3)),
        envelope("unido", 6, "2020-12-21", fundflow_gen::reversal(2)),
        envelope("icshp", 7, "2020-12-22", fundflow_gen::reversal(1)),
    ];
    let requests: Vec<AppendRequest> = envelopes
        .iter()
        .map(|e| AppendRequest {
            partner_id: e.partner_id.clone(),
            event_id: e.event_id.clone(),
            envelope: Bytes::from(e.encode_to_vec()),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(&dir.path().join("log"), &requests[..4]).await;
    let projector = Projector::open(&dir.path().join("model"), &log, config(2))
        .await
        .unwrap();
    let mut projector = projector.run(log.clone(), RunUntil::Seq(4)).await.unwrap();
    let usd_index = u16::try_from(
        fundflow_refdata::CURRENCIES
            .iter()
            .position(|c| c.code == "USD")
            .unwrap(),
    )
    .unwrap();
    let dollars = |text: &str| text.parse::<Decimal>().unwrap();
    let funding_of = |p: &Projector, grant: &str| {
        let stored = p.model().grant_funding(grant).unwrap();
        assert_eq!(stored, p.ledger().grant_funding(grant), "{grant}");
        stored
    };
    let sg7 = funding_of(&projector, "sg-7");
    assert_eq!(sg7.len(), 2);
    let usd_total = sg7.iter().find(|(c, _)| *c == usd_index).unwrap().1;
    assert_eq!(usd_total.amount, dollars("130.00"));
    for (i, request) in requests[4..].iter().enumerate() {
        log.append_batch(std::slice::from_ref(request))
            .await
            .unwrap();
        projector = projector
            .run(log.clone(), RunUntil::Seq(5 + i as u64))
            .await
            .unwrap();
        let sg7 = funding_of(&projector, "sg-7");
        match i {
            0 => {
                let usd_total = sg7.iter().find(|(c, _)| *c == usd_index).unwrap().1;
                assert_eq!(
                    usd_total.amount,
                    dollars("100.00"),
                    "the reversed funding is gone"
                );
                let (reversed, next) = projector
                    .model()
                    .flows(
                        &FlowQuery {
                            status: FlowStatus::Reversed,
                            ..FlowQuery::default()
                        },
                        5,
                        None,
                        10,
                    )
                    .unwrap();
                assert_eq!(reversed.len(), 1);
                assert!(next.is_none());
                assert_eq!((reversed[0].seq, reversed[0].reversed_seq), (3, 5));
                assert_eq!(reversed[0].reversed_by, envelopes[4].event_id);
                assert_eq!(reversed[0].grant, "sg-7");
                let (applied, _) = projector
                    .model()
                    .flows(
                        &FlowQuery {
                            grant: Some("sg-7".into()),
                            ..FlowQuery::default()
                        },
                        5,
                        None,
                        10,
                    )
                    .unwrap();
                assert_eq!(
                    applied.iter().map(|r| r.seq).collect::<Vec<_>>(),
                    vec![2, 1]
                );
            }
            1 => assert_eq!(sg7.len(), 1),
            _ => assert!(sg7.is_empty(), "no funding left for the grant"),
        }
    }
    assert_eq!(funding_of(&projector, "other").len(), 1);
    assert!(funding_of(&projector, "nothing").is_empty());
    assert_eq!(
        projector.model().state().unwrap().model_digest(),
        projector.ledger().model_digest()
    );
}
