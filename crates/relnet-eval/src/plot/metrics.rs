//! Training curves of one or more runs on one figure: the loss per epoch on the left, the
//! method's own accuracy per epoch (relation accuracy, rotation accuracy, train accuracy...) on
//! the right, and the kNN monitor's top-1 (`--monitor knn:EVERY`) as dashed lines with markers
//! where the run has one. Read from each run's `metrics.jsonl`.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use relnet_core::{Error, Result};

use super::{FONT_FAMILY, class_colour, render_png};

/// One run's curves.
#[derive(Clone, Debug, PartialEq)]
pub struct RunCurves {
    pub name: String,
    /// What `accuracy` measures (the method's metric name).
    pub metric: String,
    /// (epoch, loss, accuracy in percent).
    pub epochs: Vec<(f64, f64, f64)>,
    /// (epoch, kNN top-1 in percent) of the monitor's first k.
    pub monitor: Vec<(f64, f64)>,
    pub monitor_name: Option<String>,
}

/// Reads `<run_dir>/metrics.jsonl`; errors name the file and line.
pub fn read_run(run_dir: &Path) -> Result<RunCurves> {
    let path = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let name = run_dir.file_name().map_or_else(|| run_dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut curves =
        RunCurves { name, metric: String::new(), epochs: Vec::new(), monitor: Vec::new(), monitor_name: None };
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |what: &str| Error::artifact(&path, format!("line {}: {what}", i + 1));
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&format!("not JSON ({e})")))?;
        let Some(epoch) = v["epoch"].as_f64() else { continue };
        let loss = v["loss"].as_f64().ok_or_else(|| bad("no `loss`"))?;
        let acc = v["accuracy"].as_f64().unwrap_or(f64::NAN) * 100.0;
        if curves.metric.is_empty() {
            curves.metric = v["metric"].as_str().unwrap_or("accuracy").to_string();
        }
        curves.epochs.push((epoch, loss, acc));
        if let Some(m) = v["monitor"].as_object() {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by_key(|k| {
                k.trim_start_matches(|c: char| !c.is_ascii_digit()).parse::<usize>().unwrap_or(usize::MAX)
            });
            if let Some(k) = keys.first()
                && let Some(val) = m[*k].as_f64()
            {
                curves.monitor_name.get_or_insert_with(|| k.to_string());
                curves.monitor.push((epoch, val));
            }
        }
    }
    if curves.epochs.is_empty() {
        return Err(Error::artifact(&path, "no finished epoch recorded yet"));
    }
    Ok(curves)
}

/// The figure's size.
pub const SIZE: (u32, u32) = (1600, 560);

