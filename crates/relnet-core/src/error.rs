//! Errors of the data layer. Every error names the file (or folder) and the problem.

use std::fmt;
use std::path::{Path, PathBuf};

/// An error while locating, reading or decoding a dataset.
#[derive(Debug)]
pub enum DataError {
    /// A file or folder exists but its content is wrong (truncated, bad magic, bad label...).
    File { path: PathBuf, problem: String },
    /// A dataset could not be found: where it was looked for and how to obtain it.
    Missing { dataset: String, looked_for: Vec<PathBuf>, help: String },
    /// A request that makes no sense (unknown dataset name, split the dataset lacks...).
    Invalid(String),
}

impl DataError {
    pub fn file(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        DataError::File { path: path.as_ref().to_path_buf(), problem: problem.into() }
    }

    /// Wraps an I/O error on `path` with what was being done.
    pub fn io(path: impl AsRef<Path>, what: &str, err: std::io::Error) -> Self {
        let problem = match err.kind() {
            std::io::ErrorKind::NotFound => format!("{what}: no such file or folder"),
            std::io::ErrorKind::UnexpectedEof => format!("{what}: file is truncated"),
            _ => format!("{what}: {err}"),
        };
        DataError::file(path, problem)
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::File { path, problem } => write!(f, "{}: {problem}", path.display()),
            DataError::Missing { dataset, looked_for, help } => {
                writeln!(f, "dataset `{dataset}` not found. Looked for:")?;
                for p in looked_for {
                    writeln!(f, "  {}", p.display())?;
                }
                write!(f, "{help}")
            }
            DataError::Invalid(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for DataError {}

pub type DataResult<T> = Result<T, DataError>;

/// Every failure of the library crates, typed so that a program can tell a missing dataset from a
/// bad configuration or a diverged run. Each names the file, folder or key concerned; none names a
/// command-line flag (the binary turns them into messages and exit codes).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A dataset is missing (`DataError::Missing`) or one of its files is bad.
    #[error(transparent)]
    Data(#[from] DataError),
    /// An invalid configuration value or key.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A backbone artifact or checkpoint that cannot be read, or does not fit the request.
    #[error("{}: {problem}", path.display())]
    Artifact { path: PathBuf, problem: String },
    /// An I/O failure on a file or folder.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The loss or its gradients became NaN or infinite.
    /// `what` is `"loss"` or `"gradient"` (the sum of every gradient element, which is finite
    /// exactly when they all are, short of an overflow).
    #[error("{what} became {value} at epoch {epoch} step {step}: training stopped; the last good checkpoint in {} is kept", checkpoint.display())]
    NonFinite { what: &'static str, epoch: usize, step: usize, value: f32, checkpoint: PathBuf },
    /// A run directory that already holds a run, started again without resuming.
    #[error("{} already holds a run", dir.display())]
    RunExists { dir: PathBuf },
    /// A run directory another live process is using (its lock file names it).
    #[error("{} is {holder}", dir.display())]
    Locked { dir: PathBuf, holder: String },
    /// A resumed run whose configuration differs from the one it was started with.
    #[error("{}: the run was started with a different configuration (differs: {})", config.display(), keys.join(", "))]
    ConfigChanged { config: PathBuf, keys: Vec<String> },
    /// A compute device that this build or machine does not offer.
    #[error("{0}")]
    Device(String),
    /// A request that cannot be served (a split without labels, too few images...).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }

    pub fn artifact(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::Artifact { path: path.as_ref().to_path_buf(), problem: problem.into() }
    }
}

impl From<relnet_models::io::ModelIoError> for Error {
    fn from(e: relnet_models::io::ModelIoError) -> Self {
        Error::Artifact { path: e.path, problem: e.problem }
    }
}

impl From<relnet_augment::AugError> for Error {
    fn from(e: relnet_augment::AugError) -> Self {
        Error::Invalid(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
