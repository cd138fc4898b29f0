//! Replay throughput on generated history, on the replay's own threads, against only parsing
//! the same file (the csv crate reading every record, nothing converted).
//!
//!     cargo bench --bench replay -- [--customers 30000] [--days 30] [--rounds 3]
//!
//! Generates a seeded CSV (about 1.2 transactions per customer-day), then per round times:
//! the bare CSV parse; reading and validating rows (`replay::input::read`); and the whole replay
//! (read, sort by event time, decide every transaction with the shipped rules through the
//! interceptor). Prints one JSON object with the medians.

mod support;

use std::path::PathBuf;
use std::time::Instant;

use support::median;
use tripwire::replay::{self, generate, input};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let customers = arg("--customers", 30_000) as usize;
    let days = arg("--days", 30) as u32;
    let rounds = arg("--rounds", 3);
    let path: PathBuf =
        std::env::temp_dir().join(format!("tripwire-replay-bench-{customers}-{days}.csv"));
    let config = generate::GenConfig {
        customers,
        days,
        seed: 42,
        per_pattern: customers / 50,
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let manifest = generate::generate(&config, generate::Format::Csv, &mut file).unwrap();
    drop(file);
    let rules = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/rules.yaml")).unwrap();
    let mapping = input::Mapping::default();
    let files = vec![path.display().to_string()];
    let (mut parse, mut read, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        let mut csv = csv::Reader::from_path(&path).unwrap();
        let mut record = csv::ByteRecord::new();
        let mut n = 0u64;
        while csv.read_byte_record(&mut record).unwrap() {
            n += record.len() as u64;
        }
        std::hint::black_box(n);
        parse.push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let (rows, _) = input::read(std::slice::from_ref(&path), &mapping, true).unwrap();
        read.push(t.elapsed().as_secs_f64());
        drop(rows);

        let t = Instant::now();
        let (mut rows, _) = input::read(std::slice::from_ref(&path), &mapping, true).unwrap();
        replay::sort(&mut rows);
        let report = replay::run(
            &rules,
            None,
            &rows,
            &files,
            0,
            &replay::ReplayConfig::default(),
            None,
        )
        .unwrap();
        total.push(t.elapsed().as_secs_f64());
        std::hint::black_box(report.transactions);
    }
    let n = manifest.transactions as f64;
    let (parse, read, total) = (median(parse), median(read), median(total));
    println!(
        "{{\"transactions\":{},\"parse_only_s\":{parse:.3},\"read_and_validate_s\":{read:.3},\"replay_s\":{total:.3},\"parse_only_per_s\":{:.0},\"replay_per_s\":{:.0},\"replay_over_parse\":{:.2}}}",
        manifest.transactions,
        n / parse,
        n / total,
        total / parse
    );
    let _ = std::fs::remove_file(&path);
}
