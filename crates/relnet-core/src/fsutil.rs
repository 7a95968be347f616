//! File helpers: atomic writes (temp file in the same folder, fsync, rename), so an interrupted
//! run never leaves a half-written checkpoint, config or result.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Unique per process, thread and call: writers on other hosts of a shared filesystem, or
    // other threads, never share a temporary file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{nanos}.{n}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// This machine's host name (for locks).
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// `<job>_<task>` of the SLURM (array) task this process runs in, or `-`.
pub fn slurm_task() -> String {
    match (
        std::env::var("SLURM_ARRAY_JOB_ID").or_else(|_| std::env::var("SLURM_JOB_ID")),
        std::env::var("SLURM_ARRAY_TASK_ID"),
    ) {
        (Ok(j), Ok(t)) => format!("{j}_{t}"),
        (Ok(j), Err(_)) => j,
        _ => "-".into(),
    }
}

/// A lock file in a folder (`<dir>/<name>`, holding `host pid slurm-task`), so that two processes
/// never run in one run directory or grid cell. It appears with its content at once (written to
/// a temporary file, then hard-linked into place, which fails if it exists) and is removed when
/// dropped. A lock is stale, and taken over, when its process is gone (same host, pid not
/// alive), or when this very SLURM task left it before being requeued.
#[derive(Debug)]
pub struct DirLock(PathBuf);

impl DirLock {
    /// Takes the lock; `Ok(Err(holder))` when a live process holds it (`holder` says which).
    pub fn take(dir: &Path, name: &str) -> std::io::Result<Result<DirLock, String>> {
        let path = dir.join(name);
        let me = format!("{} {} {}", host(), std::process::id(), slurm_task());
        for _ in 0..3 {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let tmp = dir.join(format!(".{name}.{}.{nanos}", std::process::id()));
            std::fs::write(&tmp, me.as_bytes())?;
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => return Ok(Ok(DirLock(path))),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let mut it = holder.split_whitespace();
                    let (h, pid, task) = (
                        it.next().unwrap_or(""),
                        it.next().and_then(|p| p.parse::<u32>().ok()),
                        it.next().unwrap_or("-"),
                    );
                    let dead = h == host()
                        && pid.is_some_and(|p| p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists());
                    let requeued = task != "-" && task == slurm_task();
                    if dead || requeued {
                        // Only the holder's exact content is removed, so that two processes
                        // taking over one stale lock cannot remove each other's.
                        if std::fs::read_to_string(&path).is_ok_and(|now| now == holder) {
                            let _ = std::fs::remove_file(&path);
                        }
                        continue;
                    }
                    let who = match pid {
                        Some(p) => format!("process {p} on {h}"),
                        None => "another process".to_string(),
                    };
                    return Ok(Err(format!(
                        "in use by {who} (lock file {}; delete it if no such process runs)",
                        path.display()
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Err(format!("cannot take the lock {}", path.display())))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/result.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_lock_refuses_a_live_holder_and_takes_over_a_dead_one() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::take(dir.path(), "run.lock").unwrap().unwrap();
        let held = std::fs::read_to_string(dir.path().join("run.lock")).unwrap();
        assert!(held.contains(&std::process::id().to_string()), "{held}");
        // Held by this live process: a second taker is refused and told by whom.
        let e = DirLock::take(dir.path(), "run.lock").unwrap().unwrap_err();
        assert!(e.contains(&format!("process {}", std::process::id())) && e.contains("run.lock"), "{e}");
        drop(lock);
        assert!(!dir.path().join("run.lock").exists(), "released on drop");
        // A lock left by a process that is gone (a pid that cannot exist) is taken over.
        std::fs::write(dir.path().join("run.lock"), format!("{} 4294967 -", host())).unwrap();
        let again = DirLock::take(dir.path(), "run.lock").unwrap();
        assert!(again.is_ok(), "{again:?}");
        // A lock of another host is not judged: refused.
        drop(again);
        std::fs::write(dir.path().join("run.lock"), "elsewhere 12 -").unwrap();
        assert!(DirLock::take(dir.path(), "run.lock").unwrap().unwrap_err().contains("process 12 on elsewhere"));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "no temporary left: {names:?}");
    }

    #[test]
    fn failure_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        write_atomic(&p, b"old").unwrap();
        // A directory where the file should go: rename fails, the old content is untouched.
        let blocked = dir.path().join("d");
        std::fs::create_dir_all(blocked.join("inner")).unwrap();
        assert!(write_atomic(&blocked, b"new").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
    }
}
