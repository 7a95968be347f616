//! `relnet data download` against a local `file://` mirror (no internet needed): a file whose MD5
//! is not the published one is refused; a good archive lands in place and reads; a missing one
//! fails cleanly and leaves the data root untouched; an MD5 mismatch moves nothing.

use relnet_core::data::cifar;
use relnet_tests::relnet;

fn have_curl() -> bool {
    let ok = std::process::Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: curl not found on PATH");
    }
    ok
}

#[test]
fn download_from_a_file_mirror() {
    if !have_curl() {
        return;
    }
    let mirror = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let url = format!("file://{}", mirror.path().display());
    let root_s = root.path().to_str().unwrap();

    // The staging folder of an interrupted earlier attempt is cleared, never reused.
    std::fs::create_dir_all(root.path().join(".relnet-download-cifar10/cifar-10-batches-bin")).unwrap();
    std::fs::write(root.path().join(".relnet-download-cifar10/archive.tar.gz"), b"half a download").unwrap();

    // Nothing at the mirror: clean failure, nothing left behind.
    let r = relnet(&["data", "download", "cifar10", "--mirror", &url, "--data-root", root_s]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("could not fetch") && r.stderr.contains("cifar-10-binary.tar.gz"), "{}", r.stderr);
    assert!(r.stderr.contains("nothing was changed"), "{}", r.stderr);
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);

    // A corrupt archive: clean failure too (refused by its checksum, and by the extractor when
    // the check is skipped).
    std::fs::write(mirror.path().join("cifar-10-binary.tar.gz"), b"not a tarball").unwrap();
    let r = relnet(&["data", "download", "cifar10", "--mirror", &url, "--data-root", root_s]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("published checksum"), "{}", r.stderr);
    let r = relnet(&["data", "download", "cifar10", "--mirror", &url, "--skip-checksum", "--data-root", root_s]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("cannot extract"), "{}", r.stderr);
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);

    // A real (small) archive in the official layout.
    let stage = tempfile::tempdir().unwrap();
    let dir = stage.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    for f in cifar::cifar10_split_files(&dir, true).iter().chain(&cifar::cifar10_split_files(&dir, false)) {
        cifar::write_records(f, &[vec![3], vec![7]], &[vec![1; 3072], vec![2; 3072]]).unwrap();
    }
    let file = std::fs::File::create(mirror.path().join("cifar-10-binary.tar.gz")).unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast()));
    tar.append_dir_all("cifar-10-batches-bin", &dir).unwrap();
    tar.into_inner().unwrap().finish().unwrap();

    // It is not the official archive: its MD5 is not the published one, and nothing moves.
    let r = relnet(&["data", "download", "cifar10", "--mirror", &url, "--data-root", root_s]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stderr.contains("does not match the published checksum c32a1d4ab5d03f1284b67883e8d87530")
            && r.stderr.contains("nothing was changed"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    // A repacked local copy, with the check skipped explicitly.
    let r = relnet(&["data", "download", "cifar10", "--mirror", &url, "--skip-checksum", "--data-root", root_s]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("downloaded to"), "{}", r.stdout);
    let names: Vec<_> = std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("cifar-10-batches-bin")]);
    let r = relnet(&["data", "info", "cifar10", "--data-root", root_s]);
    assert!(r.stdout.contains("split train: 10 images"), "{}", r.stdout);

    let r = relnet(&["data", "download", "cifar10", "--mirror", &url, "--data-root", root_s]);
    assert!(r.stdout.contains("already present"), "{}", r.stdout);
    let r = relnet(&["data", "download", "slimagenet64", "--data-root", root_s]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cannot be downloaded automatically") && r.stderr.contains("zenodo"), "{}", r.stderr);
}
