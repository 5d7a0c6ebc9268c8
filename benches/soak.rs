//! The soak driver: many concurrent clients mixing relayed and federated
//! statements against a running thermocline for a fixed time. Reports
//! statements, errors and latency percentiles per kind, and the server's
//! resident memory over the run. `benches/soak.sh` sets up the data and
//! the server and runs this; it can also be pointed at any thermocline:
//!
//!   cargo bench --bench soak -- --port 6432 --db bench --pid PID \
//!       [--clients 500] [--seconds 600] [--think-ms 100] [--federated 0.02]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

struct Args {
    host: String,
    port: u16,
    db: String,
    user: String,
    pid: Option<u32>,
    clients: usize,
    seconds: u64,
    think_ms: u64,
    federated: f64,
    max_id: i64,
}

fn args() -> Args {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 6432,
        db: "bench".into(),
        user: "postgres".into(),
        pid: None,
        clients: 500,
        seconds: 600,
        think_ms: 100,
        federated: 0.02,
        max_id: 1_000_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--host" => a.host = value(),
            "--port" => a.port = value().parse().unwrap_or_else(|_| usage("--port")),
            "--db" => a.db = value(),
            "--user" => a.user = value(),
            "--pid" => a.pid = Some(value().parse().unwrap_or_else(|_| usage("--pid"))),
            "--clients" => a.clients = value().parse().unwrap_or_else(|_| usage("--clients")),
            "--seconds" => a.seconds = value().parse().unwrap_or_else(|_| usage("--seconds")),
            "--think-ms" => a.think_ms = value().parse().unwrap_or_else(|_| usage("--think-ms")),
            "--federated" => a.federated = value().parse().unwrap_or_else(|_| usage("--federated")),
            "--max-id" => a.max_id = value().parse().unwrap_or_else(|_| usage("--max-id")),
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            other => usage(&format!("unknown option {other}")),
        }
    }
    a
}

fn usage(problem: &str) -> ! {
    eprintln!("soak: {problem}");
    eprintln!(
        "usage: soak --port P --db DB [--pid PID] [--clients N] [--seconds S] [--think-ms MS] [--federated SHARE] [--max-id N]"
    );
    std::process::exit(2)
}

/// What each client runs, with how it is answered.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    /// Relayed: a dimension-table lookup (extended protocol).
    RelayLookup,
    /// Relayed: a write to a non-tiered table, in a transaction.
    RelayWrite,
    /// Relayed: a read of the hot window of the tiered table (simple protocol).
    RelayRecent,
    /// Federated: a primary-key lookup on the tiered table, no time predicate.
    FederatedLookup,
    /// Federated: a month of history, aggregated.
    FederatedRange,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::RelayLookup => "relay: lookup (extended)",
            Kind::RelayWrite => "relay: write in a transaction",
            Kind::RelayRecent => "relay: last day (simple)",
            Kind::FederatedLookup => "federated: key lookup",
            Kind::FederatedRange => "federated: one month",
        }
    }
}

#[derive(Default)]
struct Tally {
    micros: Vec<u32>,
    errors: u64,
}

