//! Property tests of the readers: arbitrary bytes never panic (they load or give a named error),
//! and write-then-read round-trips for every format.

use proptest::prelude::*;
use relnet_core::data::{ImageSet, cifar, folder, idx, stl10};

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Errors must name the file they are about.
fn named(err: relnet_core::DataError, file: &std::path::Path) {
    let msg = err.to_string();
    let name = file.file_name().unwrap().to_string_lossy();
    assert!(msg.contains(&*name), "error does not name {name}: {msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..8000),
        header in prop::collection::vec(any::<u8>(), 0..24),
    ) {
        let dir = tempfile::tempdir().unwrap();
        // Random bytes, and random bytes behind a plausible IDX prefix, raw and gzip.
        let mut idx_like = vec![0u8, 0, 8, 3];
        idx_like.extend(&header);
        idx_like.extend(&bytes);
        let a = write(dir.path(), "a.bin", &bytes);
        let b = write(dir.path(), "b.idx", &idx_like);
        let gz = dir.path().join("c.gz");
        {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&idx_like).unwrap();
            std::fs::write(&gz, e.finish().unwrap()).unwrap();
        }
        for p in [&a, &b, &gz] {
            if let Err(e) = cifar::read_cifar10_files(&[p]) { named(e, p) }
            if let Err(e) = cifar::read_cifar100_files(&[p], cifar::Cifar100Labels::Coarse) { named(e, p) }
            if let Err(e) = stl10::read_stl10(p, Some(p)) { named(e, p) }
            for nd in [1, 3] {
                if let Err(e) = idx::read_idx(p, nd) { named(e, p) }
            }
            if let Err(e) = idx::read_idx_pair(p, &b, 10) {
                let m = e.to_string();
                prop_assert!(m.contains("a.bin") || m.contains("b.idx") || m.contains("c.gz"), "{}", m);
            }
            if let Err(e) = folder::decode_rgb(p) { named(e, p) }
        }
    }

    #[test]
    fn cifar_round_trip(n in 1usize..5, seed in any::<u8>(), coarse in 0u8..20, fine in 0u8..100) {
        let dir = tempfile::tempdir().unwrap();
        let imgs: Vec<Vec<u8>> = (0..n).map(|i| (0..3072).map(|j| (j as u8) ^ seed ^ i as u8).collect()).collect();
        let p = dir.path().join("train.bin");
        cifar::write_records(&p, &vec![vec![coarse, fine]; n], &imgs).unwrap();
        let set = cifar::read_cifar100_files(&[&p], cifar::Cifar100Labels::Fine).unwrap();
        prop_assert_eq!(set.labels.clone(), Some(vec![fine as u16; n]));
        for (i, img) in imgs.iter().enumerate() {
            prop_assert_eq!(set.image(i), &img[..]);
        }
        let p10 = dir.path().join("data_batch_1.bin");
        cifar::write_records(&p10, &vec![vec![fine % 10]; n], &imgs).unwrap();
        prop_assert_eq!(cifar::read_cifar10_files(&[&p10]).unwrap().pixels, set.pixels);
    }

    #[test]
    fn idx_round_trip(n in 1u32..6, h in 1u32..9, w in 1u32..9, gz in any::<bool>(), seed in any::<u8>()) {
        let dir = tempfile::tempdir().unwrap();
        let px: Vec<u8> = (0..n * h * w).map(|i| (i as u8).wrapping_mul(seed)).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_add(seed) % 10).collect();
        let (xi, yi) = (dir.path().join("x"), dir.path().join("y"));
        idx::write_idx(&xi, &[n, h, w], &px, gz).unwrap();
        idx::write_idx(&yi, &[n], &labels, gz).unwrap();
        let set = idx::read_idx_pair(&xi, &yi, 10).unwrap();
        prop_assert_eq!(&set.pixels, &px);
        prop_assert_eq!(set.labels, Some(labels.iter().map(|&l| l as u16).collect()));
        prop_assert_eq!((set.height, set.width, set.channels), (h as usize, w as usize, 1));
    }

    #[test]
    fn stl10_round_trip(n in 1usize..3, seed in any::<u8>()) {
        let dir = tempfile::tempdir().unwrap();
        let imgs: Vec<Vec<u8>> = (0..n).map(|i| (0..96 * 96 * 3).map(|j| ((j * 31) as u8) ^ seed ^ i as u8).collect()).collect();
        let labels: Vec<u8> = (0..n as u8).map(|i| i.wrapping_add(seed) % 10).collect();
        let (x, y) = (dir.path().join("train_X.bin"), dir.path().join("train_y.bin"));
        stl10::write_stl10(&x, Some(&y), &imgs, &labels).unwrap();
        let set = stl10::read_stl10(&x, Some(&y)).unwrap();
        prop_assert_eq!(set.labels.clone(), Some(labels.iter().map(|&l| l as u16).collect()));
        for (i, img) in imgs.iter().enumerate() {
            prop_assert_eq!(set.image(i), &img[..]);
        }
    }

    #[test]
    fn png_folder_round_trip(n in 1usize..6, h in 1usize..12, w in 1usize..12, seed in any::<u8>()) {
        let dir = tempfile::tempdir().unwrap();
        let px: Vec<u8> = (0..n * h * w * 3).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
        let labels: Vec<u16> = (0..n as u16).map(|i| i % 2).collect();
        let set = ImageSet::new(h, w, 3, px, Some(labels)).unwrap();
        let classes = vec!["a".to_string(), "b".to_string()];
        folder::write_image_folder(dir.path(), &set, &classes).unwrap();
        let (back, names) = folder::read_image_folder(dir.path(), Some((h, w)), None).unwrap();
        prop_assert_eq!(back.len(), n);
        // Folder order groups by class: compare as multisets of (label, image).
        let mut a: Vec<(u16, Vec<u8>)> = (0..n).map(|i| (set.label(i).unwrap(), set.image(i).to_vec())).collect();
        let mut b: Vec<(u16, Vec<u8>)> = (0..n).map(|i| (back.label(i).unwrap(), back.image(i).to_vec())).collect();
        a.sort();
        b.sort();
        prop_assert_eq!(a, b);
        prop_assert!(names.len() <= 2);
    }
}
