//! The comparison table of a set of runs: one row per transport (and per stack: full or bare
//! transporter), joining the ping-pong run's percentiles and ratio to its physical reference with
//! the stream run's rate and receiver wakeups. Reads the JSON documents the runs printed
//! (`--json`), which are input: a document without the expected fields is an error naming the
//! file and the field.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// One row of the table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    /// The transport, with `(bare)` for runs without the block runtime.
    pub label: String,
    /// p50, p99, p99.9 of the round trip, in ns.
    pub round_trip_ns: Option<[u64; 3]>,
    /// Ratio of p50 to the reference's p50, the reference's name and p50 in ns.
    pub ratio: Option<(f64, String, u64)>,
    /// Streamed signals per second.
    pub per_second: Option<f64>,
    /// Receiver wakeups per 1,000 streamed signals.
    pub wakeups_per_1000: Option<f64>,
}

fn field<'a>(doc: &'a Value, path: &[&str], file: &str) -> Result<&'a Value, String> {
    let mut v = doc;
    for key in path {
        v = v.get(key).ok_or_else(|| format!("{file}: no field `{}`", path.join(".")))?;
    }
    Ok(v)
}

fn text<'a>(doc: &'a Value, path: &[&str], file: &str) -> Result<&'a str, String> {
    field(doc, path, file)?
        .as_str()
        .ok_or_else(|| format!("{file}: `{}` is not a string", path.join(".")))
}

fn number(v: &Value, what: &str, file: &str) -> Result<f64, String> {
    v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| format!("{file}: `{what}` is not a number"))
}

/// The measured row of a list: the one compared with a reference.
fn measured<'a>(rows: &'a Value, what: &str, file: &str) -> Result<&'a Value, String> {
    rows.as_array()
        .and_then(|rows| rows.iter().find(|r| r.get("reference").is_some_and(|x| !x.is_null())))
        .ok_or_else(|| format!("{file}: no `{what}` row with a reference"))
}

/// Adds the run in `doc` (read from `file`) to `rows`.
pub fn add_run(rows: &mut Vec<Row>, doc: &Value, file: &str) -> Result<(), String> {
    let command = text(doc, &["run", "command"], file)?;
    if matches!(command, "limit" | "idle") {
        // References alone and idle links have no row of their own.
        return Ok(());
    }
    let label = text(doc, &["run", "label"], file)?.to_string();
    let at = match rows.iter().position(|r| r.label == label) {
        Some(i) => i,
        None => {
            rows.push(Row { label, ..Row::default() });
            rows.len() - 1
        }
    };
    let row = &mut rows[at];
    match command {
        "pingpong" => {
            let latency = field(doc, &["latency"], file)?;
            let m = measured(latency, "latency", file)?;
            let p = field(m, &["percentiles_ns"], file)?
                .as_array()
                .filter(|p| p.len() == 5)
                .ok_or_else(|| format!("{file}: `percentiles_ns` is not 5 numbers"))?;
            let ns = |i: usize| number(&p[i], "percentiles_ns", file).map(|x| x as u64);
            row.round_trip_ns = Some([ns(0)?, ns(2)?, ns(3)?]);
            let reference = m["reference"][0]
                .as_str()
                .ok_or(format!("{file}: the reference has no name"))?
                .to_string();
            let ratio = number(&m["reference"][1], "reference ratio", file)?;
            let reference_p50 = latency
                .as_array()
                .and_then(|rows| rows.iter().find(|r| r["case"].as_str() == Some(&reference)))
                .and_then(|r| r["percentiles_ns"][0].as_u64())
                .ok_or_else(|| format!("{file}: the reference row {reference:?} is missing"))?;
            row.ratio = Some((ratio, reference, reference_p50));
        }
        "stream" => {
            let m = measured(field(doc, &["rates"], file)?, "rates", file)?;
            row.per_second = Some(number(&m["per_second"], "per_second", file)?);
            row.wakeups_per_1000 = m["wakeups_per_1000"].as_f64();
        }
        other => return Err(format!("{file}: run.command {other:?} has no place in the table")),
    }
    Ok(())
}

