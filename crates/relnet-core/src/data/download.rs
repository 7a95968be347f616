//! `relnet data download NAME`: fetch an official archive into the data root, where the machine
//! has internet, and fail cleanly where it has not.
//!
//! Files are fetched with `curl` (on PATH on almost every system) into a staging folder under
//! the data root, extracted there (`.tar.gz` in-process, `.zip` with `unzip`) and only then moved
//! to their final place, so an interrupted or failed download leaves nothing half-done behind.
//! A mirror (`--mirror`, or `RELNET_DOWNLOAD_MIRROR`) replaces the URL's folder: a local copy of
//! the archives, or `file:///...`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::registry::{DataRoot, DatasetInfo, Source};
use crate::error::{DataError, DataResult};


/// What a download did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    AlreadyPresent(PathBuf),
    Downloaded(PathBuf),
    NothingToDownload,
}

/// Removes a folder when dropped (the staging area, on success and on failure).
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn url_for(url: &str, mirror: Option<&str>) -> String {
    match mirror {
        Some(m) if !m.is_empty() => {
            let file = url.rsplit('/').next().unwrap_or(url);
            format!("{}/{file}", m.trim_end_matches('/'))
        }
        _ => url.to_string(),
    }
}

/// Downloads `info`'s dataset into `root`; `log` receives progress lines.
pub fn download(
    info: &DatasetInfo,
    root: &DataRoot,
    mirror: Option<&str>,
    log: &mut dyn FnMut(&str),
) -> DataResult<Outcome> {
    if matches!(info.source, Source::Generated) {
        return Ok(Outcome::NothingToDownload);
    }
    if let Ok(loc) = info.locate(root) {
        return Ok(Outcome::AlreadyPresent(loc.path().to_path_buf()));
    }
    let r = root.path();
    std::fs::create_dir_all(r).map_err(|e| DataError::io(r, "cannot create the data root", e))?;
    let staging = Staging(r.join(format!(".relnet-download-{}", info.id.name())));
    let _ = std::fs::remove_dir_all(&staging.0);
    std::fs::create_dir_all(&staging.0).map_err(|e| DataError::io(&staging.0, "cannot create staging folder", e))?;
    let fail = |e: DataError| {
        DataError::Invalid(format!("{e}\nDownload of `{}` failed; nothing was changed in {}. {}", info.id, r.display(), info.help))
    };
    let (staged, top) = match &info.source {
        Source::TarGz { url, top } => {
            let archive = staging.0.join("archive.tar.gz");
            fetch(&url_for(url, mirror), &archive, log).map_err(fail)?;
            log(&format!("extracting {}", archive.display()));
            extract_tar_gz(&archive, &staging.0).map_err(fail)?;
            (staging.0.join(top), *top)
        }
        Source::Zip { url, top } => {
            let archive = staging.0.join("archive.zip");
            fetch(&url_for(url, mirror), &archive, log).map_err(fail)?;
            log(&format!("extracting {}", archive.display()));
            run(Command::new("unzip").arg("-q").arg(&archive).arg("-d").arg(&staging.0), "unzip").map_err(fail)?;
            (staging.0.join(top), *top)
        }
        Source::Idx { base, dir } => {
            let out = staging.0.join(dir);
            std::fs::create_dir_all(&out).map_err(|e| fail(DataError::io(&out, "cannot create folder", e)))?;
            for stem in [super::idx::TRAIN_STEMS.0, super::idx::TRAIN_STEMS.1, super::idx::TEST_STEMS.0, super::idx::TEST_STEMS.1] {
                let name = format!("{stem}.gz");
                fetch(&url_for(&format!("{base}{name}"), mirror), &out.join(&name), log).map_err(fail)?;
            }
            (out, *dir)
        }
        Source::Manual | Source::Generated => {
            return Err(DataError::Invalid(format!("`{}` cannot be downloaded automatically. {}", info.id, info.help)));
        }
    };
    if !staged.is_dir() {
        return Err(fail(DataError::file(&staged, format!("the archive did not contain the expected folder `{top}`"))));
    }
    let dest = r.join(top);
    std::fs::rename(&staged, &dest).map_err(|e| fail(DataError::io(&dest, "cannot move the extracted folder into place", e)))?;
    // Check it reads: a wrong archive is reported now, not at training time.
    info.locate(root)?;
    Ok(Outcome::Downloaded(dest))
}

fn fetch(url: &str, dest: &Path, log: &mut dyn FnMut(&str)) -> DataResult<()> {
    log(&format!("fetching {url}"));
    let mut cmd = Command::new("curl");
    cmd.args(["-fL", "--retry", "2", "--connect-timeout", "20", "--progress-bar", "-o"]).arg(dest).arg(url);
    run(&mut cmd, "curl").map_err(|e| match e {
        DataError::Invalid(m) => DataError::Invalid(format!("could not fetch {url}: {m} (no internet on this machine?)")),
        other => other,
    })
}

fn run(cmd: &mut Command, name: &str) -> DataResult<()> {
    let out = cmd.stdout(std::process::Stdio::null()).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::Invalid(format!("`{name}` is needed to download and was not found on PATH"))
        } else {
            DataError::Invalid(format!("cannot run `{name}`: {e}"))
        }
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        return Err(DataError::Invalid(format!("`{name}` failed ({}): {last}", out.status)));
    }
    Ok(())
}

/// Extracts a `.tar.gz` into `dest` (paths escaping `dest` are refused by the tar crate).
pub fn extract_tar_gz(archive: &Path, dest: &Path) -> DataResult<()> {
    let f = std::fs::File::open(archive).map_err(|e| DataError::io(archive, "cannot open", e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    tar.unpack(dest).map_err(|e| DataError::file(archive, format!("cannot extract archive: {e}")))
}
