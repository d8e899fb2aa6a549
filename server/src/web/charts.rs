//! The app page's charts (issue 26), drawn on the server as inline SVG from the app's metrics
//! (`crate::timeseries`): readable without JavaScript, refreshed by fetching this fragment again
//! (`GET /apps/{name}/charts`). Each chart is an `<svg role="img">` with a title and a text
//! summary of its latest values; deploys (blue) and crashes (red) are marked on the time axis.

use chrono::{DateTime, Utc};
use paas_common::api::{AppMetrics, MetricMark, NodeMetrics};
use std::fmt::Write;

const W: f64 = 600.0;
const H: f64 = 120.0;
/// Colours that keep a 3:1 contrast on white, told apart by dash pattern too.
const COLOURS: [&str; 6] = [
    "#1d4ed8", "#b91c1c", "#047857", "#7c3aed", "#b45309", "#0e7490",
];

struct Series {
    name: String,
    key: &'static str,
    /// (time, value); `None` values leave a gap.
    points: Vec<(DateTime<Utc>, Option<f64>)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A rounded top for the y axis: 1, 2 or 5 times a power of ten.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

/// What every chart of one render shares: the metrics (for the marks) and the time axis.
struct Frame<'a> {
    marks: &'a [MetricMark],
    t0: DateTime<Utc>,
    t1: DateTime<Utc>,
    /// How the axis names its ends: the hour, or the day too when the window spans days.
    time_format: &'static str,
}

fn time_format(window_secs: i64) -> &'static str {
    if window_secs > 86400 {
        "%b %d %H:%M"
    } else {
        "%H:%M"
    }
}

fn chart(out: &mut String, id: &str, title: &str, unit: &str, series: &[Series], f: &Frame<'_>) {
    let (t0, t1) = (f.t0, f.t1);
    let span = (t1 - t0).num_milliseconds().max(1) as f64;
    let x = |t: DateTime<Utc>| ((t - t0).num_milliseconds() as f64 / span * W).clamp(0.0, W);
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .fold(0.0f64, f64::max);
    let top = nice_max(max);
    let y = |v: f64| H - (v / top * H).clamp(0.0, H);
    let latest: Vec<String> = series
        .iter()
        .map(|s| {
            let last = s.points.iter().rev().find_map(|p| p.1);
            format!(
                "{}: {}",
                s.name,
                last.map_or("no data".into(), |v| format!("{} {unit}", fmt_num(v)))
            )
        })
        .collect();
    let _ = write!(
        out,
        r#"<figure class="chart" id="chart-{id}"><figcaption id="chart-{id}-t">{title} <span class="muted">({unit})</span></figcaption><svg viewBox="-40 -8 {vw} {vh}" role="img" aria-labelledby="chart-{id}-t chart-{id}-d" preserveAspectRatio="none"><desc id="chart-{id}-d">Latest: {desc}</desc>"#,
        vw = W + 48.0,
        vh = H + 28.0,
        desc = esc(&latest.join("; ")),
    );
    // Axes and grid.
    for frac in [0.0, 0.5, 1.0] {
        let gy = H - frac * H;
        let _ = write!(
            out,
            r##"<line class="grid" x1="0" x2="{W}" y1="{gy}" y2="{gy}"/><text class="tick" x="-4" y="{ty}" text-anchor="end">{label}</text>"##,
            ty = gy + 4.0,
            label = fmt_num(top * frac),
        );
    }
    let _ = write!(
        out,
        r#"<text class="tick" x="0" y="{ty}">{start}</text><text class="tick" x="{W}" y="{ty}" text-anchor="end">{end}</text>"#,
        ty = H + 16.0,
        start = t0.format(f.time_format),
        end = t1.format(f.time_format),
    );
    for mark in f.marks {
        let mx = x(mark.time);
        let _ = write!(
            out,
            r#"<line class="mark mark-{kind}" x1="{mx:.1}" x2="{mx:.1}" y1="0" y2="{H}"><title>{msg}</title></line>"#,
            kind = esc(&mark.kind),
            msg = esc(&format!(
                "{} {}",
                mark.time.format("%H:%M:%S"),
                mark.message
            )),
        );
    }
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let dash = if i % 2 == 1 {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        let mut pts = String::new();
        let mut n = 0;
        let mut smax = 0.0f64;
        let drawn: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter_map(|(t, v)| v.map(|v| (x(*t), v)))
            .collect();
        for (px, v) in thin(&drawn) {
            let _ = write!(pts, "{px:.1},{:.1} ", y(v));
            n += 1;
        }
        for (_, v) in &drawn {
            smax = smax.max(*v);
        }
        let _ = write!(
            out,
            r#"<polyline class="series" data-series="{key}" data-points="{n}" data-max="{smax}" fill="none" stroke="{colour}" stroke-width="2"{dash} points="{pts}"><title>{name}</title></polyline>"#,
            key = s.key,
            name = esc(&s.name),
            pts = pts.trim_end(),
        );
        // A line of one point draws nothing: a new series (the first minute of a node's
        // health) shows as a dot until its second point.
        if let [(px, v)] = drawn.as_slice() {
            let _ = write!(
                out,
                r#"<circle class="dot" cx="{px:.1}" cy="{cy:.1}" r="3" fill="{colour}"/>"#,
                cy = y(*v),
            );
        }
    }
    out.push_str("</svg><ul class=\"legend\">");
    for (i, s) in series.iter().enumerate() {
        let _ = write!(
            out,
            r#"<li><span class="swatch" style="background:{}"></span>{}</li>"#,
            COLOURS[i % COLOURS.len()],
            esc(&s.name)
        );
    }
    out.push_str("</ul></figure>");
}

