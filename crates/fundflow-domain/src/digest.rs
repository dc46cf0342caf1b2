//! The wire forms of the fold's digests and outcome codes: what a read model, an export or an
//! auditor must compute byte for byte as the fold does, so they are defined once, here.

use sha2::{Digest, Sha256};

use crate::reject::RejectCode;
pub use crate::values::Digest32;
use crate::values::Outcome;

/// One link of the log digest chain: SHA-256(previous ‖ seq as u64 big-endian ‖ byte length as
/// u64 big-endian ‖ bytes). The first link's `previous` is 32 zero bytes.
pub fn chain_log(previous: &Digest32, seq: u64, bytes: &[u8]) -> Digest32 {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(seq.to_be_bytes());
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
    hasher.finalize().into()
}

/// One link of the rejection chain: SHA-256(previous ‖ seq as u64 big-endian ‖ outcome code).
pub(crate) fn chain_outcome(previous: &Digest32, seq: u64, code: u8) -> Digest32 {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(seq.to_be_bytes());
    hasher.update([code]);
    hasher.finalize().into()
}

/// The outcome as one byte, as read models pack it: 0 for applied, else [`outcome_code`].
pub fn outcome_byte(outcome: &Outcome) -> u8 {
    outcome.code().map_or(0, outcome_code)
}

/// 1 + the code's position in [`RejectCode::ALL`] (codes are only appended, so the numbers are
/// stable); 0 is reserved for "applied".
pub fn outcome_code(code: RejectCode) -> u8 {
    let position = RejectCode::ALL.iter().position(|c| *c == code);
    debug_assert!(
        position.is_some(),
        "{code:?} is missing from RejectCode::ALL"
    );
    // Every code is in ALL, and ALL has fewer than 255 entries (a test pins both), so the
    // fallback is never taken; it stays a value, not a panic, because the fold never panics.
    position
        .and_then(|i| u8::try_from(i + 1).ok())
        .unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_nonzero_byte() {
        let bytes: Vec<u8> = RejectCode::ALL.iter().map(|c| outcome_code(*c)).collect();
        assert!(RejectCode::ALL.len() < usize::from(u8::MAX));
        for (i, byte) in bytes.iter().enumerate() {
            assert_eq!(usize::from(*byte), i + 1);
        }
    }
}
