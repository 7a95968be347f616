//! Bad input never crashes: every reader of relnet, given a valid file mutated at random
//! (truncated, bytes flipped, header fields set to huge values, random bytes, garbage appended),
//! returns a clean error (or reads it, where the mutation left a valid file), never panics, and
//! finishes each case quickly. The number of cases per target is printed (`--nocapture`) and
//! listed in docs/reliability.md. Cases are drawn from a fixed seed, so a failure reproduces.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use relnet_core::data::{cifar, folder, idx, stl10, tiny};

/// A small deterministic generator (xorshift64*): the cases are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `n` mutations of `base`.
fn mutations(base: &[u8], n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed | 1);
    (0..n)
        .map(|i| {
            let mut b = base.to_vec();
            match i % 6 {
                0 => b.truncate(rng.below(base.len())),
                1 => {
                    for _ in 0..1 + rng.below(8) {
                        let at = rng.below(b.len());
                        b[at] ^= 1 << rng.below(8);
                    }
                }
                2 => {
                    // A 4-byte field of the first 64 bytes (a header's size or count) set huge.
                    let at = rng.below(b.len().min(64).saturating_sub(4).max(1));
                    let end = (at + 4).min(b.len());
                    b[at..end].fill(0xff);
                }
                3 => b = (0..rng.below(4096)).map(|_| rng.next() as u8).collect(),
                4 => b.extend((0..1 + rng.below(300)).map(|_| rng.next() as u8)),
                _ => {
                    let at = rng.below(b.len());
                    let len = rng.below(64).min(b.len() - at);
                    for x in &mut b[at..at + len] {
                        *x = rng.next() as u8;
                    }
                }
            }
            b
        })
        .collect()
}

/// Runs `read` on every mutation of the file `path` (restored afterwards) and checks that none
/// panics or takes longer than a few seconds. Returns the number of cases.
fn fuzz<T>(target: &str, path: &Path, n: usize, seed: u64, mut read: impl FnMut() -> Result<T, String>) -> usize {
    let base = std::fs::read(path).unwrap();
    assert!(read().is_ok(), "{target}: the unmutated file must read");
    let (mut errors, mut oks) = (0, 0);
    for (i, m) in mutations(&base, n, seed).into_iter().enumerate() {
        std::fs::write(path, &m).unwrap();
        let t = Instant::now();
        match catch_unwind(AssertUnwindSafe(&mut read)) {
            Ok(Ok(_)) => oks += 1,
            Ok(Err(e)) => {
                assert!(!e.is_empty(), "{target} case {i}: an empty error");
                errors += 1;
            }
            Err(_) => panic!("{target} case {i} ({} bytes): the reader panicked", m.len()),
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{target} case {i}: took {:?}", t.elapsed());
    }
    std::fs::write(path, &base).unwrap();
    println!("fuzz {target}: {n} cases, {errors} clean errors, {oks} read (mutation left a valid file)");
    n
}

fn images(n: usize, side: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| (0..side * side * 3).map(|j| ((i * 31 + j * 7) % 251) as u8).collect()).collect()
}

#[test]
fn dataset_readers_survive_mutated_files() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut total = 0;

    let f = d.join("data_batch_1.bin");
    cifar::write_records(&f, &[vec![3], vec![7], vec![1]], &images(3, 32)).unwrap();
    total += fuzz("CIFAR-10 binary", &f, 300, 1, || cifar::read_cifar10_files(&[&f]).map_err(|e| e.to_string()));

    let f = d.join("train.bin");
    cifar::write_records(&f, &[vec![1, 30], vec![2, 40]], &images(2, 32)).unwrap();
    total += fuzz("CIFAR-100 binary", &f, 300, 2, || {
        cifar::read_cifar100_files(&[&f], cifar::Cifar100Labels::Fine).map_err(|e| e.to_string())
    });

    let (x, y) = (d.join("train_X.bin"), d.join("train_y.bin"));
    stl10::write_stl10(&x, Some(&y), &images(2, 96), &[1, 9]).unwrap();
    total += fuzz("STL-10 images", &x, 150, 3, || stl10::read_stl10(&x, Some(&y)).map_err(|e| e.to_string()));
    total += fuzz("STL-10 labels", &y, 150, 4, || stl10::read_stl10(&x, Some(&y)).map_err(|e| e.to_string()));

    for gz in [false, true] {
        let f = d.join(if gz { "imgs.gz" } else { "imgs" });
        idx::write_idx(&f, &[3, 28, 28], &vec![9u8; 3 * 28 * 28], gz).unwrap();
        let name = if gz { "IDX gzip" } else { "IDX raw" };
        total += fuzz(name, &f, 300, 5 + gz as u64, || idx::read_idx(&f, 3).map_err(|e| e.to_string()));
    }

    let f = d.join("img.png");
    folder::save_png(&f, 32, 32, 3, &images(1, 32)[0]).unwrap();
    total += fuzz("PNG image", &f, 300, 7, || folder::decode_rgb(&f).map_err(|e| e.to_string()));

    // tiny-ImageNet's val annotations.
    let root = d.join("tiny-imagenet-200");
    std::fs::create_dir_all(root.join("val/images")).unwrap();
    std::fs::write(root.join("wnids.txt"), "n01\nn02\n").unwrap();
    let mut ann = String::new();
    for (i, w) in ["n01", "n02"].iter().enumerate() {
        let name = format!("val_{i}.JPEG");
        folder::save_png(&root.join("val/images").join(&name), 64, 64, 3, &images(1, 64)[0]).unwrap();
        ann.push_str(&format!("{name}\t{w}\t0\t0\t63\t63\n"));
    }
    let f = root.join("val/val_annotations.txt");
    std::fs::write(&f, ann).unwrap();
    total += fuzz("tiny-ImageNet val annotations", &f, 200, 8, || {
        tiny::read_tiny(&root, false).map(|_| ()).map_err(|e| e.to_string())
    });
    let w = root.join("wnids.txt");
    total += fuzz("tiny-ImageNet wnids", &w, 100, 9, || {
        tiny::read_tiny(&root, false).map(|_| ()).map_err(|e| e.to_string())
    });
    println!("fuzz dataset readers: {total} cases in all");
}

