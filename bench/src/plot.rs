//! The latency plot: every `.hgrm` percentile distribution of a directory drawn in one SVG, the
//! way HdrHistogram's plotter draws them: the x axis is `1/(1-percentile)` on a log scale
//! (labelled 0%, 90%, 99%, 99.9%, ...), so the tail gets as much room as the median; the y axis
//! is latency in microseconds, log scaled. Distributions whose name starts with `limit` (the
//! physical references) are drawn dashed.
//!
//! `.hgrm` files are input: a line that is not `value percentile ...` (numbers, percentile in
//! 0..=1) is an error naming the file and line; header, blank and `#` lines are skipped.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

/// One distribution: its name and (1/(1-p), latency in µs) points, p < 1 only.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The name shown in the legend (the file stem, `_` as spaces).
    pub name: String,
    /// (percentile in 0..1, latency in µs), in file order.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// Whether this is a physical reference.
    pub fn is_limit(&self) -> bool {
        self.name.starts_with("limit")
    }
}

/// Parses the text of an `.hgrm` file named `name` (for errors and the legend).
pub fn parse_hgrm(name: &str, text: &str) -> Result<Series, String> {
    let mut points = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("Value") {
            continue;
        }
        let mut fields = line.split_whitespace();
        let number = |f: Option<&str>| f.and_then(|f| f.parse::<f64>().ok());
        match (number(fields.next()), number(fields.next())) {
            (Some(v), Some(p)) if v.is_finite() && v >= 0.0 && (0.0..=1.0).contains(&p) => {
                points.push((p, v))
            }
            _ => {
                return Err(format!(
                    "{name}, line {}: expected `value percentile ...` with a latency >= 0 and a \
                     percentile in 0..=1, got {line:?}",
                    i + 1
                ))
            }
        }
    }
    if points.is_empty() {
        return Err(format!("{name}: no percentile rows"));
    }
    Ok(Series { name: name.to_string(), points })
}

/// Reads every `.hgrm` file of `dir`, sorted by name.
pub fn read_dir(dir: &Path) -> Result<Vec<Series>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hgrm"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no .hgrm files in {}", dir.display()));
    }
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            let stem = f.file_stem().map_or(String::new(), |s| s.to_string_lossy().into_owned());
            parse_hgrm(&stem.replace('_', " "), &text).map_err(|e| format!("{}: {e}", f.display()))
        })
        .collect()
}

/// Line colours of measured distributions (strong and distinct on white).
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(31, 31, 120),
];
/// Limit references: black and greys, each with its own dash length.
const LIMIT_COLORS: [RGBColor; 3] =
    [RGBColor(0, 0, 0), RGBColor(96, 96, 96), RGBColor(150, 150, 150)];

/// x of a percentile: 1/(1-p), with p = 1 (the maximum) drawn at `x_max`.
fn x_of(p: f64, x_max: f64) -> f64 {
    if p >= 1.0 {
        x_max
    } else {
        (1.0 / (1.0 - p)).min(x_max)
    }
}

/// The percentile a power of ten on the x axis stands for: 1 -> 0%, 10 -> 90%, 100 -> 99%...
fn percentile_label(x: &f64) -> String {
    let k = x.log10();
    if (k - k.round()).abs() > 1e-6 || k < -1e-6 {
        return String::new();
    }
    let k = k.round() as i32;
    if k == 0 {
        return "0%".into();
    }
    let nines = (k - 2).max(0) as usize;
    format!("{}%", if k == 1 { "90".into() } else { format!("99.{}", "9".repeat(nines)) })
        .replace("99.%", "99%")
}

fn decade_bounds(lo: f64, hi: f64) -> (f64, f64) {
    let lo = 10f64.powf(lo.max(1e-3).log10().floor());
    let hi = 10f64.powf(hi.max(lo * 10.0).log10().ceil());
    (lo, hi)
}

/// Draws `series` into an SVG at `out`, titled `title`.
pub fn write_svg(series: &[Series], title: &str, out: &Path) -> Result<(), String> {
    if series.is_empty() {
        return Err("nothing to plot".into());
    }
    let finite_x = series
        .iter()
        .flat_map(|s| &s.points)
        .filter(|(p, _)| *p < 1.0)
        .map(|(p, _)| 1.0 / (1.0 - p))
        .fold(10.0, f64::max);
    let x_max = 10f64.powf(finite_x.log10().ceil());
    let values = series.iter().flat_map(|s| &s.points).map(|(_, v)| *v);
    let lo = values.clone().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let hi = values.fold(0.0, f64::max);
    let (y_lo, y_hi) = decade_bounds(if lo.is_finite() { lo } else { 0.01 }, hi);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let root = SVGBackend::new(out, (960, 600)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", out.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .margin_right(40)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((1f64..x_max).log_scale(), (y_lo..y_hi).log_scale())
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile (log scale of 1/(1-p))")
        .y_desc("round trip (us, log scale)")
        .x_label_formatter(&percentile_label)
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(|e| draw(&e))?;
    let (mut solid, mut dashed) = (0, 0);
    for s in series {
        let points: Vec<(f64, f64)> =
            s.points.iter().map(|(p, v)| (x_of(*p, x_max), v.max(y_lo))).collect();
        let (color, dash) = if s.is_limit() {
            dashed += 1;
            let n = dashed - 1;
            let dash = if (n / LIMIT_COLORS.len()) % 2 == 0 { 3 } else { 8 };
            (LIMIT_COLORS[n % LIMIT_COLORS.len()], dash)
        } else {
            solid += 1;
            (COLORS[(solid - 1) % COLORS.len()], 0)
        };
        let style = color.stroke_width(2);
        let drawn = if dash > 0 {
            chart.draw_series(DashedLineSeries::new(points, dash, 3, style))
        } else {
            chart.draw_series(LineSeries::new(points, style))
        };
        drawn.map_err(|e| draw(&e))?.label(s.name.clone()).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
        });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_rows_parse_and_bad_lines_are_named() {
        let text = "       Value     Percentile TotalCount 1/(1-Percentile)\n\n\
                          1.000 0.000000000000 1 1.00\n\
                          2.500 0.990000000000 9 100.00\n\
                          9.000 1.000000000000 1 inf\n#[Max = 9.000, Total count = 11]\n";
        let s = parse_hgrm("tcp spin 4w", text).unwrap();
        assert_eq!(s.points, vec![(0.0, 1.0), (0.99, 2.5), (1.0, 9.0)]);
        assert!(!s.is_limit());
        let err = parse_hgrm("x", "1.0 0.5\n2.0 1.5\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("1.5"), "{err}");
        let err = parse_hgrm("x", "abc def\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert!(parse_hgrm("x", "# only a comment\n").unwrap_err().contains("no percentile"));
    }

    #[test]
    fn axis_labels_are_percentiles_at_powers_of_ten() {
        assert_eq!(percentile_label(&1.0), "0%");
        assert_eq!(percentile_label(&10.0), "90%");
        assert_eq!(percentile_label(&100.0), "99%");
        assert_eq!(percentile_label(&1000.0), "99.9%");
        assert_eq!(percentile_label(&100000.0), "99.999%");
        assert_eq!(percentile_label(&50.0), "");
        assert!((x_of(0.9, 1e4) - 10.0).abs() < 1e-9);
        assert_eq!(x_of(1.0, 1e4), 1e4);
    }
}
