//! CIFAR-10 and CIFAR-100 in the official binary layout.
//!
//! * `cifar-10-batches-bin/data_batch_{1..5}.bin`, `test_batch.bin`: records of
//!   `<label byte><3072 pixel bytes>` (R plane, G plane, B plane, each 32x32 row-major).
//!   Class names from `batches.meta.txt`.
//! * `cifar-100-binary/train.bin`, `test.bin`: records of `<coarse byte><fine byte><3072 bytes>`.
//!   Class names from `fine_label_names.txt` / `coarse_label_names.txt`.

use std::path::Path;

use super::ImageSet;
use super::util::{check_label, for_each_record, optional_names, push_planar};
use crate::error::{DataError, DataResult};

pub const SIDE: usize = 32;
const PIXELS: usize = SIDE * SIDE * 3;

/// The CIFAR-10 class names in label order.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Which CIFAR-100 label to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cifar100Labels {
    /// The 100 fine classes.
    Fine,
    /// The 20 coarse superclasses (CIFAR-100-20).
    Coarse,
}

/// Reads CIFAR-10 binary record files (all records of all files, in order).
pub fn read_cifar10_files(files: &[impl AsRef<Path>]) -> DataResult<ImageSet> {
    read_records(files, 1, |path, i, rec| check_label(path, i, rec[0] as u32, 10))
}

/// Reads CIFAR-100 binary record files, keeping the fine or the coarse label.
pub fn read_cifar100_files(files: &[impl AsRef<Path>], which: Cifar100Labels) -> DataResult<ImageSet> {
    read_records(files, 2, |path, i, rec| {
        // Both bytes are validated whichever is kept: a bad byte means a bad file.
        let coarse = check_label(path, i, rec[0] as u32, 20)?;
        let fine = check_label(path, i, rec[1] as u32, 100)?;
        Ok(match which {
            Cifar100Labels::Fine => fine,
            Cifar100Labels::Coarse => coarse,
        })
    })
}

fn read_records(
    files: &[impl AsRef<Path>],
    label_bytes: usize,
    label: impl Fn(&Path, usize, &[u8]) -> DataResult<u16>,
) -> DataResult<ImageSet> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let path = f.as_ref();
        // Reserve from the file size up front: one allocation, no doubling overshoot.
        if let Ok(m) = std::fs::metadata(path) {
            let n = m.len() as usize / (label_bytes + PIXELS);
            pixels.reserve_exact(n * PIXELS);
            labels.reserve_exact(n);
        }
        for_each_record(path, label_bytes + PIXELS, "CIFAR", |i, rec| {
            labels.push(label(path, i, rec)?);
            push_planar(&mut pixels, &rec[label_bytes..], SIDE, SIDE, 3);
            Ok(())
        })?;
    }
    if labels.is_empty() {
        return Err(DataError::Invalid("no CIFAR files given".into()));
    }
    ImageSet::new(SIDE, SIDE, 3, pixels, Some(labels))
}

/// The record files of a split of `cifar-10-batches-bin/`.
pub fn cifar10_split_files(dir: &Path, train: bool) -> Vec<std::path::PathBuf> {
    if train {
        (1..=5).map(|i| dir.join(format!("data_batch_{i}.bin"))).collect()
    } else {
        vec![dir.join("test_batch.bin")]
    }
}

/// The record file of a split of `cifar-100-binary/`.
pub fn cifar100_split_file(dir: &Path, train: bool) -> std::path::PathBuf {
    dir.join(if train { "train.bin" } else { "test.bin" })
}

/// CIFAR-10 class names: `batches.meta.txt` if present and well formed, else the standard list.
pub fn cifar10_class_names(dir: &Path) -> Vec<String> {
    optional_names(&dir.join("batches.meta.txt"), 10)
        .unwrap_or_else(|| CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect())
}

/// CIFAR-100 class names from the archive's label-name files, else `fine_N` / `coarse_N`.
pub fn cifar100_class_names(dir: &Path, which: Cifar100Labels) -> Vec<String> {
    let (file, n, prefix) = match which {
        Cifar100Labels::Fine => ("fine_label_names.txt", 100, "fine"),
        Cifar100Labels::Coarse => ("coarse_label_names.txt", 20, "coarse"),
    };
    optional_names(&dir.join(file), n).unwrap_or_else(|| (0..n).map(|i| format!("{prefix}_{i}")).collect())
}

