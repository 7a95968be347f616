//! Every registered dataset read through the registry from the layout an official archive
//! gives under the data root, with small files written here in the exact original formats.

use std::path::Path;

use relnet_core::data::registry::lookup;
use relnet_core::data::{DataRoot, ImageSet, Split, cifar, folder, stl10};
use relnet_tests::relnet;

fn px(n: usize, side: usize, seed: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| (0..side * side * 3).map(|j| (j as u8).wrapping_add(seed).wrapping_mul(i as u8 + 1)).collect())
        .collect()
}

fn root_of(dir: &Path) -> DataRoot {
    DataRoot(dir.to_path_buf())
}

#[test]
fn cifar100_fine_and_coarse_with_label_names() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cifar-100-binary");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["train.bin", "test.bin"] {
        cifar::write_records(&dir.join(f), &[vec![3, 42], vec![19, 99]], &px(2, 32, 1)).unwrap();
    }
    let coarse: String = (0..20).map(|i| format!("super_{i}\n")).collect();
    std::fs::write(dir.join("coarse_label_names.txt"), coarse).unwrap();
    let fine = lookup("cifar100").unwrap().load(Split::Train, &root_of(root.path())).unwrap();
    assert_eq!(fine.images.labels, Some(vec![42, 99]));
    assert_eq!(fine.classes.len(), 100);
    let c = lookup("cifar100-20").unwrap().load(Split::Test, &root_of(root.path())).unwrap();
    assert_eq!(c.images.labels, Some(vec![3, 19]));
    assert_eq!(c.classes[19], "super_19");
    assert_eq!(c.images.pixels, fine.images.pixels);
}

#[test]
fn stl10_three_splits_and_info() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("stl10_binary");
    std::fs::create_dir_all(&dir).unwrap();
    stl10::write_stl10(&dir.join("train_X.bin"), Some(&dir.join("train_y.bin")), &px(3, 96, 2), &[0, 1, 9]).unwrap();
    stl10::write_stl10(&dir.join("test_X.bin"), Some(&dir.join("test_y.bin")), &px(2, 96, 3), &[5, 5]).unwrap();
    stl10::write_stl10(&dir.join("unlabeled_X.bin"), None, &px(4, 96, 4), &[]).unwrap();
    let info = lookup("stl10").unwrap();
    assert_eq!(info.pretrain_split, Split::Unlabeled);
    let unl = info.load(Split::Unlabeled, &root_of(root.path())).unwrap();
    assert_eq!((unl.images.len(), unl.images.labels.clone()), (4, None));
    assert_eq!(unl.images.image(3), &px(4, 96, 4)[3][..]);
    let r = relnet(&["data", "info", "stl10", "--data-root", root.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("split unlabeled: 4 images") && r.stdout.contains("unlabelled"), "{}", r.stdout);
    assert!(r.stdout.contains("96x96x3") && r.stdout.contains("split train: 3 images"), "{}", r.stdout);
}

#[test]
fn tiny_imagenet_official_and_sorted_val() {
    let root = tempfile::tempdir().unwrap();
    let t = root.path().join("tiny-imagenet-200");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("wnids.txt"), "n09\nn01\n").unwrap();
    let imgs = px(2, 64, 5);
    for (k, w) in ["n01", "n09"].iter().enumerate() {
        let d = t.join("train").join(w).join("images");
        std::fs::create_dir_all(&d).unwrap();
        folder::save_png(&d.join(format!("{w}_0.JPEG")), 64, 64, 3, &imgs[k]).unwrap();
        // The val split as the reference's helper script sorts it: val/<wnid>/images/*.
        let v = t.join("val").join(w).join("images");
        std::fs::create_dir_all(&v).unwrap();
        folder::save_png(&v.join("val_0.JPEG"), 64, 64, 3, &imgs[1 - k]).unwrap();
    }
    let info = lookup("tiny-imagenet").unwrap();
    let train = info.load(Split::Train, &root_of(root.path())).unwrap();
    assert_eq!(train.classes, vec!["n01", "n09"]);
    assert_eq!(train.images.labels, Some(vec![0, 1]));
    let val = info.load(Split::Test, &root_of(root.path())).unwrap();
    assert_eq!(val.images.image(0), &imgs[1][..]);
}

#[test]
fn slimagenet64_and_any_folder() {
    let root = tempfile::tempdir().unwrap();
    let classes: Vec<String> = (0..1000).map(|i| format!("c{i:04}")).collect();
    for split in ["train", "test"] {
        let labels: Vec<u16> = (0..1000).collect();
        let set = ImageSet::new(64, 64, 3, vec![9u8; 1000 * 64 * 64 * 3], Some(labels)).unwrap();
        folder::write_image_folder(&root.path().join("slimagenet64").join(split), &set, &classes).unwrap();
    }
    let s = lookup("slim").unwrap().load(Split::Test, &root_of(root.path())).unwrap();
    assert_eq!((s.images.len(), s.classes.len()), (1000, 1000));
    assert_eq!(s.images.label(999), Some(999));

    // Any image folder, by path; sizes are taken from the first image; stats from the data.
    let f = root.path().join("mine");
    let set = ImageSet::new(10, 12, 3, vec![51u8; 3 * 360], Some(vec![0, 1, 1])).unwrap();
    for split in ["train", "test"] {
        folder::write_image_folder(&f.join(split), &set, &["a".into(), "b".into()]).unwrap();
    }
    let name = format!("folder:{}", f.display());
    let info = lookup(&name).unwrap();
    let tr = info.load(Split::Train, &root_of(Path::new("/nonexistent"))).unwrap();
    assert_eq!((tr.images.height, tr.images.width, tr.images.len()), (10, 12, 3));
    let (mean, _) = info.norm_stats(&root_of(Path::new("/nonexistent"))).unwrap();
    assert!((mean[0] - 0.2).abs() < 1e-6);
    let r = relnet(&["data", "info", &name]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("10x12x3") && r.stdout.contains("classes (2): a, b"), "{}", r.stdout);
}
