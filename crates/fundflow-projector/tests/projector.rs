//! The projector over the embedded log: the read model equals the fold, survives reopening, and
//! refuses a log that is not the one it was built from.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::filled_log;
use fundflow_api::{Periods, Report, SummaryQuery};
use fundflow_domain::Ledger;
use fundflow_domain::{CellLevel, SummaryPart, Total};
use fundflow_log::EventLog;
use fundflow_projector::{
    FlowQuery, FlowStatus, Projector, ProjectorConfig, ProjectorError, ReadModel, RunUntil,
};

/// A fold of the whole log in memory, the way an auditor would.
async fn replay(log: &EventLog) -> Ledger {
    let mut ledger = Ledger::new();
    let mut reader = log.reader(1).await.unwrap();
    let last = log.last_seq().await.unwrap();
    while ledger.last_seq() < last {
        for r in reader
            .next_batch(1000, std::time::Duration::from_secs(1))
            .await
            .unwrap()
        {
            ledger.apply_from(
                r.seq,
                &r.bytes,
                fundflow_domain::Source {
                    subject_partner: Some(&r.partner),
                },
            );
        }
    }
    ledger
}

#[tokio::test(flavor = "multi_thread")]
async fn the_read_model_holds_exactly_the_fold_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(&dir.path().join("log"), 5, 20_000).await;
    let last = log.last_seq().await.unwrap();
    let config = ProjectorConfig {
        batch_max: 1000,
        ..ProjectorConfig::default()
    };
    let projector = Projector::open(&dir.path().join("model"), &log, config.clone())
        .await
        .unwrap();
    let projector = projector
        .run(log.clone(), RunUntil::Seq(last))
        .await
        .unwrap();
    assert!(
        projector
            .metrics()
            .batches
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 19
    );
    drop(projector);

    let expected = replay(&log).await;
    let model = ReadModel::open(&dir.path().join("model")).unwrap();
    let state = model.state().unwrap();
    assert_eq!(state.checkpoint, expected.checkpoint());
    assert_eq!(state.model_digest(), expected.model_digest());
    assert_eq!(Report::of_state(&state), Report::of(&expected));
    let outcomes = model.outcomes().unwrap();
    assert_eq!(outcomes.len() as u64, last);
    assert!(
        outcomes.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "one outcome per seq, in order"
    );
    let rejected = outcomes.iter().filter(|(_, code)| *code != 0).count();
    assert_eq!(rejected as u64, expected.counts().1);

    // The point reads the query API uses agree with the fold: every pledge, every outcome.
    let mut pledges = 0;
    for pledge in expected.pledges() {
        let row = model
            .pledge(pledge.partner_id, pledge.pledge_id)
            .unwrap()
            .unwrap();
        assert_eq!(
            row.lines, pledge.lines,
            "{}/{}",
            pledge.partner_id, pledge.pledge_id
        );
        pledges += 1;
    }
    assert!(pledges > 100, "the generated log has pledges ({pledges})");
    assert!(model.pledge("nobody", "p").unwrap().is_none());
    for rejection in expected.rejected() {
        let outcome = model.outcome(rejection.seq).unwrap().unwrap();
        assert_eq!(outcome.unwrap_err(), rejection.rejection);
    }
    for (seq, code) in outcomes.iter().step_by(97) {
        assert_eq!(
            model.outcome(*seq).unwrap().unwrap().is_ok(),
            *code == 0,
            "seq {seq}"
        );
    }
    assert!(model.outcome(last + 1).unwrap().is_none());

    // The coarser levels and the summary parts per year are the refold's cells summed.
    model.check_levels(&expected).unwrap();
    // A summary of whole years read from the parts is the summary of the refold's cells.
    for (from, to) in [
        (None, None),
        (Some("2020-01-01"), Some("2020-12-31")),
        (Some("2019-01-01"), Some("2021-12-31")),
        (Some("2021-01-01"), None),
    ] {
        let query = SummaryQuery::parse(from, to).unwrap();
        assert!(query.on_year_boundaries());
        let cells = expected.cells(CellLevel::Month);
        let quantities = expected.quantity_cells();
        let outcomes = query.period.outcomes(expected.day_outcomes());
        let folded = fundflow_api::summary(cells, quantities, outcomes, &query, last).unwrap();
        let parts = model
            .read(|s| {
                let years = query.period.periods(CellLevel::Year).map(|p| match p {
                    Periods::Years { first, last } => {
                        first.map_or(0, |y| y as u32)..=last.map_or(u32::MAX, |y| y as u32)
                    }
                    Periods::Months { .. } => unreachable!("years asked for"),
                });
                s.summary_parts(years)
            })
            .unwrap();
        let parts = parts.iter().map(|p| p.unwrap().1);
        let stored = fundflow_api::summary_of_parts(parts, outcomes, &query, last).unwrap();
        assert_eq!(stored, folded, "{from:?}..{to:?}");
        assert!(stored.grants > 10 && stored.partners > 5, "{stored:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reopening_verifies_the_model_and_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(&dir.path().join("log"), 6, 5_000).await;
    let model_dir = dir.path().join("model");
    let config = ProjectorConfig {
        batch_max: 500,
        ..ProjectorConfig::default()
    };
    let projector = Projector::open(&model_dir, &log, config.clone())
        .await
        .unwrap();
    let projector = projector
        .run(log.clone(), RunUntil::Seq(2_000))
        .await
        .unwrap();
    let stopped_at = projector.ledger().last_seq();
    assert!((2_000..2_500).contains(&stopped_at), "{stopped_at}");
    drop(projector);

    let projector = Projector::open(&model_dir, &log, config).await.unwrap();
    assert_eq!(projector.ledger().last_seq(), stopped_at);
    let last = log.last_seq().await.unwrap();
    let projector = projector
        .run(log.clone(), RunUntil::Seq(last))
        .await
        .unwrap();
    assert_eq!(
        projector.ledger().model_digest(),
        replay(&log).await.model_digest()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_built_from_another_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log_a = filled_log(&dir.path().join("a"), 7, 2_000).await;
    let log_b = filled_log(&dir.path().join("b"), 8, 2_000).await;
    let model_dir = dir.path().join("model");
    let last = log_a.last_seq().await.unwrap();
    let projector = Projector::open(&model_dir, &log_a, ProjectorConfig::default())
        .await
        .unwrap();
    drop(projector.run(log_a, RunUntil::Seq(last)).await.unwrap());

    let Err(err) = Projector::open(&model_dir, &log_b, ProjectorConfig::default()).await else {
        panic!("another log must be refused");
    };
    assert!(matches!(err, ProjectorError::Mismatch(_)), "{err}");
    assert!(err.to_string().contains("rebuild"), "{err}");
}

/// Pins the read model's bytes on disk for a seeded log: its layout is a format (a model of
/// another layout is rebuilt), so a change to the fold or to what a batch writes that moves any
/// byte must show up here. Values whose keys depend on how the reader happened to batch the
/// records are pinned by what they hold instead: the outcomes are left out (their keys are the
/// first seq of each batch), and the runs of cells and postings and the reversals are pinned
/// through what the queries read from them.
#[tokio::test(flavor = "multi_thread")]
async fn the_read_model_of_a_seeded_log_is_byte_for_byte_as_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(&dir.path().join("log"), 7, 20_000).await;
    let last = log.last_seq().await.unwrap();
    let config = ProjectorConfig {
        batch_max: 1000,
        ..ProjectorConfig::default()
    };
    let projector = Projector::open(&dir.path().join("model"), &log, config)
        .await
        .unwrap();
    let projector = projector.run(log, RunUntil::Seq(last)).await.unwrap();
    let mut pinned: Vec<Vec<u8>> = Vec::new();
    let model = projector.model();
    for level in [CellLevel::Year, CellLevel::Month, CellLevel::Day] {
        let cells = model.cells(level, None, None).unwrap();
        // Amounts normalized: a sum's scale depends on which runs were merged before it.
        let mut lines: Vec<String> = cells
            .iter()
            .map(|c| {
                let c = c.unwrap();
                let t = c.total;
                format!(
                    "{} {:?} {:?} {} {:?} {:?} {:?} {} {:?} {} {} {} {}",
                    c.year,
                    c.month,
                    c.day,
                    c.partner,
                    c.grant,
                    c.sector,
                    c.donor,
                    c.node.key(),
                    c.kind,
                    c.currency,
                    t.amount.normalize(),
                    t.usd_equivalent.normalize(),
                    t.unconverted.normalize()
                )
            })
            .collect();
        lines.sort();
        pinned.extend(lines.into_iter().map(String::into_bytes));
    }
    let quantities = model.quantity_cells(None, None).unwrap();
    let mut lines: Vec<String> = quantities
        .iter()
        .map(|c| {
            let c = c.unwrap();
            let (node, quantity) = (c.node.key(), c.quantity.normalize());
            format!(
                "{} {} {node} {} {} {quantity}",
                c.day, c.partner, c.item, c.unit
            )
        })
        .collect();
    lines.sort();
    pinned.extend(lines.into_iter().map(String::into_bytes));
    let parts = model.read(|s| s.summary_parts(None)).unwrap();
    let mut lines: Vec<String> = parts
        .iter()
        .map(|p| {
            let (year, part) = p.unwrap();
            let t = |t: Total| {
                let (a, u, n) = (t.amount, t.usd_equivalent, t.unconverted);
                format!("{} {} {}", a.normalize(), u.normalize(), n.normalize())
            };
            match part {
                SummaryPart::Recipient {
                    node,
                    kind,
                    currency,
                    total,
                } => format!("{year} r {} {kind:?} {currency} {}", node.key(), t(total)),
                SummaryPart::Partner {
                    partner,
                    kind,
                    currency,
                    total,
                } => format!("{year} p {partner} {kind:?} {currency} {}", t(total)),
                SummaryPart::Grant {
                    grant,
                    kind,
                    currency,
                    total,
                } => format!("{year} g {grant} {kind:?} {currency} {}", t(total)),
                SummaryPart::Item {
                    item,
                    unit,
                    quantity,
                } => format!("{year} i {item} {unit} {}", quantity.normalize()),
            }
        })
        .collect();
    lines.sort();
    pinned.extend(lines.into_iter().map(String::into_bytes));
    let every_flow = FlowQuery {
        status: FlowStatus::All,
        ..FlowQuery::default()
    };
    let mut cursor = None;
    loop {
        let (page, next) = model.flows(&every_flow, last, cursor, 1000).unwrap();
        for r in page {
            let line = format!(
                "flow {} {} {} {}",
                r.seq, r.occurred_on_day, r.reversed_seq, r.reversed_by
            );
            pinned.push(line.into_bytes());
        }
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    drop(projector);
    let db = sled::open(dir.path().join("model")).unwrap();
    for entry in db.open_tree("model").unwrap().iter() {
        let (key, value) = entry.unwrap();
        // Batch-keyed: outcomes, cell and summary runs, reversals, posting runs.
        if matches!(
            key.first(),
            Some(b'o' | b'D' | b'M' | b'Y' | b'Q' | b'S' | b'v' | b'x')
        ) {
            continue;
        }
        pinned.push([&(key.len() as u64).to_be_bytes()[..], &key, &value].concat());
    }
    let mut digest = [0; 32];
    let mut entries = 0;
    for bytes in &pinned {
        entries += 1;
        digest = fundflow_domain::digest::chain_log(&digest, entries, bytes);
    }
    assert_eq!(
        (entries, hex::encode(digest).as_str()),
        (
            125399,
            "105283bb9ef17f9b722fefc45552d95ccabdf8bee612425632dbc51bdabf11ec"
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_announced_only_once_the_read_model_holds_it() {
    // The fold runs a batch ahead of the writer: what it announces (fold notices, the
    // checkpoint in the metrics) must still only ever be what the model has stored.
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(&dir.path().join("log"), 11, 6_000).await;
    let last = log.last_seq().await.unwrap();
    let (notices, mut heard) = tokio::sync::broadcast::channel(1024);
    let config = ProjectorConfig {
        batch_max: 200,
        notices: Some(notices),
        ..ProjectorConfig::default()
    };
    let projector = Projector::open(&dir.path().join("model"), &log, config)
        .await
        .unwrap();
    let model = projector.model().clone();
    let metrics = projector.metrics();
    let running = tokio::spawn(projector.run(log.clone(), RunUntil::Seq(last)));
    let mut announced = 0;
    let mut next_first = 1;
    while announced < last {
        let notice = heard.recv().await.unwrap();
        let stored = model.checkpoint().unwrap().map_or(0, |c| c.last_seq);
        assert!(
            stored >= notice.last_seq,
            "notice up to seq {} while the model holds seq {stored}",
            notice.last_seq
        );
        let reported = metrics
            .checkpoint_seq
            .load(std::sync::atomic::Ordering::Relaxed);
        let stored = model.checkpoint().unwrap().map_or(0, |c| c.last_seq);
        assert!(
            reported <= stored,
            "metrics at {reported}, model at {stored}"
        );
        // Notices come in order, each batch once, none missing.
        assert_eq!(notice.first_seq, next_first);
        next_first = notice.last_seq + 1;
        announced = notice.last_seq;
    }
    running.await.unwrap().unwrap();
    assert_eq!(announced, last);
}