/// Reads every `.json` file of `dir` (sorted by name) into rows.
pub fn read_dir(dir: &Path) -> Result<Vec<Row>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut rows = Vec::new();
    for f in &files {
        let name = f.display().to_string();
        let text = std::fs::read_to_string(f).map_err(|e| format!("cannot read {name}: {e}"))?;
        let doc: Value =
            serde_json::from_str(&text).map_err(|e| format!("{name}: not JSON: {e}"))?;
        add_run(&mut rows, &doc, &name)?;
    }
    Ok(rows)
}

/// The table as Markdown.
pub fn markdown(rows: &[Row]) -> String {
    let us = |ns: u64| format!("{:.2}", ns as f64 / 1000.0);
    let mut out = String::from(
        "| transport | p50 (us) | p99 (us) | p99.9 (us) | signals/s | wakeups/1k | ratio to limit (p50) |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for r in rows {
        let [p50, p99, p999] = r
            .round_trip_ns
            .map_or(["-".to_string(), "-".into(), "-".into()], |p| [us(p[0]), us(p[1]), us(p[2])]);
        let rate = r.per_second.map_or("-".into(), |s| format!("{:.2} M", s / 1e6));
        let wakeups = r.wakeups_per_1000.map_or("-".into(), |w| format!("{w:.3}"));
        let ratio = r
            .ratio
            .as_ref()
            .map_or("-".into(), |(x, name, p50)| format!("{x:.2}x {name} ({} us)", us(*p50)));
        out +=
            &format!("| {} | {p50} | {p99} | {p999} | {rate} | {wakeups} | {ratio} |\n", r.label);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pingpong(label: &str) -> Value {
        json!({
            "run": { "command": "pingpong", "label": label },
            "latency": [
                { "case": "limit bare tcp spin", "count": 10,
                  "percentiles_ns": [8000, 9000, 10000, 11000, 12000], "max_ns": 13000,
                  "reference": null },
                { "case": "tcp spin 4w", "count": 10,
                  "percentiles_ns": [16000, 17000, 18000, 19000, 20000], "max_ns": 21000,
                  "reference": ["limit bare tcp spin", 2.0] }
            ],
            "rates": []
        })
    }

    #[test]
    fn runs_join_into_one_row_per_transport() {
        let mut rows = Vec::new();
        add_run(&mut rows, &pingpong("tcp"), "a.json").unwrap();
        let stream = json!({
            "run": { "command": "stream", "label": "tcp" },
            "latency": [],
            "rates": [
                { "case": "limit", "per_second": 1e5, "bytes_per_second": 1.0,
                  "wakeups_per_1000": null, "reference": null },
                { "case": "tcp", "per_second": 2.5e6, "bytes_per_second": 1.0,
                  "wakeups_per_1000": 0.25, "reference": ["limit", 25.0] }
            ]
        });
        add_run(&mut rows, &stream, "b.json").unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.round_trip_ns, Some([16000, 18000, 19000]));
        assert_eq!(r.ratio, Some((2.0, "limit bare tcp spin".into(), 8000)));
        assert_eq!(r.per_second, Some(2.5e6));
        let table = markdown(&rows);
        assert!(
            table.contains("| tcp | 16.00 | 18.00 | 19.00 | 2.50 M | 0.250 | 2.00x"),
            "{table}"
        );
    }

    #[test]
    fn bad_documents_name_the_file_and_field() {
        let mut rows = Vec::new();
        let err = add_run(&mut rows, &json!({"run": {"command": "pingpong"}}), "x.json");
        assert!(err.unwrap_err().contains("x.json: no field `run.label`"));
        let mut doc = pingpong("shm");
        doc["latency"][1]["percentiles_ns"] = json!([1, 2]);
        let err = add_run(&mut rows, &doc, "y.json").unwrap_err();
        assert!(err.contains("y.json") && err.contains("percentiles_ns"), "{err}");
        let mut doc = pingpong("shm");
        doc["latency"][0]["case"] = json!("other");
        let err = add_run(&mut rows, &doc, "z.json").unwrap_err();
        assert!(err.contains("reference row"), "{err}");
    }
}