/// At most two points per pixel column (the lowest and the highest, in time order): a day at
/// 10 s is 8,640 points on a 600-wide chart, and drawing them all made the day's page ten times
/// the hour's in size and render time while showing nothing more; spikes keep their height.
fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len().min(2 * W as usize + 2));
    let mut i = 0;
    while i < points.len() {
        let col = points[i].0.floor();
        let (mut lo, mut hi) = (points[i], points[i]);
        let mut j = i + 1;
        while j < points.len() && points[j].0.floor() == col {
            if points[j].1 < lo.1 {
                lo = points[j];
            }
            if points[j].1 > hi.1 {
                hi = points[j];
            }
            j += 1;
        }
        if lo == hi {
            out.push(lo);
        } else if lo.0 <= hi.0 {
            out.extend([lo, hi]);
        } else {
            out.extend([hi, lo]);
        }
        i = j;
    }
    out
}

/// The charts of one app's window as an HTML fragment.
pub fn render(m: &AppMetrics, window_secs: i64, now: DateTime<Utc>) -> String {
    let t1 = now;
    let t0 = now - chrono::Duration::seconds(window_secs);
    let res = f64::from(m.resolution_secs.max(1));
    let per = |f: &dyn Fn(&paas_common::api::MetricPoint) -> Option<f64>| -> Vec<(DateTime<Utc>, Option<f64>)> {
        m.points.iter().map(|p| (p.time, f(p))).collect()
    };
    let frame = Frame {
        marks: &m.marks,
        t0,
        t1,
        time_format: time_format(window_secs),
    };
    let mut out = String::new();
    if m.points.is_empty() {
        out.push_str(
            r#"<p class="muted" id="charts-empty">No metrics yet: points arrive every 10 seconds once the app is deployed.</p>"#,
        );
    }
    chart(
        &mut out,
        "requests",
        "Requests",
        "per second",
        &[Series {
            name: "requests/s".into(),
            key: "requests",
            points: per(&|p| Some(p.requests as f64 / res)),
        }],
        &frame,
    );
    chart(
        &mut out,
        "errors",
        "Server errors (5xx)",
        "per second",
        &[Series {
            name: "5xx/s".into(),
            key: "errors",
            points: per(&|p| Some(p.errors as f64 / res)),
        }],
        &frame,
    );
    chart(
        &mut out,
        "latency",
        "Latency",
        "ms",
        &[
            Series {
                name: "p50".into(),
                key: "p50",
                points: per(&|p| p.p50_ms),
            },
            Series {
                name: "p99".into(),
                key: "p99",
                points: per(&|p| p.p99_ms),
            },
        ],
        &frame,
    );
    let mut indices: Vec<u32> = m
        .points
        .iter()
        .flat_map(|p| p.instances.iter().map(|i| i.index))
        .collect();
    indices.sort_unstable();
    indices.dedup();
    let per_instance = |f: fn(&paas_common::api::InstanceMetric) -> f64, key: &'static str| {
        indices
            .iter()
            .map(|&idx| Series {
                name: format!("instance {idx}"),
                key,
                points: per(&|p| p.instances.iter().find(|i| i.index == idx).map(f)),
            })
            .collect::<Vec<_>>()
    };
    chart(
        &mut out,
        "memory",
        "Memory per instance",
        "MB",
        &per_instance(|i| i.memory_bytes as f64 / 1048576.0, "memory"),
        &frame,
    );
    chart(
        &mut out,
        "cpu",
        "CPU per instance",
        "% of a core",
        &per_instance(|i| i.cpu_percent, "cpu"),
        &frame,
    );
    chart(
        &mut out,
        "restarts",
        "Restarts",
        "total",
        &[Series {
            name: "restarts".into(),
            key: "restarts",
            points: per(&|p| Some(p.restarts as f64)),
        }],
        &frame,
    );
    out
}

