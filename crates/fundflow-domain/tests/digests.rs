//! Pins the digests of seeded generated logs: the fold's output is part of its contract (an
//! auditor compares digests across versions), so any change to the fold that moves a digest,
//! an outcome count or the rejection chain must show up here, not in production.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fundflow_domain::Ledger;
use fundflow_gen::{GenConfig, LogGenerator};

/// Folds a generated log; returns (log digest, model digest, applied, rejected, rejection chain).
fn fold(seed: u64, config: GenConfig) -> (String, String, u64, u64, String) {
    let mut ledger = Ledger::new();
    for (seq, bytes) in (1..).zip(LogGenerator::new(seed, config)) {
        ledger.apply(seq, &bytes);
    }
    let checkpoint = ledger.checkpoint();
    (
        hex::encode(ledger.log_digest()),
        hex::encode(ledger.model_digest()),
        checkpoint.applied,
        checkpoint.rejected,
        hex::encode(checkpoint.rejected_digest),
    )
}

#[test]
fn a_seeded_log_folds_to_its_pinned_digests() {
    let folded = fold(
        7,
        GenConfig {
            events: 20_000,
            ..GenConfig::default()
        },
    );
    assert_eq!(
        folded,
        (
            "df80e5054b627129b37c10dfe5a8759661ff01b12aceab717a3720c96d0a281d".into(),
            "d11afec77778b15d807825d9c9e115cc7147e74adb4493575fb8190b465c6e3a".into(),
            19582,
            418,
            "3462e59af698308de7cb5215558e03da92ca17ca4c6ad511fa02723f0531dab2".into(),
        )
    );
}

#[test]
fn a_seeded_log_with_many_invalid_records_folds_to_its_pinned_digests() {
    let folded = fold(
        11,
        GenConfig {
            events: 20_000,
            partners: 5,
            invalid_per_mille: 250,
        },
    );
    assert_eq!(
        folded,
        (
            "90e1567ec55e2438028211ef519a1e3098575aa3441cc2c51664817b18ab79cd".into(),
            "6553e2ceb7b2fe9aff3cb442ae986f11cfdc38651921e1f71db6c94e03dcd434".into(),
            15042,
            4958,
            "cb9f692f74987c1ab5b6667a9f51aeeea4ceea08abf6b9ed6c4de7a889811b39".into(),
        )
    );
}
