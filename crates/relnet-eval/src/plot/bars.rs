//! Accuracy per method as bars (mean over seeds, the std as an error bar) with the paper's value
//! of each method marked across its bar, and accuracy against pretraining epochs as lines.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use relnet_core::Result;

use super::{FONT_FAMILY, class_colour, render_png};

/// One bar: a label, relnet's mean and std (over seeds), the paper's value when it has one.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub label: String,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub paper: Option<f64>,
    /// Drawn in the highlight colour.
    pub highlight: bool,
}

pub const BAR_SIZE: (u32, u32) = (1100, 560);

/// Bars of `bars` with the paper's values as black lines across them and a legend; `y` names
/// the metric.
pub fn bars_png(path: &Path, title: &str, y: &str, bars: &[Bar]) -> Result<()> {
    let top =
        bars.iter().flat_map(|b| [b.mean.map(|m| m + b.std.unwrap_or(0.0)), b.paper]).flatten().fold(10.0f64, f64::max);
    let top = ((top / 10.0).ceil() * 10.0 + 5.0).min(105.0);
    let n = bars.len().max(1);
    render_png(path, BAR_SIZE.0, BAR_SIZE.1, |area| {
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FONT_FAMILY, 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)?;
        let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(y)
            .x_labels(n)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(WHITE)
            .label_style((FONT_FAMILY, 15))
            .draw()?;
        let centred = TextStyle::from((FONT_FAMILY, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        for (i, b) in bars.iter().enumerate() {
            // One colour for every bar; the highlighted method's stands out.
            let c = if b.highlight { class_colour(1) } else { class_colour(0) };
            if let Some(m) = b.mean {
                let mut bar = Rectangle::new(
                    [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), m)],
                    c.mix(0.85).filled(),
                );
                // Narrower than the segment, so neighbours stay apart.
                bar.set_margin(0, 0, 10, 10);
                chart.draw_series(std::iter::once(bar))?;
                chart.draw_series(std::iter::once(Text::new(
                    format!("{m:.1}"),
                    (SegmentValue::CenterOf(i), m + top * 0.01),
                    centred.clone(),
                )))?;
                if let Some(s) = b.std.filter(|s| *s > 0.0) {
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(SegmentValue::CenterOf(i), m - s), (SegmentValue::CenterOf(i), m + s)],
                        BLACK.stroke_width(2),
                    )))?;
                }
            }
            if let Some(p) = b.paper {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(SegmentValue::Exact(i), p), (SegmentValue::Exact(i + 1), p)],
                    BLACK.stroke_width(3),
                )))?;
            }
        }
        chart
            .draw_series(std::iter::empty::<Circle<(SegmentValue<usize>, f64), i32>>())?
            .label("relnet (mean over seeds, std as a bar)")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], class_colour(0).filled()));
        chart
            .draw_series(std::iter::empty::<Circle<(SegmentValue<usize>, f64), i32>>())?
            .label("paper")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(3)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .label_font((FONT_FAMILY, 14))
            .draw()?;
        Ok(())
    })
}

/// One line of a line chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub label: String,
    /// (epochs, accuracy).
    pub points: Vec<(f64, f64)>,
}

/// One line per method of accuracy against `x` (pretraining epochs, label percentage...).
pub fn lines_png(path: &Path, title: &str, x: &str, y: &str, lines: &[Line]) -> Result<()> {
    let xs: Vec<f64> = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)).collect();
    let (x0, x1) = (xs.iter().copied().fold(f64::INFINITY, f64::min).min(0.0), xs.iter().copied().fold(1.0, f64::max));
    let ys: Vec<f64> = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)).collect();
    let (y0, y1) = (
        (ys.iter().copied().fold(100.0, f64::min) - 5.0).max(0.0),
        (ys.iter().copied().fold(0.0, f64::max) + 5.0).min(100.0),
    );
    render_png(path, BAR_SIZE.0, BAR_SIZE.1, |area| {
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FONT_FAMILY, 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1 * 1.05, y0..y1.max(y0 + 1.0))?;
        chart
            .configure_mesh()
            .x_desc(x)
            .y_desc(y)
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(WHITE)
            .label_style((FONT_FAMILY, 15))
            .draw()?;
        for (i, l) in lines.iter().enumerate() {
            let c = class_colour(i);
            chart
                .draw_series(LineSeries::new(l.points.clone(), c.stroke_width(2)))?
                .label(l.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(3)));
            chart.draw_series(l.points.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .label_font((FONT_FAMILY, 14))
            .draw()?;
        Ok(())
    })
}

/// One series of an error-bar chart: (x, mean, std) points.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorLine {
    pub label: String,
    pub points: Vec<(f64, f64, Option<f64>)>,
    /// Drawn dashed, without markers (a reference such as the paper's values).
    pub reference: bool,
}

