//! An open-loop HTTP load generator: requests are sent at a fixed rate whatever the server
//! does, and each request's latency is counted from its *planned* send time, so a server that
//! stalls is charged for every request that waited (no coordinated omission).
//!
//!     cargo bench --bench loadgen -- --target 127.0.0.1:8080 --path /v1/decide \
//!         --rate 3000 --duration 10 [--warmup 2] [--connections 32] [--customers 1000]
//!
//! A pacer thread releases request slots at the planned times; connection tasks on a
//! single-threaded runtime take them over keep-alive HTTP/1.1 connections. Bodies are decide
//! requests for `--customers` customers, each customer's transactions three minutes apart in
//! event time. Prints one JSON object: rate, sent, completed, errors, throughput, p50, p99,
//! p99.9 and max in microseconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

struct Options {
    target: SocketAddr,
    path: String,
    rate: u64,
    duration: Duration,
    warmup: Duration,
    connections: usize,
    customers: u64,
    start_customer: u64,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn options() -> Option<Options> {
    let args: Vec<String> = std::env::args().collect();
    let target = arg(&args, "--target")?;
    let num = |name: &str, default: u64| -> u64 {
        arg(&args, name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
    };
    Some(Options {
        target: target.parse().expect("--target HOST:PORT"),
        path: arg(&args, "--path").unwrap_or_else(|| "/v1/decide".into()),
        rate: num("--rate", 1000).max(1),
        duration: Duration::from_secs(num("--duration", 10)),
        warmup: Duration::from_secs(num("--warmup", 2)),
        connections: num("--connections", 32).max(1) as usize,
        customers: num("--customers", 1000).max(1),
        start_customer: num("--customer-offset", 0),
    })
}

/// 2026-03-01T10:00:00Z in seconds.
const BASE: i64 = 1_772_359_200;

fn body(seq: u64, o: &Options) -> Bytes {
    let customer = o.start_customer + seq % o.customers;
    let step = (seq / o.customers) as i64;
    let at = jiff::Timestamp::from_second(BASE + step * 180).unwrap();
    // Scatter amounts so that equal amounts (and so rule hits) stay rare: a gateway's mix.
    let cents = seq.wrapping_mul(2_654_435_761) % 100_000;
    Bytes::from(format!(
        r#"{{"transaction_id":"lg-{seq}","customer_id":"c{customer}","timestamp":"{at}","amount":"{}.{:02}","currency":"CNY","lat":31.2304,"lon":121.4737,"channel":"app"}}"#,
        10 + cents / 100,
        cents % 100
    ))
}

#[derive(Default)]
struct Tally {
    completed: u64,
    errors: u64,
    non_2xx: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
}

fn main() {
    let Some(o) = options() else {
        eprintln!("loadgen: give --target HOST:PORT (see the file's header)");
        return;
    };
    let o = Arc::new(o);
    let interval = Duration::from_nanos(1_000_000_000 / o.rate);
    let total = o.rate * (o.warmup + o.duration).as_secs();
    let warmup_count = o.rate * o.warmup.as_secs();
    let (tx, rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let done = Arc::new(AtomicBool::new(false));

    // The pacer: release slot `seq` at start + seq × interval, sleeping then spinning the
    // last stretch so that the schedule holds at tens of thousands a second.
    let pacer = std::thread::spawn(move || {
        let start = Instant::now() + Duration::from_millis(50);
        for seq in 0..total {
            let due = start + interval * seq as u32;
            loop {
                let now = Instant::now();
                if now >= due {
                    break;
                }
                let left = due - now;
                if left > Duration::from_micros(200) {
                    std::thread::sleep(left - Duration::from_micros(100));
                } else {
                    std::hint::spin_loop();
                }
            }
            if tx.send((seq, due)).is_err() {
                break;
            }
        }
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let measured_start = Arc::new(Mutex::new(None::<Instant>));
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..o.connections {
            let (o, rx, histogram, tally, measured_start) = (
                Arc::clone(&o),
                Arc::clone(&rx),
                Arc::clone(&histogram),
                Arc::clone(&tally),
                Arc::clone(&measured_start),
            );
            tasks.push(tokio::spawn(async move {
                let mut sender = None;
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some((seq, planned)) = next else { break };
                    if sender.is_none() {
                        match TcpStream::connect(o.target).await {
                            Ok(stream) => {
                                let _ = stream.set_nodelay(true);
                                match hyper::client::conn::http1::handshake(TokioIo::new(stream))
                                    .await
                                {
                                    Ok((s, conn)) => {
                                        tokio::spawn(conn);
                                        sender = Some(s);
                                    }
                                    Err(_) => {
                                        tally.lock().errors += 1;
                                        continue;
                                    }
                                }
                            }
                            Err(_) => {
                                tally.lock().errors += 1;
                                continue;
                            }
                        }
                    }
                    let s: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>> =
                        sender.as_mut().expect("connected above");
                    let req = Request::post(o.path.as_str())
                        .header("host", o.target.to_string())
                        .header("content-type", "application/json")
                        .body(Full::new(body(seq, &o)))
                        .unwrap();
                    let ok = match s.ready().await {
                        Ok(()) => match s.send_request(req).await {
                            Ok(response) => {
                                let status = response.status();
                                let read = response.into_body().collect().await.is_ok();
                                *tally.lock().statuses.entry(status.as_u16()).or_default() += 1;
                                Some(read && status.is_success())
                            }
                            Err(_) => None,
                        },
                        Err(_) => None,
                    };
                    let latency = planned.elapsed();
                    if seq == warmup_count {
                        *measured_start.lock() = Some(planned);
                    }
                    let mut t = tally.lock();
                    match ok {
                        None => {
                            t.errors += 1;
                            sender = None;
                        }
                        Some(success) => {
                            if seq >= warmup_count {
                                t.completed += 1;
                                if !success {
                                    t.non_2xx += 1;
                                }
                                let micros = u64::try_from(latency.as_micros())
                                    .unwrap_or(u64::MAX)
                                    .max(1);
                                let _ = histogram.lock().record(micros);
                            }
                        }
                    }
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
    let _ = pacer.join();
    done.store(true, Ordering::Relaxed);
    let elapsed = measured_start.lock().map_or(o.duration, |s| s.elapsed());
    let h = histogram.lock();
    let t = tally.lock();
    println!(
        "{{\"target\":\"{}\",\"path\":\"{}\",\"rate\":{},\"duration_s\":{},\"connections\":{},\"customers\":{},\"sent\":{},\"completed\":{},\"errors\":{},\"non_2xx\":{},\"throughput_rps\":{:.1},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"statuses\":{{{}}}}}",
        o.target,
        o.path,
        o.rate,
        o.duration.as_secs(),
        o.connections,
        o.customers,
        total - warmup_count,
        t.completed,
        t.errors,
        t.non_2xx,
        t.completed as f64 / elapsed.as_secs_f64(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        t.statuses
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect::<Vec<_>>()
            .join(",")
    );
}
