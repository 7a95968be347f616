//! Run checkpoints: model, optimiser state and progress, written so that a crash, a kill or a full
//! disk at any moment leaves the previous checkpoint intact: each save writes a new generation of
//! files beside the previous one, `progress.json` (written last, atomically) commits it, and the
//! previous generation is removed after.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::{BurnpackStore, ModuleSnapshot};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// Where training stands: the next step to run is `batch` of `epoch` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub epoch: usize,
    pub batch: usize,
    pub finished: bool,
}

pub struct Checkpoint {
    dir: PathBuf,
}

/// A test hook, compiled in only with the `fault-injection` feature (the test build):
/// `RELNET_FAULT_ABORT=GENERATION:STAGE` aborts the process (as a SIGKILL would: no destructor,
/// no cleanup) while writing that checkpoint generation, at `model` (the model's temporary file
/// written, not renamed), `optimizer` (the model in place, the optimiser not written),
/// `progress` (both written, the generation not committed) or `committed` (the generation
/// committed: for the last one, before the run saves its backbone).
#[cfg(not(feature = "fault-injection"))]
fn fault(_generation: u64, _stage: &str) {}

#[cfg(feature = "fault-injection")]
fn fault(generation: u64, stage: &str) {
    if let Ok(v) = std::env::var("RELNET_FAULT_ABORT")
        && v.split_once(':').is_some_and(|(g, s)| g.trim().parse() == Ok(generation) && s.trim() == stage)
    {
        std::process::abort();
    }
}

fn err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::artifact(path, what.to_string())
}

/// `progress.json` as stored: the progress and the generation of the model and optimiser files
/// it commits (0: the single `model.bpk` / `optimizer.bpk` of checkpoints written before
/// generations existed).
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    progress: Progress,
    #[serde(default)]
    generation: u64,
    /// The [`crate::streams::VERSION`] the run drew its data order and views with (1: before
    /// streams were hashed, when the field did not exist).
    #[serde(default = "streams_v1")]
    streams: u32,
}

fn streams_v1() -> u32 {
    1
}

impl Checkpoint {
    pub fn new(run_dir: &Path) -> Self {
        Checkpoint { dir: run_dir.join("checkpoint") }
    }

    fn progress_path(&self) -> PathBuf {
        self.dir.join("progress.json")
    }

    fn files(&self, generation: u64) -> (PathBuf, PathBuf) {
        if generation == 0 {
            (self.dir.join("model.bpk"), self.dir.join("optimizer.bpk"))
        } else {
            (self.dir.join(format!("model.{generation}.bpk")), self.dir.join(format!("optimizer.{generation}.bpk")))
        }
    }

    fn stored(&self) -> Result<Option<Stored>> {
        let p = self.progress_path();
        if !p.exists() {
            return Ok(None);
        }
        let text = std::fs::read(&p).map_err(|e| err(&p, e))?;
        serde_json::from_slice(&text).map(Some).map_err(|e| err(&p, format!("corrupt checkpoint progress: {e}")))
    }