/// Means joined by lines, each with a bar of ± one standard deviation; the x axis is logarithmic
/// (base 2) when `log2` is set and every x is positive.
pub fn error_bars_png(path: &Path, title: &str, x: &str, y: &str, lines: &[ErrorLine], log2: bool) -> Result<()> {
    let pts: Vec<(f64, f64, f64)> =
        lines.iter().flat_map(|l| l.points.iter().map(|&(x, m, s)| (x, m, s.unwrap_or(0.0)))).collect();
    let log2 = log2 && pts.iter().all(|p| p.0 > 0.0);
    let tx = |x: f64| if log2 { x.log2() } else { x };
    let xs: Vec<f64> = pts.iter().map(|p| tx(p.0)).collect();
    let (x0, x1) =
        (xs.iter().copied().fold(f64::INFINITY, f64::min), xs.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    let pad = ((x1 - x0) * 0.08).max(0.25);
    let lo = pts.iter().map(|p| p.1 - p.2).fold(f64::INFINITY, f64::min);
    let hi = pts.iter().map(|p| p.1 + p.2).fold(f64::NEG_INFINITY, f64::max);
    let ypad = ((hi - lo) * 0.15).max(0.5);
    let (y0, y1) = (lo - ypad, hi + ypad);
    let ticks: Vec<f64> = {
        let mut t: Vec<f64> = pts.iter().map(|p| p.0).collect();
        t.sort_by(f64::total_cmp);
        t.dedup();
        t
    };
    render_png(path, BAR_SIZE.0, BAR_SIZE.1, |area| {
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FONT_FAMILY, 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d((x0 - pad)..(x1 + pad), y0..y1)?;
        let ticks = ticks.clone();
        chart
            .configure_mesh()
            .x_desc(x)
            .y_desc(y)
            .x_labels(if log2 { 0 } else { 10 })
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(WHITE)
            .label_style((FONT_FAMILY, 15))
            .draw()?;
        if log2 {
            // The variants' own x values as tick labels on the log axis.
            chart.draw_series(ticks.iter().map(|&t| {
                Text::new(
                    format!("{t}"),
                    (tx(t), y0),
                    (FONT_FAMILY, 15).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top)),
                )
            }))?;
        }
        for (i, l) in lines.iter().enumerate() {
            let c = if l.reference { RGBColor(40, 40, 40) } else { class_colour(i) };
            let path: Vec<(f64, f64)> = l.points.iter().map(|&(x, m, _)| (tx(x), m)).collect();
            let style = c.stroke_width(2);
            if l.reference {
                // Dashed: short segments along the path.
                let mut dashes = Vec::new();
                for w in path.windows(2) {
                    let (a, b) = (w[0], w[1]);
                    for k in 0..12 {
                        if k % 2 == 0 {
                            let (s, e) = (k as f64 / 12.0, (k + 1) as f64 / 12.0);
                            dashes.push(vec![
                                (a.0 + (b.0 - a.0) * s, a.1 + (b.1 - a.1) * s),
                                (a.0 + (b.0 - a.0) * e, a.1 + (b.1 - a.1) * e),
                            ]);
                        }
                    }
                }
                chart
                    .draw_series(dashes.into_iter().map(|d| PathElement::new(d, style)))?
                    .label(l.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
                chart.draw_series(path.iter().map(|&p| Cross::new(p, 5, c.stroke_width(2))))?;
            } else {
                chart
                    .draw_series(LineSeries::new(path.clone(), style))?
                    .label(l.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(3)));
                chart.draw_series(path.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
            }
            let cap = pad * 0.12;
            for &(x, m, s) in &l.points {
                let Some(s) = s else { continue };
                let x = tx(x);
                chart.draw_series([
                    PathElement::new(vec![(x, m - s), (x, m + s)], c.stroke_width(2)),
                    PathElement::new(vec![(x - cap, m - s), (x + cap, m - s)], c.stroke_width(2)),
                    PathElement::new(vec![(x - cap, m + s), (x + cap, m + s)], c.stroke_width(2)),
                ])?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .label_font((FONT_FAMILY, 14))
            .draw()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::testutil::png_info;

    #[test]
    fn bar_and_line_charts_are_written_as_png() {
        let dir = tempfile::tempdir().unwrap();
        let bars = vec![
            Bar { label: "relational".into(), mean: Some(48.2), std: Some(0.4), paper: Some(61.03), highlight: true },
            Bar { label: "random".into(), mean: Some(30.1), std: None, paper: Some(32.92), highlight: false },
            Bar { label: "mine".into(), mean: None, std: None, paper: None, highlight: false },
        ];
        let p = dir.path().join("bars.png");
        bars_png(&p, "linear, conv4 cifar10", "test accuracy (%)", &bars).unwrap();
        let (w, h, colours) = png_info(&p);
        assert_eq!((w, h), BAR_SIZE);
        assert!(colours > 10, "bars, text and markers drawn: {colours} colours");
        let p = dir.path().join("lines.png");
        lines_png(
            &p,
            "accuracy vs epochs",
            "pretraining epochs",
            "test accuracy (%)",
            &[Line { label: "relational".into(), points: vec![(2.0, 40.0), (10.0, 50.0)] }],
        )
        .unwrap();
        assert_eq!(png_info(&p).0, BAR_SIZE.0);
        let p = dir.path().join("errors.png");
        let lines = [
            ErrorLine {
                label: "linear".into(),
                points: vec![(2.0, 40.0, Some(0.5)), (4.0, 42.0, Some(0.3)), (16.0, 44.0, None)],
                reference: false,
            },
            ErrorLine { label: "paper".into(), points: vec![(2.0, 0.0, None), (16.0, 4.9, None)], reference: true },
        ];
        error_bars_png(&p, "accuracy against K", "K", "test accuracy (%)", &lines, true).unwrap();
        let (w, h, colours) = png_info(&p);
        assert_eq!((w, h), BAR_SIZE);
        assert!(colours > 10, "{colours} colours");
    }
}