/// Writes CIFAR records in the official layout (for tests and for converting data).
/// `labels` holds one or two label bytes per image; `images` are HWC 32x32x3.
pub fn write_records(path: &Path, labels: &[Vec<u8>], images: &[Vec<u8>]) -> std::io::Result<()> {
    let mut out = Vec::new();
    for (l, img) in labels.iter().zip(images) {
        out.extend_from_slice(l);
        for ch in 0..3 {
            for p in 0..SIDE * SIDE {
                out.push(img[p * 3 + ch]);
            }
        }
    }
    std::fs::write(path, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(seed: u8) -> Vec<u8> {
        (0..PIXELS).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[test]
    fn cifar10_round_trip_and_channel_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data_batch_1.bin");
        // One record written by hand in the official planar order: R plane all 10, G 20, B 30.
        let mut rec = vec![6u8];
        rec.extend(std::iter::repeat_n(10u8, 1024));
        rec.extend(std::iter::repeat_n(20u8, 1024));
        rec.extend(std::iter::repeat_n(30u8, 1024));
        std::fs::write(&p, &rec).unwrap();
        let set = read_cifar10_files(&[&p]).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.labels, Some(vec![6]));
        assert_eq!(&set.image(0)[..6], &[10, 20, 30, 10, 20, 30]);

        let imgs = vec![image(1), image(2), image(3)];
        let labels = vec![vec![0], vec![9], vec![4]];
        write_records(&p, &labels, &imgs).unwrap();
        let set = read_cifar10_files(&[&p, &p]).unwrap();
        assert_eq!(set.len(), 6);
        assert_eq!(set.labels, Some(vec![0, 9, 4, 0, 9, 4]));
        assert_eq!(set.image(1), &imgs[1][..]);
        assert_eq!(set.image(5), &imgs[2][..]);
    }

    #[test]
    fn cifar100_fine_and_coarse() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.bin");
        write_records(&p, &[vec![19, 99], vec![0, 3]], &[image(5), image(6)]).unwrap();
        let fine = read_cifar100_files(&[&p], Cifar100Labels::Fine).unwrap();
        let coarse = read_cifar100_files(&[&p], Cifar100Labels::Coarse).unwrap();
        assert_eq!(fine.labels, Some(vec![99, 3]));
        assert_eq!(coarse.labels, Some(vec![19, 0]));
        assert_eq!(fine.pixels, coarse.pixels);
        assert_eq!(fine.image(1), &image(6)[..]);
    }

    #[test]
    fn bad_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data_batch_1.bin");
        std::fs::write(&p, vec![0u8; 3073 * 2 - 5]).unwrap();
        let e = read_cifar10_files(&[&p]).unwrap_err().to_string();
        assert!(e.contains("data_batch_1.bin") && e.contains("not a whole number"), "{e}");

        let mut rec = vec![0u8; 3073 * 2];
        rec[3073] = 10;
        std::fs::write(&p, &rec).unwrap();
        let e = read_cifar10_files(&[&p]).unwrap_err().to_string();
        assert!(e.contains("record 1") && e.contains("label 10 out of range"), "{e}");

        std::fs::write(&p, []).unwrap();
        assert!(read_cifar10_files(&[&p]).unwrap_err().to_string().contains("empty"));

        let missing = dir.path().join("nope.bin");
        let e = read_cifar10_files(&[&missing]).unwrap_err().to_string();
        assert!(e.contains("nope.bin") && e.contains("no such file"), "{e}");

        let p100 = dir.path().join("test.bin");
        std::fs::write(&p100, {
            let mut r = vec![20u8, 5];
            r.extend(vec![0u8; 3072]);
            r
        })
        .unwrap();
        let e = read_cifar100_files(&[&p100], Cifar100Labels::Fine).unwrap_err().to_string();
        assert!(e.contains("label 20 out of range (expected 0..20)"), "{e}");
    }
}
