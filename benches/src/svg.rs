//! The SVG bar chart of a report, written by hand (no plotting dependency).
//!
//! One panel per workload, each with its own axis (requests per second or
//! GB per second), one bar per client in one colour per client across all
//! panels, the min–max spread drawn as a whisker and the median written at
//! the end of the bar.

use std::fmt::Write as _;

use crate::report::{format_number, Report};
use crate::workload::{ClientKind, Workload};

const WIDTH: f64 = 960.0;
const LEFT: f64 = 130.0;
const RIGHT: f64 = 150.0;
const BAR: f64 = 16.0;
const GAP: f64 = 6.0;

/// Colour of each client, in [`ClientKind::ALL`] order: a library's direct
/// baseline is the light shade of its backend's colour.
const COLOURS: [&str; 9] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#aec7e8", "#ffbb78", "#98df8a", "#9467bd", "#7f7f7f",
    "#8c564b",
];

fn colour(client: &str) -> &'static str {
    ClientKind::ALL
        .iter()
        .position(|c| c.name() == client)
        .map_or("#333333", |i| COLOURS[i])
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round axis maximum and tick step covering `max`.
fn axis(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.2);
    }
    let rough = max / 5.0;
    let mag = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| s * 5.0 >= max)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

/// The chart of `report` as an SVG document.
pub fn chart(report: &Report) -> String {
    let workloads: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| report.results.iter().any(|r| r.workload == w.name()))
        .collect();
    let clients: Vec<ClientKind> = ClientKind::ALL
        .into_iter()
        .filter(|c| report.results.iter().any(|r| r.client == c.name()))
        .collect();
    let plot = WIDTH - LEFT - RIGHT;

    let mut body = String::new();
    let mut y = 20.0;
    let _ = writeln!(
        body,
        r#"<text x="{:.0}" y="{y:.0}" class="title">rh bench: median of {} runs, whiskers from the slowest to the fastest run</text>"#,
        WIDTH / 2.0,
        report.settings.runs
    );
    y += 18.0;
    let _ = writeln!(
        body,
        r#"<text x="{:.0}" y="{y:.0}" class="sub">{} · {} cores · {}</text>"#,
        WIDTH / 2.0,
        escape(&report.machine.date),
        report.machine.cores,
        escape(&report.machine.os)
    );
    // Legend: one swatch per client.
    y += 22.0;
    let mut x = 20.0;
    for c in &clients {
        let label = c.name();
        let w = 26.0 + 7.5 * label.len() as f64;
        if x + w > WIDTH - 10.0 {
            x = 20.0;
            y += 18.0;
        }
        let _ = writeln!(
            body,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}" class="legend">{}</text>"#,
            y - 10.0,
            colour(label),
            x + 16.0,
            y,
            escape(label)
        );
        x += w;
    }
    y += 14.0;

    for w in workloads {
        let rows: Vec<_> = clients
            .iter()
            .filter_map(|c| report.find(w.name(), c.name()))
            .collect();
        let unit = rows.first().map_or("req/s", |r| r.unit.as_str());
        let scale = if unit == "bytes/s" { 1e9 } else { 1.0 };
        let top = rows.iter().map(|r| r.max.max(r.median)).fold(0.0, f64::max) / scale;
        let (axis_max, step) = axis(top);
        let px = |v: f64| LEFT + (v / scale / axis_max).clamp(0.0, 1.0) * plot;

        y += 24.0;
        let _ = writeln!(
            body,
            r#"<text x="{LEFT:.0}" y="{y:.0}" class="panel">{}: {}</text>"#,
            w.name(),
            escape(w.description())
        );
        y += 8.0;
        let panel_top = y;
        let panel_h = rows.len() as f64 * (BAR + GAP) + GAP;
        // Grid and tick labels.
        let mut tick = 0.0;
        while tick <= axis_max * 1.000_001 {
            let tx = LEFT + tick / axis_max * plot;
            let label = if unit == "bytes/s" {
                format!("{tick:.1}")
            } else {
                format_number(tick, unit)
            };
            let _ = writeln!(
                body,
                r#"<line x1="{tx:.1}" y1="{panel_top:.1}" x2="{tx:.1}" y2="{:.1}" class="grid"/><text x="{tx:.1}" y="{:.1}" class="tick">{label}</text>"#,
                panel_top + panel_h,
                panel_top + panel_h + 14.0
            );
            tick += step;
        }
        for (i, r) in rows.iter().enumerate() {
            let by = panel_top + GAP + i as f64 * (BAR + GAP);
            let mid = by + BAR / 2.0;
            let end = px(r.median);
            let _ = writeln!(
                body,
                r#"<text x="{:.1}" y="{:.1}" class="label">{}</text><rect x="{LEFT:.1}" y="{by:.1}" width="{:.1}" height="{BAR}" fill="{}"><title>{} {}: {} {}</title></rect>"#,
                LEFT - 8.0,
                mid + 4.0,
                escape(&r.client),
                (end - LEFT).max(1.0),
                colour(&r.client),
                escape(&r.client),
                w.name(),
                format_number(r.median, unit),
                if unit == "bytes/s" { "GB/s" } else { "req/s" }
            );
            let (lo, hi) = (px(r.min), px(r.max));
            let _ = writeln!(
                body,
                r#"<path d="M{lo:.1} {mid:.1}H{hi:.1}M{lo:.1} {:.1}V{:.1}M{hi:.1} {:.1}V{:.1}" class="whisker"/>"#,
                mid - 4.0,
                mid + 4.0,
                mid - 4.0,
                mid + 4.0
            );
            let _ = writeln!(
                body,
                r#"<text x="{:.1}" y="{:.1}" class="value">{}</text>"#,
                end.max(hi) + 6.0,
                mid + 4.0,
                format_number(r.median, unit)
            );
        }
        let _ = writeln!(
            body,
            r#"<line x1="{LEFT:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" class="axis"/><line x1="{LEFT:.1}" y1="{panel_top:.1}" x2="{LEFT:.1}" y2="{:.1}" class="axis"/>"#,
            panel_top + panel_h,
            LEFT + plot,
            panel_top + panel_h,
            panel_top + panel_h
        );
        y = panel_top + panel_h + 30.0;
        let _ = writeln!(
            body,
            r#"<text x="{:.1}" y="{y:.1}" class="unit">{}</text>"#,
            LEFT + plot / 2.0,
            if unit == "bytes/s" {
                "GB per second (10⁹ bytes), higher is better"
            } else {
                "requests per second, higher is better"
            }
        );
        y += 6.0;
    }
    y += 14.0;

    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{y:.0}" viewBox="0 0 {WIDTH:.0} {y:.0}" font-family="sans-serif">
<style>
.title {{ font-size: 16px; font-weight: bold; text-anchor: middle; }}
.sub {{ font-size: 12px; fill: #555; text-anchor: middle; }}
.legend {{ font-size: 12px; }}
.panel {{ font-size: 13px; font-weight: bold; }}
.label {{ font-size: 12px; text-anchor: end; }}
.value {{ font-size: 11px; fill: #222; }}
.tick {{ font-size: 10px; fill: #555; text-anchor: middle; }}
.unit {{ font-size: 11px; fill: #555; text-anchor: middle; }}
.grid {{ stroke: #e4e4e4; stroke-width: 1; }}
.axis {{ stroke: #333; stroke-width: 1; }}
.whisker {{ stroke: #222; stroke-width: 1.2; fill: none; }}
</style>
<rect width="100%" height="100%" fill="white"/>
{body}</svg>
"##
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        assert_eq!(axis(43_000.0), (50_000.0, 10_000.0));
        assert_eq!(axis(2.3), (2.5, 0.5));
        assert_eq!(axis(0.0), (1.0, 0.2));
    }
}
