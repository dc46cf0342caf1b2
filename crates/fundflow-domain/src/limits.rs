//! Named maxima. Everything that grows with input has a limit, so that one bad or hostile event
//! can cost only a bounded amount of memory and time.

/// Largest encoded envelope the fold decodes; larger ones are rejected unread (`too_large`).
pub const ENVELOPE_BYTES_MAX: usize = 256 * 1024;
/// Most allocations in one event: enough for a global programme to every country, twice.
pub const ALLOCATIONS_MAX: usize = 512;
/// Most in-kind items in one allocation.
pub const ITEMS_MAX: usize = 64;
/// Longest `partner_id`, a NATS subject token.
pub const PARTNER_ID_LEN_MAX: usize = 64;
/// Longest partner-chosen identifier (`pledge_id`, `payment_id`, `grant_id`, ...), in bytes.
pub const ID_LEN_MAX: usize = 128;
/// Longest name (`donor`, `source`, `organisation`, `item`, ...), in bytes.
pub const NAME_LEN_MAX: usize = 256;
/// Longest unit of an in-kind item, in bytes.
pub const UNIT_LEN_MAX: usize = 32;
/// Longest free text (`description`, `reason`), in bytes.
pub const TEXT_LEN_MAX: usize = 4096;

/// The most events [`crate::Ledger::with_capacity`] reserves room for up front (about 10 GB of
/// index at most); a larger hint is cut to it, since a hint must not be able to exhaust memory.
pub const CAPACITY_HINT_MAX: usize = 100_000_000;

/// Most nodes (countries and areas) that can roll up into one area: the whole reference data.
pub const ROLLUP_NODES_MAX: usize = 300;

/// The largest amount, USD equivalent or quantity a recipient's direct total may reach: 10^26.
/// Far above any real figure, and low enough that a roll-up over [`ROLLUP_NODES_MAX`] nodes
/// stays inside `Decimal`'s exact range (about 7.9 × 10^28), so reading never overflows.
pub fn total_max() -> rust_decimal::Decimal {
    rust_decimal::Decimal::from_i128_with_scale(100_000_000_000_000_000_000_000_000, 0)
}
