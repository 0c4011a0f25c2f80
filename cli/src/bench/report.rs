//! What a run leaves behind: a table on stdout, a JSON result and an SVG chart.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// A latency histogram in microseconds, up to one minute (record with
/// `saturating_record`, so slower values count as one minute instead of vanishing).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Percentiles of a microsecond histogram, in milliseconds.
pub fn percentiles(h: &Histogram<u64>) -> Value {
    let ms = |v: u64| (v as f64 / 1000.0 * 1000.0).round() / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p99_9_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

/// Each server process's CPU seconds between two readings (core-svc first).
pub fn cpu_spent(before: &[super::procfs::Usage], after: &[super::procfs::Usage]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.cpu_secs - b.cpu_secs)
        .collect()
}

/// The `cpu_secs` of a result: core-svc's (the first), the edges', the load tool's.
pub fn cpu_json(cpu: &[f64], tool: f64) -> Value {
    json!({"core_svc": cpu[0], "ws_edge": cpu[1..].iter().sum::<f64>(), "load_tool": tool})
}

/// Frames delivered per server CPU-second.
pub fn per_cpu_sec(delivered: u64, cpu: &[f64]) -> f64 {
    let server: f64 = cpu.iter().sum();
    if server > 0.0 {
        (delivered as f64 / server).round()
    } else {
        0.0
    }
}

/// Prints rows under a title, columns padded.
pub fn table(title: &str, headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("\n{title}");
    println!("{}", line(headers.to_vec()));
    for row in rows {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// Writes the result as `<out>/<name>.json` and returns the path.
///
/// # Errors
/// When the file cannot be written.
pub fn write_json(out: &Path, name: &str, value: &Value) -> anyhow::Result<PathBuf> {
    let path = out.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(value)? + "\n")?;
    Ok(path)
}

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart with a logarithmic y axis (latencies span orders of magnitude).
pub fn svg_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 440.0, 70.0, 170.0, 40.0, 50.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let y_min = all
        .clone()
        .map(|p| p.1)
        .filter(|y| *y > 0.0)
        .fold(f64::MAX, f64::min)
        .clamp(0.001, 1.0);
    let y_max = all.map(|p| p.1).fold(1.0, f64::max);
    let (ly0, ly1) = (
        y_min.log10().floor(),
        y_max.log10().ceil().max(y_min.log10().floor() + 1.0),
    );
    let x = |v: f64| left + v / x_max * pw;
    let y = |v: f64| top + ph - ((v.max(y_min)).log10() - ly0) / (ly1 - ly0) * ph;
    let colours = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    ];
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" font-size="15" text-anchor="middle">{title}</text>
<text x="{}" y="{}" text-anchor="middle">{x_label}</text>
<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">{y_label}</text>
"##,
        left + pw / 2.0,
        left + pw / 2.0,
        h - 10.0,
        top + ph / 2.0,
        top + ph / 2.0
    );
    let mut decade = ly0;
    while decade <= ly1 {
        let v = 10f64.powf(decade);
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{yy}" y2="{yy}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            yy + 4.0,
            v
        );
        decade += 1.0;
    }
    for i in 0..=4 {
        let v = x_max * f64::from(i) / 4.0;
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="middle">{:.0}</text>"##,
            x(v),
            top + ph + 18.0,
            v
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    for (i, s) in series.iter().enumerate() {
        let c = colours[i % colours.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"##,
            pts.join(" ")
        );
        for (a, b) in &s.points {
            let _ = writeln!(
                svg,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"##,
                x(*a),
                y(*b)
            );
        }
        let ly = top + 14.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r##"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="2"/><text x="{}" y="{}">{}</text>"##,
            w - right + 12.0,
            w - right + 32.0,
            w - right + 38.0,
            ly + 4.0,
            s.name
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Writes `<out>/<name>.svg` and returns the path.
///
/// # Errors
/// When the file cannot be written.
pub fn write_svg(out: &Path, name: &str, svg: &str) -> anyhow::Result<PathBuf> {
    let path = out.join(format!("{name}.svg"));
    std::fs::write(&path, svg)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_milliseconds() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.record(us * 10).unwrap();
        }
        let p = percentiles(&h);
        assert_eq!(p["count"], 1000);
        assert!((p["p50_ms"].as_f64().unwrap() - 5.0).abs() < 0.05, "{p}");
        assert!((p["max_ms"].as_f64().unwrap() - 10.0).abs() < 0.05, "{p}");
    }

    #[test]
    fn charts_are_svg_with_a_line_per_series() {
        let s = svg_chart(
            "t",
            "x",
            "y",
            &[
                Series {
                    name: "p50".into(),
                    points: vec![(1000.0, 0.5), (2000.0, 0.8)],
                },
                Series {
                    name: "p99".into(),
                    points: vec![(1000.0, 2.0), (2000.0, 30.0)],
                },
            ],
        );
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 2);
    }
}
