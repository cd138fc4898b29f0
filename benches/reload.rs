//! Cost of a reload (parse → validate → compile) of the shipped rules and of a generated
//! 1,000-rule file.
//!
//!     cargo bench --bench reload
// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

mod support;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let shipped = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/rules.yaml")).unwrap();
    let big = support::generated_rules(1_000);
    assert_eq!(
        tripwire::rules::load_bytes(big.as_bytes())
            .unwrap()
            .rules()
            .len(),
        1_000
    );
    let mut group = c.benchmark_group("reload");
    group.sample_size(20);
    group.bench_function("shipped_rules", |b| {
        b.iter(|| black_box(tripwire::rules::load_bytes(black_box(&shipped)).unwrap()))
    });
    group.bench_function("generated_1000_rules", |b| {
        b.iter(|| black_box(tripwire::rules::load_bytes(black_box(big.as_bytes())).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
