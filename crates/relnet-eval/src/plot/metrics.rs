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
    let mut curves = RunCurves { name, metric: String::new(), epochs: Vec::new(), monitor: Vec::new(), monitor_name: None };
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
            keys.sort_by_key(|k| k.trim_start_matches(|c: char| !c.is_ascii_digit()).parse::<usize>().unwrap_or(usize::MAX));
            if let Some(k) = keys.first() {
                if let Some(val) = m[*k].as_f64() {
                    curves.monitor_name.get_or_insert_with(|| k.to_string());
                    curves.monitor.push((epoch, val));
                }
            }
        }
    }
    if curves.epochs.is_empty() {
        return Err(Error::artifact(&path, "no finished epoch recorded yet"));
    }
    Ok(curves)
}

/// Draws the curves of `runs` into `path` (1400 x 560).
pub fn curves_png(path: &Path, runs: &[RunCurves]) -> Result<()> {
    let max_epoch = runs.iter().flat_map(|r| r.epochs.iter().map(|e| e.0)).fold(1.0, f64::max);
    let finite = |v: f64| v.is_finite();
    let losses: Vec<f64> = runs.iter().flat_map(|r| r.epochs.iter().map(|e| e.1)).filter(|v| finite(*v)).collect();
    let (lmin, lmax) = (losses.iter().copied().fold(f64::INFINITY, f64::min), losses.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    let lpad = ((lmax - lmin) * 0.08).max(1e-3);
    let accs: Vec<f64> = runs.iter().flat_map(|r| r.epochs.iter().map(|e| e.2).chain(r.monitor.iter().map(|m| m.1))).filter(|v| finite(*v)).collect();
    let (amin, amax) = (accs.iter().copied().fold(100.0, f64::min), accs.iter().copied().fold(0.0, f64::max));
    let (a0, a1) = ((amin - 5.0).max(0.0), (amax + 5.0).min(100.0).max(amin + 1.0));
    let metrics: Vec<&str> = {
        let mut m: Vec<&str> = runs.iter().map(|r| r.metric.as_str()).collect();
        m.dedup();
        m
    };
    render_png(path, 1400, 560, |area| {
        let (left, right) = area.split_horizontally(700);
        let mut chart = ChartBuilder::on(&left)
            .caption("loss", (FONT_FAMILY, 20))
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.5..max_epoch + 0.5, (lmin - lpad)..(lmax + lpad))?;
        chart.configure_mesh().x_desc("epoch").label_style((FONT_FAMILY, 14)).draw()?;
        for (i, r) in runs.iter().enumerate() {
            let c = class_colour(i);
            let pts: Vec<(f64, f64)> = r.epochs.iter().map(|e| (e.0, e.1)).filter(|p| finite(p.1)).collect();
            chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?.label(r.name.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
        }
        chart.configure_series_labels().label_font((FONT_FAMILY, 14)).background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;

        let caption = format!("{} (solid), kNN monitor top-1 (dashed), %", metrics.join(" / "));
        let mut chart = ChartBuilder::on(&right)
            .caption(caption, (FONT_FAMILY, 18))
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0.5..max_epoch + 0.5, a0..a1)?;
        chart.configure_mesh().x_desc("epoch").label_style((FONT_FAMILY, 14)).draw()?;
        for (i, r) in runs.iter().enumerate() {
            let c = class_colour(i);
            let pts: Vec<(f64, f64)> = r.epochs.iter().map(|e| (e.0, e.2)).filter(|p| finite(p.1)).collect();
            chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?.label(format!("{}: {}", r.name, r.metric)).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
            if !r.monitor.is_empty() {
                chart.draw_series(DashedLineSeries::new(r.monitor.clone(), 6, 4, c.stroke_width(2)))?
                    .label(format!("{}: {}", r.name, r.monitor_name.as_deref().unwrap_or("kNN")))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 6, y), (x + 10, y), (x + 18, y)], c.stroke_width(1)));
                chart.draw_series(r.monitor.iter().map(|&p| TriangleMarker::new(p, 5, c.filled())))?;
            }
        }
        chart.configure_series_labels().position(SeriesLabelPosition::LowerRight).label_font((FONT_FAMILY, 14)).background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
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
        std::fs::write(b.join("metrics.jsonl"), "{\"epoch\":1,\"loss\":5.1,\"accuracy\":0.2,\"metric\":\"contrastive accuracy\"}\n").unwrap();
        let out = dir.path().join("m.png");
        let runs = plot_runs(&[a.clone(), b], &out).unwrap();
        assert_eq!(runs[0].name, "rel");
        assert_eq!(runs[0].epochs, vec![(1.0, 0.56, 70.0), (2.0, 0.48, 77.0)]);
        assert_eq!(runs[0].monitor, vec![(2.0, 46.0)], "the smallest k is drawn");
        assert_eq!(runs[0].monitor_name.as_deref(), Some("knn_top1_k20"));
        let (w, h, colours) = crate::plot::testutil::png_info(&out);
        assert_eq!((w, h), (1400, 560));
        assert!(colours > 10);

        std::fs::write(a.join("metrics.jsonl"), "{\"epoch\":1,\"loss\":0.5}\nnot json\n").unwrap();
        let e = read_run(&a).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl") && e.contains("line 2"), "{e}");
        assert!(read_run(dir.path()).unwrap_err().to_string().contains("metrics.jsonl"));
    }
}
