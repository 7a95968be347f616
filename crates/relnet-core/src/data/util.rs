//! Small helpers shared by the readers.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{DataError, DataResult};

/// Reads a file of fixed-size records, streaming, and calls `each(index, record)` per record.
///
/// The file must be non-empty and a whole number of records long; this is checked against its
/// size before anything is allocated, so a wrong file fails fast with a clear message.
/// Returns the number of records.
pub(crate) fn for_each_record(
    path: &Path,
    record: usize,
    what: &str,
    mut each: impl FnMut(usize, &[u8]) -> DataResult<()>,
) -> DataResult<usize> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, "cannot open", e))?;
    let len = f.metadata().map_err(|e| DataError::io(path, "cannot stat", e))?.len();
    if len == 0 {
        return Err(DataError::file(path, "file is empty"));
    }
    if len % record as u64 != 0 {
        return Err(DataError::file(
            path,
            format!(
                "size {len} bytes is not a whole number of {record}-byte {what} records \
                 (truncated or not a {what} file)"
            ),
        ));
    }
    let n = (len / record as u64) as usize;
    let per_chunk = (1 << 22) / record + 1;
    let mut buf = vec![0u8; per_chunk * record];
    let mut i = 0;
    while i < n {
        let take = per_chunk.min(n - i);
        let chunk = &mut buf[..take * record];
        f.read_exact(chunk).map_err(|e| DataError::io(path, "reading records", e))?;
        for r in chunk.chunks_exact(record) {
            each(i, r)?;
            i += 1;
        }
    }
    Ok(n)
}

/// Converts one planar CHW image (`c` planes of `h*w` bytes) into HWC and appends it.
pub(crate) fn push_planar(out: &mut Vec<u8>, planar: &[u8], h: usize, w: usize, c: usize) {
    let plane = h * w;
    out.reserve(plane * c);
    for p in 0..plane {
        for ch in 0..c {
            out.push(planar[ch * plane + p]);
        }
    }
}

/// Returns `Ok(label)` if `label < num_classes`, else an error naming the file and record.
pub(crate) fn check_label(path: &Path, index: usize, label: u32, num_classes: u32) -> DataResult<u16> {
    if label >= num_classes {
        return Err(DataError::file(
            path,
            format!("record {index}: label {label} out of range (expected 0..{num_classes})"),
        ));
    }
    Ok(label as u16)
}

/// Reads a UTF-8 text file of names, one per non-empty line.
pub(crate) fn read_names(path: &Path) -> DataResult<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, "cannot read", e))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

/// Reads optional class names: the file's names if it exists and holds exactly `n`, else `None`.
pub(crate) fn optional_names(path: &Path, n: usize) -> Option<Vec<String>> {
    read_names(path).ok().filter(|v| v.len() == n)
}

/// `true` for names that directory walks ignore: hidden entries such as `.DS_Store`.
pub(crate) fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}
