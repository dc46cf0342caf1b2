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
            "2591e38e0936124210cff0fed14771bb4dc3532790fdb2cc2dac509d773f41f0".into(),
            "be86fbd6cd547d17bb68f866e07227b7e5bdca9162a265806c8b5e9b9366ac26".into(),
            19608,
            392,
            "8b118740ea0a344d693593147a1449e2d35b3d902df7d4ec28ce9f9698ad61ed".into(),
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
            "18d30f08474d4b197ea2534db90f9efd64633953a5bf1945028ba0cb6c872e88".into(),
            "d31bac9a9dab7b3e98ac3f6f27b9d3bf98a7bcab681dcdc9b083fa9b5b32ecb0".into(),
            15059,
            4941,
            "a57bb6c74baf9b022b4bf3d3b24a90c72c5c1943649c4ba3175be16a1a3b1048".into(),
        )
    );
}
