//! `relnet data download NAME`: fetch an official archive into the data root, where the machine
//! has internet, and fail cleanly where it has not.
//!
//! Files are fetched with `curl` (on PATH on almost every system) into a staging folder under
//! the data root, extracted there (`.tar.gz` in-process, `.zip` with `unzip`) and only then moved
//! to their final place, so an interrupted or failed download leaves nothing half-done behind.
//! A mirror (`--mirror`, or `RELNET_DOWNLOAD_MIRROR`) replaces the URL's folder: a local copy of
//! the archives, or `file:///...`.
//!
//! Every fetched file is checked against the dataset's published MD5 (the dataset authors' page
//! or torchvision's, in the registry) before it is extracted: a mismatch is an error and nothing
//! is moved into place. An interrupted download restarts cleanly: the staging folder of an
//! earlier attempt is removed first. Extraction refuses entries that would land outside the
//! staging folder, links, special files and archives that expand beyond a size bound.

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

/// Whether fetched files are checked against the published checksums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Check every file (the default).
    Published,
    /// Skip the check: a repacked local copy served by a mirror.
    Skip,
}

/// MD5 of a file, hex.
pub fn md5_file(path: &Path) -> DataResult<String> {
    use md5::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, "cannot open", e))?;
    let mut h = md5::Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, "cannot read", e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn check(path: &Path, url: &str, md5: &str, verify: Verify, log: &mut dyn FnMut(&str)) -> DataResult<()> {
    if verify == Verify::Skip {
        log(&format!("not checking {} (checksum check skipped)", path.display()));
        return Ok(());
    }
    let got = md5_file(path)?;
    if got != md5 {
        return Err(DataError::file(
            path,
            format!(
                "MD5 {got} does not match the published checksum {md5} of {url}: the download is corrupt or not the official file (a repacked local copy can be used with the checksum check skipped)"
            ),
        ));
    }
    log(&format!("checksum ok ({md5})"));
    Ok(())
}

/// Downloads `info`'s dataset into `root`; `log` receives progress lines.
pub fn download(
    info: &DatasetInfo,
    root: &DataRoot,
    mirror: Option<&str>,
    log: &mut dyn FnMut(&str),
) -> DataResult<Outcome> {
    download_verified(info, root, mirror, Verify::Published, log)
}