#[test]
fn configs_artifacts_checkpoints_and_archives_survive_mutated_files() {
    use relnet_core::config;
    use relnet_core::pretrain::PretrainConfig;
    use relnet_models::{BackboneKind, io};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();

    let f = d.join("run.toml");
    std::fs::write(&f, "dataset = \"synthetic\"\nepochs = 3\nbatch_size = 32\nseed = 4\n[method]\nkind = \"relational\"\nk = 4\nloss = \"bce\"\n").unwrap();
    fuzz("config TOML", &f, 300, 11, || {
        config::resolve::<PretrainConfig>(Some(&f), Default::default()).map_err(|e| e.to_string())
    });

    let device = relnet_core::device::DeviceSpec::Cpu.device().unwrap();
    let b = BackboneKind::Conv4.init(&device);
    let f = d.join("backbone.bpk");
    io::save_backbone(&b, BackboneKind::Conv4, &f).unwrap();
    fuzz("backbone artifact (burnpack)", &f, 200, 12, || {
        io::load_backbone(&f, &device).map(|_| ()).map_err(|e| e.to_string())
    });

    let f = d.join("backbone.safetensors");
    io::export_safetensors(&b, BackboneKind::Conv4, &f).unwrap();
    fuzz("safetensors import", &f, 200, 13, || {
        io::import_safetensors(&f, Some(BackboneKind::Conv4), &device).map(|_| ()).map_err(|e| e.to_string())
    });

    // A checkpoint's progress file.
    let run = d.join("run");
    let ckpt = relnet_core::checkpoint::Checkpoint::new(&run);
    std::fs::create_dir_all(run.join("checkpoint")).unwrap();
    let f = run.join("checkpoint/progress.json");
    std::fs::write(
        &f,
        "{\n  \"epoch\": 3,\n  \"batch\": 0,\n  \"finished\": false,\n  \"generation\": 2,\n  \"streams\": 2\n}",
    )
    .unwrap();
    fuzz("checkpoint progress", &f, 200, 14, || ckpt.progress().map_err(|e| e.to_string()));

    // A dataset archive (tar.gz).
    let stage = d.join("stage/cifar-10-batches-bin");
    std::fs::create_dir_all(&stage).unwrap();
    cifar::write_records(&stage.join("data_batch_1.bin"), &[vec![1]], &images(1, 32)).unwrap();
    let f = d.join("a.tar.gz");
    {
        let file = std::fs::File::create(&f).unwrap();
        let mut t = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast()));
        t.append_dir_all("cifar-10-batches-bin", &stage).unwrap();
        t.into_inner().unwrap().finish().unwrap();
    }
    let out = d.join("extract");
    let mut n = 0u64;
    fuzz("tar.gz archive", &f, 200, 15, || {
        n += 1;
        let dest: PathBuf = out.join(n.to_string());
        std::fs::create_dir_all(&dest).unwrap();
        relnet_core::data::download::extract_tar_gz(&f, &dest).map_err(|e| e.to_string())
    });
}

#[test]
fn headers_claiming_huge_images_are_refused_before_decoding() {
    let tmp = tempfile::tempdir().unwrap();
    // An IDX header claiming 100000 x 100000 images of 100000 x 100000 pixels.
    let f = tmp.path().join("huge-idx");
    let mut h = vec![0, 0, 8, 3];
    for d in [100_000u32, 100_000, 100_000] {
        h.extend(d.to_be_bytes());
    }
    std::fs::write(&f, &h).unwrap();
    let e = idx::read_idx(&f, 3).unwrap_err().to_string();
    assert!(e.contains("absurd"), "{e}");
    // A PNG whose header claims 100000 x 100000 pixels (30 GB decoded).
    let f = tmp.path().join("huge.png");
    folder::save_png(&f, 4, 4, 3, &[7u8; 48]).unwrap();
    let mut png = std::fs::read(&f).unwrap();
    // IHDR width and height are at bytes 16..24; the chunk's CRC (24..28) is then wrong, so
    // write a correct one: the decoder must refuse the size, not the checksum.
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&f, &png).unwrap();
    let t = Instant::now();
    let e = folder::decode_rgb(&f).unwrap_err().to_string();
    assert!(t.elapsed() < Duration::from_secs(2), "refused without decoding");
    assert!(e.contains("huge.png"), "{e}");
}

/// CRC-32 (the PNG chunk checksum).
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}
