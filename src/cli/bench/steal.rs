//! Steal time: the share of this machine's CPU time that the hypervisor gave to someone
//! else while a bench ran. A virtual CPU that is runnable but not running stalls every
//! thread on it, the server's and the client's alike, and a few such stalls of some
//! milliseconds each decide a p99: on the 2-vCPU VM of BENCHMARKS.md ("What the slow
//! hours are"), e2e runs with under 0.15% steal had a p99 of 0.6-1.2 ms in 36 runs of 38
//! (the other two 1.6 and 1.7 ms), runs with 0.34% or more 1.3-22 ms. So every bench
//! reports it beside its figures, and a reader can tell a slow run from a slow host. The
//! window opens when the bench starts, before it connects.
//!
//! Linux counts it per CPU in `/proc/stat`; elsewhere, or where the file says nothing,
//! the figure is absent rather than zero.

use std::sync::OnceLock;

/// CPU time counters summed over all CPUs, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CpuTicks {
    /// All time the CPUs were accounted for, steal included.
    total: u64,
    steal: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat`: user nice system idle iowait irq
/// softirq steal (guest time is already inside user and nice, so it is not added).
fn parse(stat: &str) -> Option<CpuTicks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse::<u64>().ok())
        .collect::<Option<Vec<_>>>()?;
    // Kernels before 2.6.11 had no steal column: no figure rather than a wrong one.
    let &steal = fields.get(7)?;
    Some(CpuTicks {
        total: fields.iter().sum(),
        steal,
    })
}

fn read() -> Option<CpuTicks> {
    parse(&std::fs::read_to_string("/proc/stat").ok()?)
}

static START: OnceLock<Option<CpuTicks>> = OnceLock::new();

/// Marks the start of the bench; `since_start` measures from here.
pub fn mark_start() {
    START.get_or_init(read);
}

/// Percent of all CPU time since `mark_start` that was stolen, if the system says.
pub fn since_start() -> Option<f64> {
    share(START.get().copied().flatten()?, read()?)
}

fn share(start: CpuTicks, end: CpuTicks) -> Option<f64> {
    let total = end.total.checked_sub(start.total)?;
    let steal = end.steal.checked_sub(start.steal)?;
    (total > 0).then(|| steal as f64 * 100.0 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  4705 356 584 3699 23 0 31 12 7 0\n\
                        cpu0 2000 100 300 1800 10 0 20 6 3 0\n\
                        intr 114930548 113199788 3 0 5 263 0 4 [...]\n";

    #[test]
    fn the_aggregate_line_gives_the_total_and_the_steal() {
        // 4705+356+584+3699+23+0+31+12; guest (7) is inside user already.
        let ticks = parse(STAT).unwrap();
        assert_eq!(
            ticks,
            CpuTicks {
                total: 9410,
                steal: 12
            }
        );
    }

    #[test]
    fn a_line_without_the_steal_column_gives_no_figure() {
        assert_eq!(parse("cpu  4705 356 584 3699 23 0 31\n"), None);
        assert_eq!(parse("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(parse("cpu  1 2 3 x 5 6 7 8\n"), None);
    }

    #[test]
    fn the_share_is_the_stolen_part_of_the_time_between_two_readings() {
        let start = CpuTicks {
            total: 1000,
            steal: 10,
        };
        let end = CpuTicks {
            total: 1400,
            steal: 20,
        };
        assert_eq!(share(start, end), Some(2.5));
        assert_eq!(share(start, start), None, "no time passed");
        assert_eq!(share(end, start), None, "counters never go back");
    }
}
