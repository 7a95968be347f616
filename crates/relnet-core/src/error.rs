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