/// The nodes page's health charts (operators): per node, the time since its last heartbeat,
/// reserved memory against capacity and instances, with its state changes marked on the time
/// axis (red when it went lost, blue otherwise).
pub fn render_nodes(m: &NodeMetrics, window_secs: i64, now: DateTime<Utc>) -> String {
    let t0 = now - chrono::Duration::seconds(window_secs);
    let mut out = String::new();
    if m.nodes.is_empty() {
        out.push_str(
            r#"<p class="muted" id="node-health-empty">No node health yet: a point per minute arrives once a node heartbeats.</p>"#,
        );
    }
    for (i, n) in m.nodes.iter().enumerate() {
        let mut marks = Vec::new();
        let mut prev: Option<&str> = None;
        for p in &n.points {
            if prev.is_some_and(|s| s != p.state) {
                marks.push(MetricMark {
                    time: p.time,
                    kind: if p.state == "lost" { "crash" } else { "deploy" }.into(),
                    message: format!("{} became {}", n.name, p.state),
                });
            }
            prev = Some(&p.state);
        }
        let frame = Frame {
            marks: &marks,
            t0,
            t1: now,
            time_format: time_format(window_secs),
        };
        let per = |f: &dyn Fn(&paas_common::api::NodeMetricPoint) -> f64| {
            n.points
                .iter()
                .map(|p| (p.time, Some(f(p))))
                .collect::<Vec<_>>()
        };
        let _ = write!(
            out,
            r#"<section class="node-health" data-node="{name}" aria-labelledby="node-health-{i}"><h3 id="node-health-{i}">{name}</h3><div class="charts">"#,
            name = esc(&n.name),
        );
        chart(
            &mut out,
            &format!("node-{i}-lag"),
            "Since last heartbeat",
            "s",
            &[Series {
                name: "heartbeat lag".into(),
                key: "lag",
                points: per(&|p| p.lag_secs),
            }],
            &frame,
        );
        chart(
            &mut out,
            &format!("node-{i}-memory"),
            "Memory reserved",
            "MB",
            &[
                Series {
                    name: "reserved".into(),
                    key: "reserved",
                    points: per(&|p| p.reserved_mb as f64),
                },
                Series {
                    name: "capacity".into(),
                    key: "capacity",
                    points: per(&|p| p.capacity_mb as f64),
                },
            ],
            &frame,
        );
        chart(
            &mut out,
            &format!("node-{i}-instances"),
            "Instances",
            "count",
            &[Series {
                name: "instances".into(),
                key: "instances",
                points: per(&|p| p.instances as f64),
            }],
            &frame,
        );
        out.push_str("</div></section>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use paas_common::api::{InstanceMetric, MetricMark, MetricPoint};

    #[test]
    fn charts_draw_points_marks_and_escape_text() {
        let now = Utc::now();
        let m = AppMetrics {
            resolution_secs: 10,
            points: (0..3)
                .map(|i| MetricPoint {
                    time: now - chrono::Duration::seconds(30 - i * 10),
                    requests: 100,
                    errors: i as u64,
                    p50_ms: Some(2.0),
                    p99_ms: None,
                    memory_bytes: 0,
                    cpu_percent: 0.0,
                    restarts: 0,
                    instances: vec![InstanceMetric {
                        index: 0,
                        memory_bytes: 64 << 20,
                        cpu_percent: 1.5,
                    }],
                })
                .collect(),
            marks: vec![MetricMark {
                time: now - chrono::Duration::seconds(15),
                kind: "deploy".into(),
                message: "pushed <b>".into(),
            }],
        };
        let html = render(&m, 3600, now);
        assert!(
            html.contains(r#"data-series="requests" data-points="3" data-max="10""#),
            "{html}"
        );
        assert!(html.contains(r#"data-series="errors" data-points="3" data-max="0.2""#));
        assert!(
            html.contains(r#"data-series="p99" data-points="0""#),
            "a missing value is a gap"
        );
        assert!(html.contains(r#"data-series="memory" data-points="3" data-max="64""#));
        assert!(html.contains("mark-deploy"));
        assert!(html.contains("pushed &lt;b&gt;") && !html.contains("<b>"));
        assert!(html.contains("role=\"img\""));
        assert!(!render(&AppMetrics::default(), 3600, now).contains("data-points=\"1\""));
    }

    #[test]
    fn a_day_is_drawn_with_two_points_per_column_at_most_and_keeps_its_spike() {
        let now = Utc::now();
        let m = AppMetrics {
            resolution_secs: 10,
            points: (0..8640i64)
                .map(|i| MetricPoint {
                    time: now - chrono::Duration::seconds(86_400 - i * 10),
                    requests: if i == 4321 { 5000 } else { 10 + (i % 7) as u64 },
                    errors: 0,
                    p50_ms: None,
                    p99_ms: None,
                    memory_bytes: 0,
                    cpu_percent: 0.0,
                    restarts: 0,
                    instances: Vec::new(),
                })
                .collect(),
            marks: Vec::new(),
        };
        let html = render(&m, 86_400, now);
        let n: usize = html
            .split(r#"data-series="requests" data-points=""#)
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(n <= 2 * W as usize + 2 && n > W as usize, "{n} points");
        assert!(
            html.contains(r#"data-max="500""#),
            "the spike (5000 in 10 s) stays"
        );
        assert!(html.len() < 200_000, "{} bytes", html.len());
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(0.3), 0.5);
    }

    #[test]
    fn node_charts_draw_lag_memory_instances_and_state_changes() {
        use paas_common::api::{NodeMetricPoint, NodeSeries};
        let now = Utc::now();
        let point = |i: i64, state: &str| NodeMetricPoint {
            time: now - chrono::Duration::seconds(300 - i * 60),
            state: state.into(),
            lag_secs: i as f64,
            reserved_mb: 256 * i as u64,
            capacity_mb: 4096,
            instances: i as u64,
        };
        let m = NodeMetrics {
            resolution_secs: 60,
            nodes: vec![NodeSeries {
                name: "n<1>".into(),
                points: vec![
                    point(0, "ready"),
                    point(1, "ready"),
                    point(2, "lost"),
                    point(3, "ready"),
                ],
            }],
        };
        let html = render_nodes(&m, 3600, now);
        assert!(html.contains(r#"data-node="n&lt;1&gt;""#), "{html}");
        assert!(
            html.contains(r#"data-series="lag" data-points="4" data-max="3""#),
            "{html}"
        );
        assert!(html.contains(r#"data-series="reserved" data-points="4" data-max="768""#));
        assert!(html.contains(r#"data-series="capacity" data-points="4" data-max="4096""#));
        assert!(html.contains(r#"data-series="instances" data-points="4""#));
        assert!(
            html.contains("became lost") && html.contains("mark-crash"),
            "{html}"
        );
        assert!(html.contains("mark-deploy"), "back to ready is marked too");
        assert!(render_nodes(&NodeMetrics::default(), 3600, now).contains("node-health-empty"));
        assert!(
            !html.contains("<circle"),
            "lines of several points need no dot"
        );
        let one = NodeMetrics {
            resolution_secs: 60,
            nodes: vec![NodeSeries {
                name: "n1".into(),
                points: vec![point(1, "ready")],
            }],
        };
        assert_eq!(
            render_nodes(&one, 3600, now).matches("<circle").count(),
            4,
            "a dot per series"
        );
    }
}