/// Draws the curves of `runs` into `path` ([`SIZE`]): loss, accuracy, and one legend for both.
pub fn curves_png(path: &Path, runs: &[RunCurves]) -> Result<()> {
    let max_epoch = runs.iter().flat_map(|r| r.epochs.iter().map(|e| e.0)).fold(1.0, f64::max);
    let finite = |v: f64| v.is_finite();
    let losses: Vec<f64> = runs.iter().flat_map(|r| r.epochs.iter().map(|e| e.1)).filter(|v| finite(*v)).collect();
    let (lmin, lmax) = (
        losses.iter().copied().fold(f64::INFINITY, f64::min),
        losses.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let lpad = ((lmax - lmin) * 0.08).max(1e-3);
    let accs: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.epochs.iter().map(|e| e.2).chain(r.monitor.iter().map(|m| m.1)))
        .filter(|v| finite(*v))
        .collect();
    let (amin, amax) = (accs.iter().copied().fold(100.0, f64::min), accs.iter().copied().fold(0.0, f64::max));
    let (a0, a1) = ((amin - 5.0).max(0.0), (amax + 5.0).min(100.0).max(amin + 1.0));
    let ticks = (max_epoch as usize).clamp(2, 12);
    let epoch_label = |x: &f64| format!("{x:.0}");
    let grid = RGBColor(225, 225, 225);
    render_png(path, SIZE.0, SIZE.1, |area| {
        let (charts, legend) = area.split_horizontally(SIZE.0 - 330);
        let (left, right) = charts.split_horizontally((SIZE.0 - 330) / 2);
        let mut chart = ChartBuilder::on(&left)
            .caption("loss", (FONT_FAMILY, 20))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.5..max_epoch + 0.5, (lmin - lpad)..(lmax + lpad))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_labels(ticks)
            .x_label_formatter(&epoch_label)
            .bold_line_style(grid)
            .light_line_style(WHITE)
            .label_style((FONT_FAMILY, 14))
            .draw()?;
        for (i, r) in runs.iter().enumerate() {
            let c = class_colour(i);
            let pts: Vec<(f64, f64)> = r.epochs.iter().map(|e| (e.0, e.1)).filter(|p| finite(p.1)).collect();
            chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?;
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
        }
        let mut chart = ChartBuilder::on(&right)
            .caption("accuracy (%): the method's own, kNN monitor dashed", (FONT_FAMILY, 18))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(48)
            .build_cartesian_2d(0.5..max_epoch + 0.5, a0..a1)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_labels(ticks)
            .x_label_formatter(&epoch_label)
            .bold_line_style(grid)
            .light_line_style(WHITE)
            .label_style((FONT_FAMILY, 14))
            .draw()?;
        for (i, r) in runs.iter().enumerate() {
            let c = class_colour(i);
            let pts: Vec<(f64, f64)> = r.epochs.iter().map(|e| (e.0, e.2)).filter(|p| finite(p.1)).collect();
            chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?;
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
            if !r.monitor.is_empty() {
                chart.draw_series(DashedLineSeries::new(r.monitor.clone(), 6, 4, c.stroke_width(2)))?;
                chart.draw_series(r.monitor.iter().map(|&p| TriangleMarker::new(p, 5, c.filled())))?;
            }
        }
        // One legend for both panels: a run per colour with what its accuracy measures.
        let mut y = 40;
        for (i, r) in runs.iter().enumerate() {
            let c = class_colour(i);
            legend.draw(&PathElement::new(vec![(8, y + 8), (34, y + 8)], c.stroke_width(3)))?;
            legend.draw(&Text::new(r.name.clone(), (42, y), (FONT_FAMILY, 15)))?;
            legend.draw(&Text::new(
                r.metric.clone(),
                (42, y + 18),
                (FONT_FAMILY, 13).into_font().color(&RGBColor(90, 90, 90)),
            ))?;
            y += 40;
            if let Some(m) = &r.monitor_name {
                legend.draw(&PathElement::new(vec![(8, y + 8), (14, y + 8)], c.stroke_width(2)))?;
                legend.draw(&PathElement::new(vec![(18, y + 8), (24, y + 8)], c.stroke_width(2)))?;
                legend.draw(&PathElement::new(vec![(28, y + 8), (34, y + 8)], c.stroke_width(2)))?;
                legend.draw(&Text::new(format!("{} (kNN monitor)", m), (42, y), (FONT_FAMILY, 13)))?;
                y += 26;
            }
        }
        Ok(())
    })
}

/// Reads every run of `dirs` and draws them into `out`.
pub fn plot_runs(dirs: &[PathBuf], out: &Path) -> Result<Vec<RunCurves>> {
    let runs = dirs.iter().map(|d| read_run(d)).collect::<Result<Vec<_>>>()?;
    curves_png(out, &runs)?;
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_runs_and_draws_them_on_one_figure() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("rel");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(
            a.join("metrics.jsonl"),
            "{\"epoch\":1,\"loss\":0.56,\"accuracy\":0.70,\"metric\":\"relation accuracy\"}\n\
             {\"epoch\":2,\"loss\":0.48,\"accuracy\":0.77,\"metric\":\"relation accuracy\",\"monitor\":{\"knn_top1_k200\":45.0,\"knn_top1_k20\":46.0}}\n",
        )
        .unwrap();
        let b = dir.path().join("simclr");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(
            b.join("metrics.jsonl"),
            "{\"epoch\":1,\"loss\":5.1,\"accuracy\":0.2,\"metric\":\"contrastive accuracy\"}\n",
        )
        .unwrap();
        let out = dir.path().join("m.png");
        let runs = plot_runs(&[a.clone(), b], &out).unwrap();
        assert_eq!(runs[0].name, "rel");
        assert_eq!(runs[0].epochs, vec![(1.0, 0.56, 70.0), (2.0, 0.48, 77.0)]);
        assert_eq!(runs[0].monitor, vec![(2.0, 46.0)], "the smallest k is drawn");
        assert_eq!(runs[0].monitor_name.as_deref(), Some("knn_top1_k20"));
        let (w, h, colours) = crate::plot::testutil::png_info(&out);
        assert_eq!((w, h), SIZE);
        assert!(colours > 10);

        std::fs::write(a.join("metrics.jsonl"), "{\"epoch\":1,\"loss\":0.5}\nnot json\n").unwrap();
        let e = read_run(&a).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl") && e.contains("line 2"), "{e}");
        assert!(read_run(dir.path()).unwrap_err().to_string().contains("metrics.jsonl"));
    }
}
