//! The comparison as a PNG: for each figure that direct also has, one bar per proxy at its median
//! ratio to direct (same round), a whisker over min..max, a line at ×1.0 (direct) and a mark at
//! brokerside's target.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::report::{Figure, Goal, Results};
use super::targets::Target;

/// Where TrueType fonts usually are; the first one found labels the chart.
const FONT_CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];
const FONT: &str = "sans-serif";

fn color(target: Target) -> RGBColor {
    match target {
        Target::Direct => RGBColor(120, 120, 120),
        Target::Haproxy => RGBColor(230, 126, 34),
        Target::HaproxySplice => RGBColor(243, 190, 120),
        Target::Nginx => RGBColor(39, 174, 96),
        Target::Brokerside => RGBColor(41, 98, 255),
    }
}

/// Registers a system font with plotters (it draws no text without one).
fn load_font() -> Result<(), String> {
    for path in FONT_CANDIDATES {
        if let Ok(bytes) = std::fs::read(path) {
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            return register_font(FONT, FontStyle::Normal, bytes)
                .map_err(|_| format!("{path} is not a font plotters can read"));
        }
    }
    Err(format!(
        "no TrueType font found (looked for {}; `apt-get install fonts-dejavu-core` \
         provides one)",
        FONT_CANDIDATES[0]
    ))
}

/// Draws the chart into `path`.
pub fn draw(results: &Results, targets: &[Target], title: &str, path: &Path) -> Result<(), String> {
    load_font()?;
    draw_chart(results, targets, title, path).map_err(|error| error.to_string())
}

fn draw_chart(
    results: &Results,
    targets: &[Target],
    title: &str,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let figures: Vec<Figure> = Figure::ALL.into_iter().filter(|f| f.relative()).collect();
    let proxies: Vec<Target> = targets
        .iter()
        .copied()
        .filter(|&t| t != Target::Direct)
        .collect();
    let stats = |figure, target| results.ratio_stats(figure, target);
    let top = figures
        .iter()
        .flat_map(|&f| proxies.iter().filter_map(move |&t| stats(f, t)))
        .map(|s| s.max)
        .fold(2.0_f64, f64::max)
        * 1.1;

    let root = BitMapBackend::new(path, (1200, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = figures.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n as f64, 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        // Key points every half unit; only the centres of the groups (i + 0.5) get a label.
        .x_labels(2 * n + 1)
        .x_label_formatter(&|x| {
            let i = x.floor();
            if (x - i - 0.5).abs() > 1e-6 {
                return String::new();
            }
            figures
                .get(i as usize)
                .map(|f| f.label().to_string())
                .unwrap_or_default()
        })
        .y_desc("ratio to direct, same round (median, min..max)")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;

    // Direct is ×1.0 by definition.
    chart
        .draw_series(std::iter::once(PathElement::new(
            [(0.0, 1.0), (n as f64, 1.0)],
            BLACK.stroke_width(1),
        )))?
        .label("direct = ×1.0")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLACK.stroke_width(1)));

    let width = 0.8 / proxies.len().max(1) as f64;
    for (k, &target) in proxies.iter().enumerate() {
        let c = color(target);
        let bars = figures.iter().enumerate().filter_map(|(i, &f)| {
            let s = stats(f, target)?;
            let x0 = i as f64 + 0.1 + k as f64 * width;
            Some((x0, s))
        });
        let bars: Vec<_> = bars.collect();
        chart
            .draw_series(bars.iter().map(|&(x0, s)| {
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, s.median)], c.filled())
            }))?
            .label(target.label())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        chart.draw_series(bars.iter().map(|&(x0, s)| {
            let mid = x0 + width * 0.45;
            PathElement::new([(mid, s.min), (mid, s.max)], BLACK.stroke_width(1))
        }))?;
    }

    // brokerside's target for each figure, across its group.
    chart
        .draw_series(figures.iter().enumerate().filter_map(|(i, f)| {
            let level = match f.goal() {
                Goal::RatioAtLeast(r) | Goal::RatioAtMost(r) => r,
                Goal::AtMost(_)
                | Goal::NoWorseThanHaproxy
                | Goal::TimesBestPeer(_)
                | Goal::None => return None,
            };
            let x = i as f64;
            Some(PathElement::new(
                [(x + 0.05, level), (x + 0.95, level)],
                RED.stroke_width(2),
            ))
        }))?
        .label("brokerside's target")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], RED.stroke_width(2)));

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
