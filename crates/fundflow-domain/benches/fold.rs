//! The fold's throughput: decode + validate + apply, in events per second, over a generated log
//! of 1,000,000 records (100+ countries, 5 currencies, every kind, ~2% invalid records).
//!
//! Run: `cargo bench -p fundflow-domain --bench fold`. `FUNDFLOW_BENCH_EVENTS` changes the size.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fundflow_domain::Ledger;
use fundflow_gen::{GenConfig, LogGenerator};

/// The same allocator as the `fundflow` binary, so the figure is the one users get.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn fold(c: &mut Criterion) {
    let events: u64 = std::env::var("FUNDFLOW_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let log: Vec<Vec<u8>> = LogGenerator::new(
        7,
        GenConfig {
            events,
            ..GenConfig::default()
        },
    )
    .collect();
    let bytes: usize = log.iter().map(Vec::len).sum();
    eprintln!("log: {events} records, {bytes} bytes");

    let mut group = c.benchmark_group("fold");
    group.throughput(Throughput::Elements(events));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("decode_validate_apply", |b| {
        b.iter_batched(
            Ledger::new,
            |mut ledger| {
                for (i, record) in log.iter().enumerate() {
                    black_box(ledger.apply(i as u64 + 1, record));
                }
                ledger
            },
            BatchSize::PerIteration,
        )
    });
    // As `replay-file` and the projector run it: with the log's length as a capacity hint.
    group.bench_function("decode_validate_apply_presized", |b| {
        b.iter_batched(
            || Ledger::with_capacity(log.len()),
            |mut ledger| {
                for (i, record) in log.iter().enumerate() {
                    black_box(ledger.apply(i as u64 + 1, record));
                }
                ledger
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, fold);
criterion_main!(benches);
