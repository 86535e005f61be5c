//! `strom bench jitter`: how late a thread that asks to sleep a short while wakes up on
//! this machine, with no server involved (in the spirit of jHiccup). It is the floor
//! under every tail latency the other benches report: a request that arrives while its
//! thread cannot run waits as long as the thread does, whatever the server does. On a
//! shared VM the usual cause is the host running something else on our vCPU.

use std::time::{Duration, Instant};

use super::{
    histogram, parse_run_length, quantiles_json, quantiles_ms, record_latency, steal, steal_line,
};
use crate::cli::output::write_out;
use crate::cli::Stop;

#[derive(clap::Args)]
pub struct JitterArgs {
    /// How long to measure (e.g. 20s, 5m).
    #[arg(long, default_value = "20s")]
    duration: String,
    /// How long the thread asks to sleep each time, in microseconds.
    #[arg(long, default_value_t = 1000)]
    sleep_us: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Lateness thresholds counted separately, in milliseconds: stalls long enough to show
/// in a p99.9 of a few milliseconds.
const STALLS_OVER_MS: [u64; 3] = [1, 2, 4];

pub fn run(args: JitterArgs) -> Result<(), Stop> {
    let length = parse_run_length(&args.duration)?;
    let nap = Duration::from_micros(args.sleep_us.max(1));
    // A plain OS thread: tokio's timer rounds to milliseconds and would hide what we
    // measure.
    let measure = std::thread::spawn(move || {
        let mut late = histogram();
        let mut stalls = [0u64; STALLS_OVER_MS.len()];
        let started = Instant::now();
        while started.elapsed() < length {
            let asleep = Instant::now();
            std::thread::sleep(nap);
            let lateness = asleep.elapsed().saturating_sub(nap);
            record_latency(&mut late, lateness);
            for (count, ms) in stalls.iter_mut().zip(STALLS_OVER_MS) {
                *count += u64::from(lateness > Duration::from_millis(ms));
            }
        }
        (late, stalls, started.elapsed())
    });
    let (late, stalls, elapsed) = measure
        .join()
        .map_err(|_| "the measuring thread panicked")?;
    let per_minute = |count: u64| count as f64 * 60.0 / elapsed.as_secs_f64();
    let q = quantiles_ms(&late);
    if args.json {
        let mut out = serde_json::json!({
            "bench": "jitter",
            "sleep_us": args.sleep_us,
            "seconds": elapsed.as_secs_f64(),
            "wakeups": late.len(),
        });
        out["late_ms"] = quantiles_json(&late);
        for (count, ms) in stalls.iter().zip(STALLS_OVER_MS) {
            out[format!("late_over_{ms}ms_per_minute")] = per_minute(*count).into();
        }
        out["steal_percent"] = steal::since_start().into();
        return write_out(format!("{out}\n").as_bytes());
    }
    let mut text = format!(
        "jitter: a thread sleeping {} us woke {} times in {:.2} s\n",
        args.sleep_us,
        late.len(),
        elapsed.as_secs_f64()
    );
    text += &format!(
        "  late     ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n",
        q[0].1, q[1].1, q[2].1, q[3].1, q[4].1
    );
    for (count, ms) in stalls.iter().zip(STALLS_OVER_MS) {
        text += &format!(
            "  later than {ms} ms: {count} times ({:.1} a minute)\n",
            per_minute(*count)
        );
    }
    text += &steal_line();
    write_out(text.as_bytes())
}