type Tallies = Arc<Mutex<BTreeMap<Kind, Tally>>>;

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn run_client(
    a: Arc<Args>,
    stop: Arc<AtomicBool>,
    tallies: Tallies,
    errors: Arc<Mutex<BTreeMap<String, u64>>>,
) {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&a.host)
        .port(a.port)
        .user(&a.user)
        .dbname(&a.db)
        .application_name("soak")
        .connect_timeout(Duration::from_secs(30));
    let (client, conn) = match config.connect(tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => {
            *errors
                .lock()
                .await
                .entry(format!("connect: {e}"))
                .or_default() += 1;
            return;
        }
    };
    tokio::spawn(conn);
    let lookup = client
        .prepare("SELECT id, name, region FROM customers WHERE id = $1")
        .await;
    let federated_lookup = client.prepare("SELECT * FROM orders WHERE id = $1").await;
    let (Ok(lookup), Ok(federated_lookup)) = (lookup, federated_lookup) else {
        *errors
            .lock()
            .await
            .entry("prepare failed".into())
            .or_default() += 1;
        return;
    };
    let mut local: BTreeMap<Kind, Tally> = BTreeMap::new();
    let mut rng = StdRng::from_os_rng();
    while !stop.load(Ordering::Relaxed) {
        let (kind, think) = {
            let roll: f64 = rng.random();
            let kind = if roll < a.federated / 2.0 {
                Kind::FederatedLookup
            } else if roll < a.federated {
                Kind::FederatedRange
            } else {
                match rng.random_range(0..3) {
                    0 => Kind::RelayLookup,
                    1 => Kind::RelayWrite,
                    _ => Kind::RelayRecent,
                }
            };
            (kind, rng.random_range(0..=2 * a.think_ms))
        };
        let (customer, order, from): (i32, i64, i32) = (
            rng.random_range(1..=1000),
            rng.random_range(1..=a.max_id),
            rng.random_range(60..700),
        );
        let started = Instant::now();
        let result: Result<(), tokio_postgres::Error> = async {
            match kind {
                Kind::RelayLookup => client.query_opt(&lookup, &[&customer]).await.map(|_| ()),
                Kind::RelayWrite => {
                    let id = customer;
                    client
                        .batch_execute(&format!(
                            "BEGIN; UPDATE customers SET visits = visits + 1 WHERE id = {id}; COMMIT"
                        ))
                        .await
                }
                Kind::RelayRecent => client
                    .simple_query(
                        "SELECT count(*), sum(amount) FROM orders WHERE created_at >= now() - interval '1 day'",
                    )
                    .await
                    .map(|_| ()),
                Kind::FederatedLookup => client
                    .query_opt(&federated_lookup, &[&order])
                    .await
                    .map(|_| ()),
                Kind::FederatedRange => {
                    client
                        .simple_query(&format!(
                            "SELECT status, count(*), sum(amount) FROM orders \
                             WHERE created_at >= now() - interval '{} days' AND created_at < now() - interval '{from} days' \
                             GROUP BY status ORDER BY status",
                            from + 30
                        ))
                        .await
                        .map(|_| ())
                }
            }
        }
        .await;
        let took = started.elapsed();
        let t = local.entry(kind).or_default();
        t.micros.push(took.as_micros().min(u32::MAX as u128) as u32);
        if let Err(e) = result {
            t.errors += 1;
            let text = e
                .as_db_error()
                .map(|d| format!("{}: {}", d.code().code(), d.message()))
                .unwrap_or_else(|| e.to_string());
            *errors.lock().await.entry(text).or_default() += 1;
            if client.is_closed() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
    let mut all = tallies.lock().await;
    for (kind, t) in local {
        let into = all.entry(kind).or_default();
        into.micros.extend(t.micros);
        into.errors += t.errors;
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let a = Arc::new(args());
    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Tallies = Default::default();
    let errors: Arc<Mutex<BTreeMap<String, u64>>> = Default::default();
    eprintln!(
        "soak: {} clients for {} s against {}:{} (federated share {}, think time 0-{} ms)",
        a.clients,
        a.seconds,
        a.host,
        a.port,
        a.federated,
        2 * a.think_ms
    );
    let rss_before = a.pid.and_then(rss_kib);
    let mut tasks = Vec::with_capacity(a.clients);
    for i in 0..a.clients {
        tasks.push(tokio::spawn(run_client(
            a.clone(),
            stop.clone(),
            tallies.clone(),
            errors.clone(),
        )));
        // Connections open over about two seconds, not in one burst.
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // RSS once every client is in and warm, then every 30 s.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(10.min(a.seconds / 4))).await;
    let rss_start = a.pid.and_then(rss_kib);
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(a.seconds) {
        let left = Duration::from_secs(a.seconds).saturating_sub(started.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(30))).await;
        if let Some(kib) = a.pid.and_then(rss_kib) {
            samples.push((started.elapsed().as_secs(), kib));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let rss_end = a.pid.and_then(rss_kib);
    let secs = started.elapsed().as_secs_f64();

    let mut all = tallies.lock().await;
    println!();
    println!(
        "{:<32} {:>10} {:>8} {:>9} {:>10} {:>10} {:>10}",
        "statement", "count", "errors", "per s", "p50 ms", "p99 ms", "max ms"
    );
    let (mut total, mut total_errors) = (0usize, 0u64);
    let mut relayed: Vec<u32> = Vec::new();
    let mut federated: Vec<u32> = Vec::new();
    for (kind, t) in all.iter_mut() {
        t.micros.sort_unstable();
        total += t.micros.len();
        total_errors += t.errors;
        match kind {
            Kind::FederatedLookup | Kind::FederatedRange => federated.extend(&t.micros),
            _ => relayed.extend(&t.micros),
        }
        println!(
            "{:<32} {:>10} {:>8} {:>9.0} {:>10.2} {:>10.2} {:>10.2}",
            kind.name(),
            t.micros.len(),
            t.errors,
            t.micros.len() as f64 / secs,
            percentile(&t.micros, 0.5),
            percentile(&t.micros, 0.99),
            percentile(&t.micros, 1.0)
        );
    }
    for (name, v) in [
        ("all relayed", &mut relayed),
        ("all federated", &mut federated),
    ] {
        v.sort_unstable();
        println!(
            "{:<32} {:>10} {:>8} {:>9.0} {:>10.2} {:>10.2} {:>10.2}",
            name,
            v.len(),
            "",
            v.len() as f64 / secs,
            percentile(v, 0.5),
            percentile(v, 0.99),
            percentile(v, 1.0)
        );
    }
    println!();
    println!("statements: {total}, errors: {total_errors}");
    for (text, n) in errors.lock().await.iter() {
        println!("  {n} × {text}");
    }
    let mib =
        |k: Option<u64>| k.map_or("-".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!(
        "thermocline RSS: before clients {}, start (all clients in) {}, end {}",
        mib(rss_before),
        mib(rss_start),
        mib(rss_end)
    );
    if !samples.is_empty() {
        let series: Vec<String> = samples
            .iter()
            .map(|(t, k)| format!("{t}s {:.0}", *k as f64 / 1024.0))
            .collect();
        println!("RSS every 30 s (MiB): {}", series.join(", "));
    }
    if total_errors > 0 {
        std::process::exit(1);
    }
}