    /// Saves model, optimiser and progress. Each save writes a new generation of model and
    /// optimiser files beside the previous one, then `progress.json` (the commit point, written
    /// atomically) naming it, and only then removes the previous generation: a crash, a kill or
    /// a full disk at any moment leaves the last committed checkpoint whole.
    pub fn save<M: Module>(&self, model: &M, optim: &ModuleOptimizer, progress: Progress) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let previous = self.stored().ok().flatten().map(|s| s.generation);
        let generation = previous.map_or(1, |g| g + 1);
        let (model_path, optim_path) = self.files(generation);
        let result = (|| {
            let tmp = self.dir.join(format!(".model.{generation}.bpk.tmp"));
            let mut store = BurnpackStore::from_file(&tmp).auto_extension(false).overwrite(true);
            // `valid()` first: it folds BatchNorm's pending running-statistics update into the
            // stored value. Saving the module itself writes the statistics one update behind,
            // and a resumed run then drifts from an uninterrupted one (burn's RunningState keeps
            // the last update per thread until the next read).
            let saved = model.valid().save_into(&mut store).map_err(|e| err(&model_path, e));
            if saved.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            saved?;
            fault(generation, "model");
            std::fs::rename(&tmp, &model_path).map_err(|e| err(&model_path, e))?;
            fault(generation, "optimizer");
            let bytes = optim.into_bytes().map_err(|e| err(&optim_path, e))?;
            write_atomic(&optim_path, &bytes[..]).map_err(|e| Error::io(&optim_path, e))?;
            fault(generation, "progress");
            let json = serde_json::to_vec_pretty(&Stored { progress, generation, streams: crate::streams::VERSION })
                .map_err(|e| err(&self.progress_path(), e))?;
            write_atomic(&self.progress_path(), &json).map_err(|e| Error::io(self.progress_path(), e))
        })();
        if result.is_err() {
            // This generation was not committed: its files go, the previous one stays.
            let _ = std::fs::remove_file(&model_path);
            let _ = std::fs::remove_file(&optim_path);
            return result;
        }
        if let Some(g) = previous {
            let (m, o) = self.files(g);
            let _ = std::fs::remove_file(m);
            let _ = std::fs::remove_file(o);
        }
        fault(generation, "committed");
        Ok(())
    }

    /// The saved progress, if a checkpoint exists. An unfinished run whose random streams were
    /// derived by another version of relnet is refused: resuming it would mix two draws.
    pub fn progress(&self) -> Result<Option<Progress>> {
        let Some(s) = self.stored()? else { return Ok(None) };
        if !s.progress.finished && s.streams != crate::streams::VERSION {
            return Err(err(
                &self.progress_path(),
                format!(
                    "this unfinished run drew its data order and augmentations with random streams of version {} and this relnet derives them with version {}: resuming would mix the two. Start it again in a new directory",
                    s.streams,
                    crate::streams::VERSION
                ),
            ));
        }
        Ok(Some(s.progress))
    }

    /// Loads model and optimiser state into the given fresh ones.
    pub fn load<M: Module>(&self, mut model: M, optim: ModuleOptimizer) -> Result<(M, ModuleOptimizer)> {
        let generation = self.stored()?.map_or(0, |s| s.generation);
        let (model_path, optim_path) = self.files(generation);
        let mut store = BurnpackStore::from_file(&model_path).auto_extension(false);
        model.load_from(&mut store).map_err(|e| err(&model_path, format!("cannot load checkpoint: {e}")))?;
        let bytes = std::fs::read(&optim_path).map_err(|e| err(&optim_path, e))?;
        let optim = optim
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .map_err(|e| err(&optim_path, format!("cannot load optimiser state: {e}")))?;
        Ok((model, optim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_run_from_other_streams_is_refused_and_a_finished_one_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let ckpt = Checkpoint::new(tmp.path());
        std::fs::create_dir_all(tmp.path().join("checkpoint")).unwrap();
        let write = |text: &str| std::fs::write(tmp.path().join("checkpoint/progress.json"), text).unwrap();
        // Written before the field existed: streams version 1.
        write(r#"{"epoch": 3, "batch": 0, "finished": false, "generation": 4}"#);
        let e = ckpt.progress().unwrap_err().to_string();
        assert!(e.contains("progress.json") && e.contains("version 1") && e.contains("new directory"), "{e}");
        write(r#"{"epoch": 3, "batch": 0, "finished": true, "generation": 4}"#);
        assert!(ckpt.progress().unwrap().unwrap().finished);
        write(&format!(
            r#"{{"epoch": 3, "batch": 5, "finished": false, "generation": 4, "streams": {}}}"#,
            crate::streams::VERSION
        ));
        assert_eq!(ckpt.progress().unwrap().unwrap().batch, 5);
    }
}
