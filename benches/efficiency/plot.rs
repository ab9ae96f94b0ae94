//! The SVG figure of a workload: requests per task against p95 detection delay, per policy.

use plotters::prelude::*;

use crate::anchors::Policy;
use crate::common;
use crate::report::Figures;
use crate::workloads::Workload;

/// Requests per task against p95 detection delay, both on log scales: the anchors as
/// labelled points, ours' sweep as a labelled line.
pub(super) fn plot(workload: &Workload, ours: &[(Policy, Figures)], anchors: &[(Policy, Figures)]) {
    let path = common::bench_dir().join(format!("efficiency_{}.svg", workload.name));
    let points = ours
        .iter()
        .chain(anchors)
        .map(|(_, f)| (f.all.requests, f.all.p95));
    let (mut x_hi, mut y_hi) = (1.0f64, 1.0f64);
    let (mut x_lo, mut y_lo) = (f64::MAX, f64::MAX);
    for (x, y) in points {
        (x_lo, x_hi, y_lo, y_hi) = (x_lo.min(x), x_hi.max(x), y_lo.min(y), y_hi.max(y));
    }
    let root = SVGBackend::new(&path, (900, 620)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "workload {}: requests per task against p95 detection delay",
                workload.name
            ),
            ("sans-serif", 20),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (x_lo * 0.7..x_hi * 1.5).log_scale(),
            (y_lo * 0.7..y_hi * 1.5).log_scale(),
        )
        .unwrap();
    chart
        .configure_mesh()
        .max_light_lines(0)
        .x_labels(12)
        .y_labels(12)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("requests per task (log)")
        .y_desc("p95 detection delay, s (log)")
        .draw()
        .unwrap();
    let blue = RGBColor(31, 119, 180);
    let red = RGBColor(214, 39, 40);
    chart
        .draw_series(LineSeries::new(
            ours.iter().map(|(_, f)| (f.all.requests, f.all.p95)),
            blue.stroke_width(2),
        ))
        .unwrap()
        .label("ours, max_delay 5 to 120 s")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2)));
    chart
        .draw_series(ours.iter().map(|(p, f)| {
            let label = format!("{}s", p.ours_max_delay().unwrap_or(30));
            EmptyElement::at((f.all.requests, f.all.p95))
                + Circle::new((0, 0), 4, blue.filled())
                + Text::new(label, (6, -14), ("sans-serif", 13).into_font().color(&blue))
        }))
        .unwrap();
    chart
        .draw_series(anchors.iter().enumerate().map(|(i, (p, f))| {
            // Staggered, so that anchors close together keep readable labels.
            let dy = [-16, 2, 16][i % 3];
            EmptyElement::at((f.all.requests, f.all.p95))
                + TriangleMarker::new((0, 0), 5, red.filled())
                + Text::new(
                    p.name(),
                    (7, dy),
                    ("sans-serif", 12).into_font().color(&red),
                )
        }))
        .unwrap()
        .label("anchors")
        .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 5, red.filled()));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .unwrap();
    root.present().unwrap();
    println!("wrote {}", path.display());
}
