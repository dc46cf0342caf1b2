//! A ledger written with `snapshot::write` and read back with `snapshot::read` is the same state:
//! folding the rest of the log on top of it gives, bit for bit, the digests and counts of one
//! uninterrupted fold, wherever the log is cut. Bytes that are not such a snapshot are refused
//! with an error, never a panic.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fundflow_domain::snapshot::{self, SnapshotError};
use fundflow_domain::{Ledger, Outcome};
use fundflow_gen::{GenConfig, LogGenerator};

fn log(seed: u64, events: u64) -> Vec<Vec<u8>> {
    LogGenerator::new(
        seed,
        GenConfig {
            events,
            ..GenConfig::default()
        },
    )
    .collect()
}

/// (checkpoint, model digest) after folding `records` from seq `first` on into `ledger`.
fn fold_into(mut ledger: Ledger, first: u64, records: &[Vec<u8>]) -> Ledger {
    for (seq, bytes) in (first..).zip(records) {
        ledger.apply(seq, bytes);
    }
    ledger
}

fn round_trip(ledger: &Ledger) -> Ledger {
    let bytes = snapshot::write(ledger, Vec::new()).unwrap();
    snapshot::read(&bytes[..]).unwrap()
}

#[test]
fn a_snapshot_and_the_tail_fold_to_the_digests_of_one_fold_wherever_the_log_is_cut() {
    let records = log(7, 20_000);
    let whole = fold_into(Ledger::new(), 1, &records);
    let expected = (whole.checkpoint(), whole.model_digest());
    // The pinned digests of this log (tests/digests.rs): the reference is the fold itself.
    assert_eq!(
        hex::encode(expected.1),
        "d11afec77778b15d807825d9c9e115cc7147e74adb4493575fb8190b465c6e3a"
    );
    for cut in [0, 1, 2, 777, 5_000, 12_345, 19_999, 20_000] {
        let head = fold_into(Ledger::new(), 1, &records[..cut]);
        let restored = round_trip(&head);
        assert_eq!(restored.checkpoint(), head.checkpoint(), "cut at {cut}");
        assert_eq!(restored.model_digest(), head.model_digest(), "cut at {cut}");
        let resumed = fold_into(restored, cut as u64 + 1, &records[cut..]);
        assert_eq!(
            (resumed.checkpoint(), resumed.model_digest()),
            expected,
            "cut at {cut}"
        );
    }
}

#[test]
fn a_restored_ledger_still_knows_every_event_and_what_it_did() {
    let records = log(3, 3_000);
    let restored = round_trip(&fold_into(Ledger::new(), 1, &records));
    let mut again = restored.clone();
    // Every record sent again is refused, almost all as a duplicate: the event index and the
    // content fingerprints came back whole (what is left had no valid identity the first time).
    let mut duplicates = 0;
    for (seq, bytes) in (3_001..).zip(&records) {
        let Outcome::Rejected(rejection) = again.apply(seq, bytes) else {
            panic!("seq {seq}: a resend was applied");
        };
        duplicates += usize::from(rejection.code.as_str() == "duplicate");
    }
    assert!(
        duplicates * 100 > records.len() * 95,
        "{duplicates} duplicates"
    );
    // The interned names came back with their ids: the pledges read back by name.
    let ours: Vec<_> = restored
        .pledges()
        .map(|p| (p.partner_id.to_owned(), p.pledge_id.to_owned()))
        .collect();
    assert!(!ours.is_empty());
    for (partner, pledge) in &ours {
        assert!(
            restored.pledge(partner, pledge).is_some(),
            "{partner} {pledge}"
        );
    }
}

#[test]
fn bytes_that_are_no_snapshot_are_refused_never_a_panic() {
    let ledger = fold_into(Ledger::new(), 1, &log(5, 300));
    let bytes = snapshot::write(&ledger, Vec::new()).unwrap();
    // Cut short anywhere: an error.
    for len in (0..bytes.len()).step_by(97) {
        assert!(
            snapshot::read(&bytes[..len]).is_err(),
            "cut at {len} of {}",
            bytes.len()
        );
    }
    // Another format: refused as another build's, before the state is read.
    let mut other = bytes.clone();
    other[0] ^= 0x7f;
    assert!(matches!(
        snapshot::read(&other[..]),
        Err(SnapshotError::OtherBuild { .. } | SnapshotError::Malformed(_))
    ));
    // Flipped bytes: either an error or some ledger, never a panic while decoding. (What such a
    // ledger would do is not this test's: the projector's file keeps a digest over the bytes,
    // which is what refuses them before they are decoded into a fold.)
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..400 {
        let mut flipped = bytes.clone();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = usize::try_from(state % bytes.len() as u64).unwrap();
            flipped[at] ^= 1 << (state % 8);
        }
        let _ = snapshot::read(&flipped[..]);
    }
}
