//! The SVG latency chart (`--svg FILE`): latency by percentile, the x axis stretched so that
//! 90 %, 99 %, 99.9 % … are equally spaced (x = log10(1 / (1 - p))), one line per target or
//! operation. Hand-written SVG: a few dozen elements do not justify a plotting crate's build
//! time on a two-core machine.

use std::fmt::Write as _;

use crate::report::CurvePoint;

const W: f64 = 800.0;
const H: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
/// Rightmost x: 99.999 %; the 100 % (max) point is drawn there too.
const X_MAX: f64 = 5.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

fn x_of(percentile: f64) -> f64 {
    let p = (percentile / 100.0).min(0.99999);
    (-(1.0 - p).log10()).min(X_MAX)
}

/// A tick step of 1, 2 or 5 × 10^n giving about five ticks up to `max`.
fn nice_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the chart. `series` = (label, curve); empty curves are skipped.
pub fn latency_svg(title: &str, series: &[(String, Vec<CurvePoint>)]) -> String {
    let y_max_data = series
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.ms))
        .fold(0.0f64, f64::max);
    let step = nice_step(y_max_data);
    let y_max = (y_max_data / step).ceil().max(1.0) * step;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + x / X_MAX * plot_w;
    let py = |ms: f64| TOP + plot_h - ms / y_max * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    // Grid and axis labels.
    for (x, label) in [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ] {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#ddd"/><text x="{0:.1}" y="{3}" text-anchor="middle">{label}</text>"##,
            px(x),
            TOP,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    let mut v = 0.0;
    while v <= y_max + step / 2.0 {
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{v}</text>"##,
            py(v),
            W - RIGHT,
            LEFT - 6.0,
            py(v) + 4.0
        );
        v += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        H - 14.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">latency (ms)</text>"#,
        TOP + plot_h / 2.0
    );
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let mut legend_y = TOP + 16.0;
    for (i, (label, points)) in series.iter().filter(|(_, c)| !c.is_empty()).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(x_of(p.percentile)), py(p.ms)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let _ = writeln!(
            s,
            r#"<rect x="{0}" y="{1:.1}" width="12" height="3" fill="{color}"/><text x="{2}" y="{3:.1}">{4}</text>"#,
            LEFT + 10.0,
            legend_y - 4.0,
            LEFT + 28.0,
            legend_y,
            escape(label)
        );
        legend_y += 16.0;
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_map_to_equally_spaced_decades() {
        assert_eq!(x_of(0.0), 0.0);
        assert!((x_of(90.0) - 1.0).abs() < 1e-9);
        assert!((x_of(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(x_of(100.0), X_MAX);
        assert_eq!(nice_step(9.0), 2.0);
        assert_eq!(nice_step(0.0), 1.0);
    }

    #[test]
    fn renders_one_polyline_per_non_empty_series() {
        let curve = vec![
            CurvePoint {
                percentile: 50.0,
                ms: 1.0,
            },
            CurvePoint {
                percentile: 99.0,
                ms: 4.0,
            },
            CurvePoint {
                percentile: 100.0,
                ms: 9.5,
            },
        ];
        let svg = latency_svg(
            "list <A & B>",
            &[
                ("a".into(), curve.clone()),
                ("b".into(), Vec::new()),
                ("c".into(), curve),
            ],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("list &lt;A &amp; B&gt;"));
        assert!(!svg.contains("NaN"));
    }
}
