//! Latency results: an HDR histogram per measured case, printed as percentiles p50..p99.99 and
//! max (never an average alone), optionally written as an `.hgrm` percentile distribution (the
//! text format HdrHistogram's tools plot) and as JSON.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles printed for every latency case.
pub const PERCENTILES: [f64; 5] = [50.0, 90.0, 99.0, 99.9, 99.99];

/// A histogram of nanoseconds, 1 ns to 60 s at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .unwrap_or_else(|_| unreachable!("constant, valid bounds"))
}

/// Records one duration.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_nanos().min(u64::MAX as u128) as u64);
}

/// One measured latency case.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyRow {
    /// What was measured.
    pub case: String,
    /// Samples.
    pub count: u64,
    /// p50, p90, p99, p99.9, p99.99 in ns.
    pub percentiles_ns: [u64; 5],
    /// Largest sample in ns.
    pub max_ns: u64,
    /// The reference case this row is compared with, and p50 / reference p50.
    pub reference: Option<(String, f64)>,
}

impl LatencyRow {
    /// The row's count (right-aligned in `count_width`), then p50, p90, p99, p99.9, p99.99 and
    /// max in microseconds (two decimals, 9 wide), space-separated: the cells every latency
    /// table shares.
    pub fn cells(&self, count_width: usize) -> String {
        let mut out = format!("{:>count_width$}", self.count);
        for ns in self.percentiles_ns.iter().chain([&self.max_ns]) {
            out += &format!(" {:>9}", format!("{:.2}", *ns as f64 / 1000.0));
        }
        out
    }

    /// Reads the percentiles of `h`.
    pub fn from_histogram(case: &str, h: &Histogram<u64>) -> LatencyRow {
        LatencyRow {
            case: case.to_string(),
            count: h.len(),
            percentiles_ns: PERCENTILES.map(|p| h.value_at_percentile(p)),
            max_ns: h.max(),
            reference: None,
        }
    }

    /// Compares this row's p50 with `reference`'s.
    pub fn against(mut self, reference: &LatencyRow) -> LatencyRow {
        let ratio = self.percentiles_ns[0] as f64 / reference.percentiles_ns[0].max(1) as f64;
        self.reference = Some((reference.case.clone(), ratio));
        self
    }
}

/// A throughput case.
#[derive(Clone, Debug, Serialize)]
pub struct RateRow {
    /// What was measured.
    pub case: String,
    /// Messages (signals) per second.
    pub per_second: f64,
    /// Payload bytes per second.
    pub bytes_per_second: f64,
    /// Receiver wakeups (or sleeps taken) per 1,000 signals, where the transport counts them.
    pub wakeups_per_1000: Option<f64>,
    /// The reference case and this rate / reference rate.
    pub reference: Option<(String, f64)>,
}

/// Prints latency rows as a table, in microseconds.
pub fn print_latency(rows: &[LatencyRow]) {
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  vs reference (p50)",
        "round trip (us)", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    );
    for r in rows {
        let reference = r
            .reference
            .as_ref()
            .map_or(String::new(), |(name, ratio)| format!("{ratio:.2}x {name}"));
        println!("{:<44} {}  {}", r.case, r.cells(9), reference);
    }
}

/// Prints rate rows as a table.
pub fn print_rates(rows: &[RateRow]) {
    println!(
        "{:<44} {:>14} {:>12} {:>12}  vs reference",
        "streaming", "signals/s", "MB/s", "wakeups/1k"
    );
    for r in rows {
        let wakeups = r.wakeups_per_1000.map_or("-".to_string(), |w| format!("{w:.3}"));
        let reference = r
            .reference
            .as_ref()
            .map_or(String::new(), |(name, ratio)| format!("{ratio:.2}x {name}"));
        println!(
            "{:<44} {:>14.0} {:>12.1} {:>12}  {}",
            r.case,
            r.per_second,
            r.bytes_per_second / 1e6,
            wakeups,
            reference
        );
    }
}

/// `warmup` unrecorded then `ops` recorded runs of `one` (given the run's number from 0), each
/// timed.
pub fn latency_case<E>(
    warmup: u64,
    ops: u64,
    mut one: impl FnMut(u64) -> Result<(), E>,
) -> Result<Histogram<u64>, E> {
    let mut h = histogram();
    for i in 0..warmup + ops {
        let t = std::time::Instant::now();
        one(i)?;
        let elapsed = t.elapsed();
        if i >= warmup {
            record(&mut h, elapsed);
        }
    }
    Ok(h)
}

/// `met` or `missed` for a figure against its target.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "missed"
    }
}

/// Writes `h` into `dir` (created if need be) as the `.hgrm` file of `case`: its name is
/// `prefix` and the case with spaces, slashes and commas made underscores.
pub fn write_case_hgrm(
    dir: &Path,
    prefix: &str,
    case: &str,
    h: &Histogram<u64>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file = dir.join(format!("{prefix}{}.hgrm", case.replace([' ', '/', ','], "_")));
    write_hgrm(&file, h).map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// Writes `h` as an `.hgrm` percentile distribution (values in microseconds).
pub fn write_hgrm(path: &Path, h: &Histogram<u64>) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    // Five steps per halving of the distance to 100%, as HdrHistogram's own output does.
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 { format!("{:.2}", 1.0 / (1.0 - q)) } else { "inf".to_string() };
        writeln!(
            out,
            "{:>12.3} {:>14.12} {:>10} {:>14}",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            v.count_since_last_iteration(),
            inverse
        )?;
    }
    writeln!(out, "#[Max = {:.3}, Total count = {}]", h.max() as f64 / 1000.0, h.len())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_ratio_come_from_the_histogram() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let row = LatencyRow::from_histogram("x", &h);
        assert!((499_000..=501_000).contains(&row.percentiles_ns[0]), "{:?}", row.percentiles_ns);
        assert!(row.max_ns >= 999_000);
        let mut half = histogram();
        half.record(250_000).unwrap();
        let r = LatencyRow::from_histogram("y", &half).against(&row);
        let ratio = r.reference.unwrap().1;
        assert!((0.49..0.51).contains(&ratio), "{ratio}");
        let path = std::env::temp_dir().join(format!("bw-report-{}.hgrm", std::process::id()));
        write_hgrm(&path, &h).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(text.contains("Total count = 1000"), "{text}");
    }
}
