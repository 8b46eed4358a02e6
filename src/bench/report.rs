//! `--report out.html`: one self-contained HTML page (inline SVG, no scripts) with the summary,
//! throughput and latency over time, and the latency percentile curve.

use super::{Common, Side, Verification};
use std::fmt::Write as _;

const W: f64 = 760.0;
const H: f64 = 260.0;
const PAD: f64 = 56.0;
/// Right margin: room for the legend.
const PAD_R: f64 = 120.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A line chart of `series` (name, points); `x_ticks` overrides the numeric x labels.
fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    x_ticks: Option<&[(f64, String)]>,
) -> String {
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.1 };
    let sx = |x: f64| PAD + (x - x0) / (x1 - x0) * (W - PAD - PAD_R);
    let sy = |y: f64| H - PAD + 10.0 - y / y1 * (H - 2.0 * PAD);
    let mut s = format!(
        "<h2>{}</h2><svg width=\"{W}\" height=\"{H}\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"11\" font-family=\"sans-serif\">",
        esc(title)
    );
    let (bx, by) = (sy(0.0), PAD - 10.0);
    let _ = write!(
        s,
        "<line x1=\"{PAD}\" y1=\"{bx}\" x2=\"{}\" y2=\"{bx}\" stroke=\"#444\"/><line x1=\"{PAD}\" y1=\"{by}\" x2=\"{PAD}\" y2=\"{bx}\" stroke=\"#444\"/>",
        W - PAD_R
    );
    for i in 0..=4 {
        let y = y1 * i as f64 / 4.0;
        let at = sy(y);
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><line x1=\"{PAD}\" y1=\"{at}\" x2=\"{}\" y2=\"{at}\" stroke=\"#eee\"/>",
            PAD - 4.0,
            at + 4.0,
            fmt_num(y),
            W - PAD_R
        );
    }
    let ticks: Vec<(f64, String)> = match x_ticks {
        Some(t) => t.to_vec(),
        None => (0..=5)
            .map(|i| {
                let x = x0 + (x1 - x0) * i as f64 / 5.0;
                (x, fmt_num(x))
            })
            .collect(),
    };
    for (x, label) in ticks {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            sx(x),
            bx + 14.0,
            esc(&label)
        );
    }
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text><text x=\"12\" y=\"{}\" transform=\"rotate(-90 12 {3})\" text-anchor=\"middle\">{}</text>",
        W / 2.0,
        H - 6.0,
        esc(x_label),
        H / 2.0,
        esc(y_label)
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\" points=\"{}\"/><text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>",
            path.join(" "),
            W - PAD_R + 8.0,
            PAD + 14.0 * i as f64,
            esc(name)
        );
    }
    s + "</svg>"
}

fn fmt_num(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Percentiles plotted on a "nines" axis: x = -log10(1 - q).
const QUANTILES: [(f64, &str); 7] = [
    (0.5, "p50"),
    (0.9, "p90"),
    (0.99, "p99"),
    (0.999, "p99.9"),
    (0.9999, "p99.99"),
    (0.99999, "p99.999"),
    (1.0, "max"),
];

pub fn write(
    path: &std::path::Path,
    mode: &str,
    common: &Common,
    sides: &[Side],
    secs: f64,
    verification: Option<&Verification>,
) -> anyhow::Result<()> {
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>flumen bench {mode}</title><style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:right}}</style></head><body><h1>flumen bench {mode}</h1><p>broker {} · topic {} · {secs:.1} s</p><table><tr><th></th><th>records</th><th>records/s</th><th>MB/s</th><th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>p99.99 ms</th><th>max ms</th></tr>",
        esc(&common.bootstrap),
        esc(&common.topic)
    );
    for s in sides {
        let h = &s.total;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let records = s.records();
        let _ = write!(
            html,
            "<tr><th>{}</th><td>{records}</td><td>{:.0}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
            s.name,
            records as f64 / secs,
            s.bytes() as f64 / secs / 1e6,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            ms(0.9999),
            h.max() as f64 / 1000.0
        );
    }
    html += "</table>";
    if let Some(v) = verification {
        let _ = write!(
            html,
            "<p>verification: <b>{}</b> — {} records checked, {} missing, {} duplicated, {} corrupt, {} not from the bench</p>",
            if v.ok() { "OK" } else { "FAILED" },
            v.verified,
            v.missing,
            v.duplicates,
            v.corrupt,
            v.foreign
        );
    }
    let over_time =
        |f: fn(&super::Sample) -> f64, suffix: &str| -> Vec<(String, Vec<(f64, f64)>)> {
            sides
                .iter()
                .map(|s| {
                    (
                        format!("{}{suffix}", s.name),
                        s.series.iter().map(|x| (x.t, f(x))).collect(),
                    )
                })
                .collect()
        };
    html += &chart(
        "Throughput",
        "seconds",
        "records/s",
        &over_time(|x| x.records_per_sec, ""),
        None,
    );
    let mut lat = over_time(|x| x.p99_ms, " p99");
    lat.extend(over_time(|x| x.p50_ms, " p50"));
    html += &chart("Latency over time", "seconds", "ms", &lat, None);
    let nines = |q: f64| if q >= 1.0 { 6.0 } else { -(1.0 - q).log10() };
    let curves: Vec<(String, Vec<(f64, f64)>)> = sides
        .iter()
        .map(|s| {
            let pts = QUANTILES
                .iter()
                .map(|&(q, _)| {
                    let v = if q >= 1.0 {
                        s.total.max()
                    } else {
                        s.total.value_at_quantile(q)
                    };
                    (nines(q), v as f64 / 1000.0)
                })
                .collect();
            (s.name.to_string(), pts)
        })
        .collect();
    let ticks: Vec<(f64, String)> = QUANTILES
        .iter()
        .map(|&(q, label)| (nines(q), label.to_string()))
        .collect();
    html += &chart(
        "Latency percentiles",
        "percentile",
        "ms",
        &curves,
        Some(&ticks),
    );
    html += "</body></html>\n";
    std::fs::write(path, html)?;
    Ok(())
}
