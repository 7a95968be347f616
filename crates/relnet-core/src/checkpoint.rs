//! Run checkpoints: model, optimiser state and progress, written so that a crash at any moment
//! leaves the previous checkpoint intact (files written to temporaries and renamed; the progress
//! file, written last, is the commit point).

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

fn err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::artifact(path, what.to_string())
}

impl Checkpoint {
    pub fn new(run_dir: &Path) -> Self {
        Checkpoint { dir: run_dir.join("checkpoint") }
    }

    fn progress_path(&self) -> PathBuf {
        self.dir.join("progress.json")
    }

    /// Saves model, optimiser and progress (in that order; progress last).
    pub fn save<M: Module>(&self, model: &M, optim: &ModuleOptimizer, progress: Progress) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let model_path = self.dir.join("model.bpk");
        let tmp = self.dir.join(".model.bpk.tmp");
        let mut store = BurnpackStore::from_file(&tmp).auto_extension(false).overwrite(true);
        // `valid()` first: it folds BatchNorm's pending running-statistics update into the
        // stored value. Saving the module itself writes the statistics one update behind, and a
        // resumed run then drifts from an uninterrupted one (burn's RunningState keeps the last
        // update per thread until the next read).
        model.valid().save_into(&mut store).map_err(|e| err(&model_path, e))?;
        std::fs::rename(&tmp, &model_path).map_err(|e| err(&model_path, e))?;
        let optim_path = self.dir.join("optimizer.bpk");
        let bytes = optim.into_bytes().map_err(|e| err(&optim_path, e))?;
        write_atomic(&optim_path, &bytes[..]).map_err(|e| Error::io(&optim_path, e))?;
        let json = serde_json::to_vec_pretty(&progress).map_err(|e| err(&self.progress_path(), e))?;
        write_atomic(&self.progress_path(), &json).map_err(|e| Error::io(self.progress_path(), e))
    }

    /// The saved progress, if a checkpoint exists.
    pub fn progress(&self) -> Result<Option<Progress>> {
        let p = self.progress_path();
        if !p.exists() {
            return Ok(None);
        }
        let text = std::fs::read(&p).map_err(|e| err(&p, e))?;
        serde_json::from_slice(&text).map(Some).map_err(|e| err(&p, format!("corrupt checkpoint progress: {e}")))
    }

    /// Loads model and optimiser state into the given fresh ones.
    pub fn load<M: Module>(&self, mut model: M, optim: ModuleOptimizer) -> Result<(M, ModuleOptimizer)> {
        let model_path = self.dir.join("model.bpk");
        let mut store = BurnpackStore::from_file(&model_path).auto_extension(false);
        model.load_from(&mut store).map_err(|e| err(&model_path, format!("cannot load checkpoint: {e}")))?;
        let optim_path = self.dir.join("optimizer.bpk");
        let bytes = std::fs::read(&optim_path).map_err(|e| err(&optim_path, e))?;
        let optim = optim.from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes)).map_err(|e| err(&optim_path, format!("cannot load optimiser state: {e}")))?;
        Ok((model, optim))
    }
}
