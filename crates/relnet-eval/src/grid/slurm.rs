//! `--launcher slurm`: a SLURM job-array script in which array task i runs cell i of the grid
//! (`relnet reproduce --cell i`) into one results directory on a shared filesystem. Each cell
//! owns its directory (and takes its lock), so tasks never write the same file; the report reads
//! every cell's directory afterwards.

use std::path::Path;

use relnet_core::pretrain::fmt_secs;

use super::Cell;

/// What the script needs beyond the cells.
pub struct SlurmJob<'a> {
    /// The relnet binary the tasks run (an absolute path on the shared filesystem).
    pub relnet: &'a Path,
    /// The grid file the tasks read (the copy in the results directory, so indices stay fixed).
    pub grid: &'a Path,
    pub profile: &'a str,
    /// The `--only` filter, as given (empty for none).
    pub only: &'a str,
    pub results: &'a Path,
    pub data_root: Option<&'a Path>,
    pub device: &'a str,
    /// Extra `#SBATCH` options, one per line (`--partition=gpu`, `--account=x`...).
    pub extra: &'a [String],
    /// The longest cell's estimate in seconds (sets `--time`, doubled, at most 7 days, unless
    /// `extra` sets it; none: no limit line).
    pub longest_estimate_s: Option<f64>,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script's text.
pub fn script(job: &SlurmJob, cells: &[Cell]) -> String {
    let mut s = String::new();
    s.push_str("#!/bin/bash\n");
    s.push_str(&format!("#SBATCH --job-name=relnet-{}\n", job.profile));
    s.push_str(&format!("#SBATCH --array=0-{}\n", cells.len().saturating_sub(1)));
    s.push_str(&format!("#SBATCH --output={}/slurm/%A_%a.log\n", job.results.display()));
    s.push_str("#SBATCH --ntasks=1\n");
    if job.device.starts_with("cuda") || job.device.starts_with("wgpu") {
        s.push_str("#SBATCH --gres=gpu:1\n");
    }
    // Twice the longest estimate, at most 7 days, unless the caller sets the limit.
    let own_time = job.extra.iter().any(|e| e.starts_with("--time") || e.starts_with("-t"));
    if let (Some(t), false) = (job.longest_estimate_s, own_time) {
        let minutes = ((2.0 * t / 60.0).ceil() as u64).clamp(10, 7 * 24 * 60);
        s.push_str(&format!("#SBATCH --time={}:{:02}:00\n", minutes / 60, minutes % 60));
    }
    // SIGINT two minutes before the limit: the running cell checkpoints, and a requeued task
    // resumes it.
    s.push_str("#SBATCH --signal=INT@120\n");
    for e in job.extra {
        s.push_str(&format!("#SBATCH {e}\n"));
    }
    s.push_str(&format!(
        "#\n# relnet reproduce --profile {} ({} cells), one cell per array task, written by `relnet reproduce --launcher slurm`.\n\
         # Submit with `sbatch {}`; when all tasks have ended, `relnet report {}`.\n\
         # A task that is requeued or rerun resumes its cell; finished cells are skipped.\n#\n",
        job.profile,
        cells.len(),
        job.results.join("slurm").join("reproduce.sbatch").display(),
        job.results.display()
    ));
    for (i, c) in cells.iter().enumerate() {
        s.push_str(&format!("# task {i}: {}\n", c.dir_name()));
    }
    s.push_str("# Tasks name their cell by hash: an edited grid file cannot shift them onto other cells.\n");
    if let Some(t) = job.longest_estimate_s {
        s.push_str(&format!("# longest cell estimated at {} (time limit set to twice that)\n", fmt_secs(t)));
    }
    s.push_str("set -euo pipefail\n");
    s.push_str(&format!("CELLS=({})\n", cells.iter().map(|c| c.hash.as_str()).collect::<Vec<_>>().join(" ")));
    s.push_str("export RELNET_PLAIN_PROGRESS=1\n");
    let mut cmd = vec![
        quote(&job.relnet.display().to_string()),
        "reproduce".into(),
        "--grid".into(),
        quote(&job.grid.display().to_string()),
        "--profile".into(),
        quote(job.profile),
        "--results".into(),
        quote(&job.results.display().to_string()),
        "--device".into(),
        quote(job.device),
    ];
    if !job.only.is_empty() {
        cmd.push("--only".into());
        cmd.push(quote(job.only));
    }
    if let Some(d) = job.data_root {
        cmd.push("--data-root".into());
        cmd.push(quote(&d.display().to_string()));
    }
    cmd.push("--cell".into());
    cmd.push("\"${CELLS[$SLURM_ARRAY_TASK_ID]}\"".into());
    s.push_str(&format!("exec {}\n", cmd.join(" ")));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{Filter, Grid};

    #[test]
    fn the_script_runs_one_cell_per_array_task() {
        let g = Grid::load(None).unwrap();
        let cells = g.cells("cpu", &Filter::default()).unwrap();
        let job = SlurmJob {
            relnet: Path::new("/shared/bin/relnet"),
            grid: Path::new("/shared/res/grid.toml"),
            profile: "cpu",
            only: "",
            results: Path::new("/shared/res"),
            data_root: Some(Path::new("/shared/data")),
            device: "cuda",
            extra: &["--partition=gpu".to_string()],
            longest_estimate_s: Some(1800.0),
        };
        let s = script(&job, &cells);
        assert!(s.starts_with("#!/bin/bash\n"));
        assert!(s.contains("#SBATCH --array=0-6\n"), "{s}");
        assert!(
            s.contains("#SBATCH --gres=gpu:1\n")
                && s.contains("#SBATCH --partition=gpu\n")
                && s.contains("#SBATCH --time=1:00:00\n"),
            "{s}"
        );
        assert!(s.contains(&format!("# task 6: {}\n", cells[6].dir_name())));
        assert!(s.contains("exec '/shared/bin/relnet' reproduce --grid '/shared/res/grid.toml' --profile 'cpu' --results '/shared/res' --device 'cuda' --data-root '/shared/data' --cell \"${CELLS[$SLURM_ARRAY_TASK_ID]}\"\n"), "{s}");
        assert!(
            s.contains(&format!("CELLS=({} ", cells[0].hash)) && s.contains(&format!(" {})\n", cells[6].hash)),
            "{s}"
        );
        assert!(s.contains("#SBATCH --signal=INT@120\n"));
        let own = SlurmJob { extra: &["--time=2:00:00".to_string()], ..job };
        let s2 = script(&own, &cells);
        assert!(s2.contains("#SBATCH --time=2:00:00\n") && !s2.contains("#SBATCH --time=1:00:00"), "{s2}");
        // #SBATCH lines must all come before the first command.
        let first_cmd = s.find("set -euo").unwrap();
        assert!(!s[first_cmd..].contains("#SBATCH"));
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