/// [`download`], choosing whether checksums are checked.
pub fn download_verified(
    info: &DatasetInfo,
    root: &DataRoot,
    mirror: Option<&str>,
    verify: Verify,
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
        DataError::Invalid(format!(
            "{e}\nDownload of `{}` failed; nothing was changed in {}. {}",
            info.id,
            r.display(),
            info.help
        ))
    };
    let (staged, top) = match &info.source {
        Source::TarGz { url, top, md5 } => {
            let archive = staging.0.join("archive.tar.gz");
            fetch(&url_for(url, mirror), &archive, log).map_err(fail)?;
            check(&archive, url, md5, verify, log).map_err(fail)?;
            log(&format!("extracting {}", archive.display()));
            extract_tar_gz(&archive, &staging.0).map_err(fail)?;
            (staging.0.join(top), *top)
        }
        Source::Zip { url, top, md5 } => {
            let archive = staging.0.join("archive.zip");
            fetch(&url_for(url, mirror), &archive, log).map_err(fail)?;
            check(&archive, url, md5, verify, log).map_err(fail)?;
            check_zip_entries(&archive).map_err(fail)?;
            log(&format!("extracting {}", archive.display()));
            run(Command::new("unzip").arg("-q").arg(&archive).arg("-d").arg(&staging.0), "unzip").map_err(fail)?;
            (staging.0.join(top), *top)
        }
        Source::Idx { base, dir, md5 } => {
            let out = staging.0.join(dir);
            std::fs::create_dir_all(&out).map_err(|e| fail(DataError::io(&out, "cannot create folder", e)))?;
            let stems = [
                super::idx::TRAIN_STEMS.0,
                super::idx::TRAIN_STEMS.1,
                super::idx::TEST_STEMS.0,
                super::idx::TEST_STEMS.1,
            ];
            for (stem, sum) in stems.iter().zip(md5) {
                let name = format!("{stem}.gz");
                let url = format!("{base}{name}");
                fetch(&url_for(&url, mirror), &out.join(&name), log).map_err(fail)?;
                check(&out.join(&name), &url, sum, verify, log).map_err(fail)?;
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
    std::fs::rename(&staged, &dest)
        .map_err(|e| fail(DataError::io(&dest, "cannot move the extracted folder into place", e)))?;
    // Check it reads: a wrong archive is reported now, not at training time.
    info.locate(root)?;
    Ok(Outcome::Downloaded(dest))
}

fn fetch(url: &str, dest: &Path, log: &mut dyn FnMut(&str)) -> DataResult<()> {
    log(&format!("fetching {url}"));
    let mut cmd = Command::new("curl");
    cmd.args(["-fL", "--retry", "2", "--connect-timeout", "20", "--progress-bar", "-o"]).arg(dest).arg(url);
    run(&mut cmd, "curl").map_err(|e| match e {
        DataError::Invalid(m) => {
            DataError::Invalid(format!("could not fetch {url}: {m} (no internet on this machine?)"))
        }
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

/// Refuses a zip whose entries would land outside the extraction folder (`..`, absolute paths)
/// or that holds symbolic links, from `unzip`'s own listing, before anything is extracted.
fn check_zip_entries(archive: &Path) -> DataResult<()> {
    let out = Command::new("unzip")
        .arg("-Z")
        .arg(archive)
        .output()
        .map_err(|e| DataError::Invalid(format!("cannot run `unzip`: {e}")))?;
    let listing = String::from_utf8_lossy(&out.stdout);
    for line in listing.lines() {
        let mut fields = line.split_whitespace();
        let Some(mode) = fields.next() else { continue };
        // Entry lines start with a permission string (`-rw-r--r--`, `drwx...`, `lrwx...`).
        if mode.len() != 10 || !mode.chars().skip(1).all(|c| "rwxsStT-".contains(c)) {
            continue;
        }
        let name = line.split_whitespace().skip(8).collect::<Vec<_>>().join(" ");
        let escapes = name.starts_with('/') || name.split('/').any(|c| c == "..");
        if mode.starts_with('l') || escapes {
            return Err(DataError::file(
                archive,
                format!(
                    "entry `{name}` is {}; refused",
                    if escapes { "outside the extraction folder" } else { "a symbolic link" }
                ),
            ));
        }
    }
    Ok(())
}

/// The most bytes an archive may expand to (the largest official archive, STL-10, holds 2.6 GB).
pub const MAX_EXTRACTED_BYTES: u64 = 16 << 30;

/// Extracts a `.tar.gz` into `dest`, refusing anything that could write outside it or that is
/// not a plain file or folder: entries with `..`, absolute paths, links (symbolic or hard),
/// devices; and archives that expand beyond [`MAX_EXTRACTED_BYTES`] (a gzip bomb), checked from
/// each entry's header before its bytes are written. Nothing is extracted from a refused archive
/// past the refused entry, and the caller's staging folder is removed.
pub fn extract_tar_gz(archive: &Path, dest: &Path) -> DataResult<()> {
    extract_tar_gz_limited(archive, dest, MAX_EXTRACTED_BYTES)
}

/// [`extract_tar_gz`] with another size limit (tests).
pub fn extract_tar_gz_limited(archive: &Path, dest: &Path, max_bytes: u64) -> DataResult<()> {
    use std::path::Component;
    let f = std::fs::File::open(archive).map_err(|e| DataError::io(archive, "cannot open", e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    let bad = |what: String| DataError::file(archive, format!("cannot extract archive: {what}"));
    let mut total: u64 = 0;
    for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        if path.components().any(|c| matches!(c, Component::ParentDir | Component::RootDir | Component::Prefix(_))) {
            return Err(bad(format!("entry `{}` would be written outside the data root; refused", path.display())));
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(bad(format!(
                "entry `{}` is a {}, not a file or folder; refused (dataset archives hold none)",
                path.display(),
                if kind.is_symlink() {
                    "symbolic link"
                } else if kind.is_hard_link() {
                    "hard link"
                } else {
                    "special file"
                }
            )));
        }
        total = total.saturating_add(entry.header().size().map_err(|e| bad(e.to_string()))?);
        if total > max_bytes {
            return Err(bad(format!(
                "it expands to more than {max_bytes} bytes (at entry `{}`); refused",
                path.display()
            )));
        }
        let inside = entry.unpack_in(dest).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        if !inside {
            return Err(bad(format!("entry `{}` would be written outside the data root; refused", path.display())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A .tar.gz with one raw entry per (name, kind, link target, bytes), headers written by hand
    /// so that names the tar crate's builder refuses (`..`, absolute) can be made.
    fn archive(dir: &Path, entries: &[(&str, tar::EntryType, Option<&str>, &[u8])]) -> PathBuf {
        let path = dir.join("a.tar.gz");
        let f = std::fs::File::create(&path).unwrap();
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(f, flate2::Compression::fast()));
        for (name, kind, link, bytes) in entries {
            let mut h = tar::Header::new_gnu();
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_cksum();
            b.append(&h, *bytes).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        path
    }

    fn extract(
        entries: &[(&str, tar::EntryType, Option<&str>, &[u8])],
        limit: u64,
    ) -> (Result<(), String>, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let a = archive(tmp.path(), entries);
        let dest = tmp.path().join("root/staging");
        std::fs::create_dir_all(&dest).unwrap();
        (extract_tar_gz_limited(&a, &dest, limit).map_err(|e| e.to_string()), tmp)
    }

    #[test]
    fn archives_cannot_write_outside_the_root() {
        use tar::EntryType::*;
        let ok: &[(&str, tar::EntryType, Option<&str>, &[u8])] =
            &[("top/", Directory, None, b""), ("top/a.bin", Regular, None, b"abc")];
        let (r, tmp) = extract(ok, 1 << 20);
        r.unwrap();
        assert_eq!(std::fs::read(tmp.path().join("root/staging/top/a.bin")).unwrap(), b"abc");

        for (what, entries) in [
            ("parent", vec![("top/../../escaped.txt", Regular, None, &b"x"[..])]),
            ("absolute", vec![("/tmp/relnet-escaped.txt", Regular, None, &b"x"[..])]),
            (
                "symlink",
                vec![("top/link", Symlink, Some("/etc"), &b""[..]), ("top/link/passwd", Regular, None, &b"x"[..])],
            ),
            ("hard link", vec![("top/hard", Link, Some("/etc/passwd"), &b""[..])]),
            ("fifo", vec![("top/fifo", Fifo, None, &b""[..])]),
        ] {
            let (r, tmp) = extract(&entries, 1 << 20);
            let e = r.expect_err(what);
            assert!(e.contains("refused") && e.contains("a.tar.gz"), "{what}: {e}");
            // Nothing outside the staging folder: the root holds only it.
            let root: Vec<_> =
                std::fs::read_dir(tmp.path().join("root")).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(root, vec![std::ffi::OsString::from("staging")], "{what}");
            assert!(
                !tmp.path().join("escaped.txt").exists() && !Path::new("/tmp/relnet-escaped.txt").exists(),
                "{what}"
            );
        }
    }

    #[test]
    fn a_gzip_bomb_is_refused_by_size_before_it_is_written() {
        // 8 MB of zeros compress to a few kB; the limit is 1 MB.
        let zeros = vec![0u8; 8 << 20];
        let (r, tmp) = extract(&[("top/zeros", tar::EntryType::Regular, None, &zeros)], 1 << 20);
        let e = r.unwrap_err();
        assert!(e.contains("expands to more than 1048576 bytes"), "{e}");
        assert!(std::fs::metadata(tmp.path().join("a.tar.gz")).unwrap().len() < 100_000);
        assert!(!tmp.path().join("root/staging/top/zeros").exists(), "refused before writing");
    }

    /// A zip of stored (uncompressed) entries, written by hand so that names a zip tool would
    /// refuse or rewrite (`..`, absolute) can be made: (name, bytes, is a symbolic link).
    fn zip(path: &Path, entries: &[(&str, &[u8], bool)]) {
        let (mut out, mut central) = (Vec::new(), Vec::new());
        let le16 = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
        let le32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
        for (name, bytes, link) in entries {
            let mut crc = flate2::Crc::new();
            crc.update(bytes);
            let offset = out.len() as u32;
            le32(&mut out, 0x0403_4b50);
            for x in [20u16, 0, 0, 0, 0] {
                le16(&mut out, x); // version, flags, method (stored), time, date
            }
            for x in [crc.sum(), bytes.len() as u32, bytes.len() as u32] {
                le32(&mut out, x);
            }
            le16(&mut out, name.len() as u16);
            le16(&mut out, 0);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(bytes);
            le32(&mut central, 0x0201_4b50);
            for x in [3 << 8 | 20u16, 20, 0, 0, 0, 0] {
                le16(&mut central, x); // made by unix, version, flags, method, time, date
            }
            for x in [crc.sum(), bytes.len() as u32, bytes.len() as u32] {
                le32(&mut central, x);
            }
            for x in [name.len() as u16, 0, 0, 0, 0] {
                le16(&mut central, x); // name, extra, comment, disk, internal attributes
            }
            let mode: u32 = if *link { 0o120777 } else { 0o100644 };
            le32(&mut central, mode << 16);
            le32(&mut central, offset);
            central.extend_from_slice(name.as_bytes());
        }
        let (cd_offset, cd_len) = (out.len() as u32, central.len() as u32);
        out.extend_from_slice(&central);
        le32(&mut out, 0x0605_4b50);
        for x in [0u16, 0, entries.len() as u16, entries.len() as u16] {
            le16(&mut out, x);
        }
        le32(&mut out, cd_len);
        le32(&mut out, cd_offset);
        le16(&mut out, 0);
        std::fs::write(path, out).unwrap();
    }

    #[test]
    fn zips_cannot_write_outside_the_root() {
        if Command::new("unzip").arg("-v").output().is_err() {
            eprintln!(
                "SKIPPED zips_cannot_write_outside_the_root: `unzip` is not installed (zip datasets need it too)"
            );
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let good = tmp.path().join("good.zip");
        zip(&good, &[("top/a.bin", b"abc", false), ("top/b c.txt", b"hello", false)]);
        check_zip_entries(&good).unwrap();
        // The listing the check reads is the one unzip extracts: the good archive extracts whole.
        let dest = tmp.path().join("root/staging");
        std::fs::create_dir_all(&dest).unwrap();
        run(Command::new("unzip").arg("-q").arg(&good).arg("-d").arg(&dest), "unzip").unwrap();
        assert_eq!(std::fs::read(dest.join("top/b c.txt")).unwrap(), b"hello");

        for (what, entries) in [
            ("parent", vec![("top/../../escaped.txt", &b"x"[..], false)]),
            ("absolute", vec![("top/a.bin", &b"abc"[..], false), ("/tmp/relnet-escaped-zip.txt", &b"x"[..], false)]),
            ("symlink", vec![("top/link", &b"/etc"[..], true), ("top/link/passwd", &b"x"[..], false)]),
        ] {
            let a = tmp.path().join(format!("{what}.zip"));
            zip(&a, &entries);
            let e = check_zip_entries(&a).expect_err(what).to_string();
            assert!(e.contains("refused") && e.contains(&format!("{what}.zip")), "{what}: {e}");
        }
        assert!(!tmp.path().join("escaped.txt").exists() && !Path::new("/tmp/relnet-escaped-zip.txt").exists());
    }
}
