//! Latency percentile plot (SVG): one line per latency series, x = percentile on a
//! "nines" scale (50%, 90%, 99%, ...), y = milliseconds.

use std::path::Path;

use plotters::prelude::*;

use crate::latency::LatencyHistogram;

#[derive(Debug, thiserror::Error)]
#[error("cannot draw the plot {path}: {reason}")]
pub struct PlotError {
    pub path: String,
    pub reason: String,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Largest x: 99.999%.
const MAX_NINES: f64 = 5.0;

/// x position of quantile `q`: 0 = 0%, 1 = 90%, 2 = 99%, ...
pub fn nines(q: f64) -> f64 {
    if q >= 1.0 {
        MAX_NINES
    } else {
        (-(1.0 - q).log10()).clamp(0.0, MAX_NINES)
    }
}

/// Axis label of x position `x`.
pub fn percentile_label(x: f64) -> String {
    let pct = 100.0 * (1.0 - 10f64.powf(-x));
    let text = format!("{pct:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// Writes the plot; series without samples are skipped.
pub fn write_percentile_plot(
    path: &Path,
    title: &str,
    series: &[(String, LatencyHistogram)],
) -> Result<(), PlotError> {
    let fail = |reason: String| PlotError {
        path: path.display().to_string(),
        reason,
    };
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| {
            let points = h
                .quantile_curve()
                .into_iter()
                .map(|(q, us)| (nines(q), us as f64 / 1000.0))
                .collect();
            (name.as_str(), points)
        })
        .collect();
    if curves.is_empty() {
        return Err(fail("no latency samples to plot".into()));
    }
    let y_max = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.0f64, f64::max)
        .max(0.001)
        * 1.1;

    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..MAX_NINES, 0f64..y_max)
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(6)
        .x_label_formatter(&|x| percentile_label(*x))
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    for (i, (name, points)) in curves.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| fail(e.to_string()))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_scale_and_labels() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(nines(1.0), MAX_NINES);
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(3.0), "99.9%");
    }

    #[test]
    fn writes_svg_with_one_line_per_series() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        for v in 1..2000u64 {
            a.record_micros(v * 10);
            b.record_micros(v * 30);
        }
        let path = std::env::temp_dir().join(format!("sumu-lt-plot-{}.svg", std::process::id()));
        write_percentile_plot(
            &path,
            "test",
            &[
                ("delivery".into(), a),
                ("connect".into(), b),
                ("empty".into(), LatencyHistogram::new()),
            ],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("delivery") && svg.contains("connect"));
        assert!(!svg.contains(">empty<"));
        assert!(svg.matches("<polyline").count() >= 2, "{svg}");
    }

    #[test]
    fn nothing_to_plot_is_an_error() {
        let path = std::env::temp_dir().join("sumu-lt-never.svg");
        assert!(
            write_percentile_plot(&path, "t", &[("x".into(), LatencyHistogram::new())]).is_err()
        );
    }
}
