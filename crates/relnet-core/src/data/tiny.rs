//! tiny-ImageNet (`tiny-imagenet-200/`): 200 classes of 64x64 images.
//!
//! * `wnids.txt`: the 200 WordNet ids. Class index = position of the wnid in sorted order
//!   (what torchvision's ImageFolder gives on `train/`, as the reference uses it).
//! * `train/<wnid>/images/*.JPEG` (500 per class; `<wnid>_boxes.txt` beside `images/` is unused).
//! * `val/images/*.JPEG` with `val/val_annotations.txt` (`<file>\t<wnid>\t<bbox...>`), or `val/`
//!   already sorted into `val/<wnid>/images/*` by the reference's helper script: both are read.
//!   The reference uses val as its test split (the official test split has no labels).
//! * `words.txt` (optional) gives readable names.

use std::collections::HashMap;
use std::path::Path;

use super::ImageSet;
use super::folder::{FileList, decode_files, image_files, list_class_folders};
use super::util::read_names;
use crate::error::{DataError, DataResult};

pub const SIDE: usize = 64;

/// The sorted wnids of `wnids.txt` (must be non-empty, no duplicates).
pub fn read_wnids(root: &Path) -> DataResult<Vec<String>> {
    let path = root.join("wnids.txt");
    let mut wnids = read_names(&path)?;
    if wnids.is_empty() {
        return Err(DataError::file(&path, "no class ids in file"));
    }
    wnids.sort();
    if let Some(w) = wnids.windows(2).find(|w| w[0] == w[1]) {
        return Err(DataError::file(&path, format!("class id {} listed twice", w[0])));
    }
    Ok(wnids)
}

/// Reads the train split (`train`) or the val split (`val`, used as test).
pub fn read_tiny(root: &Path, train: bool) -> DataResult<(ImageSet, Vec<String>)> {
    let wnids = read_wnids(root)?;
    let list = if train {
        let list = list_class_folders(&root.join("train"), "images")?;
        check_classes(&root.join("train"), &list, &wnids)?;
        list
    } else {
        let val = root.join("val");
        let ann = val.join("val_annotations.txt");
        if ann.is_file() {
            read_val_annotations(&val, &ann, &wnids)?
        } else {
            let list = list_class_folders(&val, "images")?;
            check_classes(&val, &list, &wnids)?;
            list
        }
    };
    let set = decode_files(&list.files, Some((SIDE, SIDE)))?;
    Ok((set, wnids))
}

fn check_classes(dir: &Path, list: &FileList, wnids: &[String]) -> DataResult<()> {
    if list.classes != wnids {
        return Err(DataError::file(
            dir,
            format!("class folders ({} of them) do not match the {} ids of wnids.txt", list.classes.len(), wnids.len()),
        ));
    }
    Ok(())
}

fn read_val_annotations(val: &Path, ann: &Path, wnids: &[String]) -> DataResult<FileList> {
    let index: HashMap<&str, u16> = wnids.iter().enumerate().map(|(i, w)| (w.as_str(), i as u16)).collect();
    let text = std::fs::read_to_string(ann).map_err(|e| DataError::io(ann, "cannot read", e))?;
    let mut by_file = HashMap::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut cols = line.split('\t');
        let (Some(file), Some(wnid)) = (cols.next(), cols.next()) else {
            return Err(DataError::file(ann, format!("line {}: expected <file>\\t<wnid>\\t...", n + 1)));
        };
        let Some(&label) = index.get(wnid) else {
            return Err(DataError::file(ann, format!("line {}: class id {wnid} is not in wnids.txt", n + 1)));
        };
        if by_file.insert(file.to_string(), label).is_some() {
            return Err(DataError::file(ann, format!("line {}: {file} annotated twice", n + 1)));
        }
    }
    let images = val.join("images");
    let mut files = Vec::new();
    for f in image_files(&images)? {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(label) = by_file.remove(&name) else {
            return Err(DataError::file(&f, format!("image has no line in {}", ann.display())));
        };
        files.push((f, label));
    }
    if let Some(missing) = by_file.keys().next() {
        return Err(DataError::file(images.join(missing), format!("annotated in {} but missing", ann.display())));
    }
    Ok(FileList { classes: wnids.to_vec(), files })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::folder::save_png;

    fn px(v: u8) -> Vec<u8> {
        vec![v; SIDE * SIDE * 3]
    }

    /// Writes a 2-class tiny-ImageNet in the official layout (PNG bytes in .JPEG names decode
    /// fine: the decoder looks at content, not extension).
    fn make(root: &Path) {
        std::fs::write(root.join("wnids.txt"), "n02\nn01\n").unwrap();
        for (w, v) in [("n01", 10u8), ("n02", 200)] {
            let d = root.join("train").join(w).join("images");
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..2 {
                save_png(&d.join(format!("{w}_{i}.JPEG")), SIDE, SIDE, 3, &px(v + i)).unwrap();
            }
            std::fs::write(root.join("train").join(w).join(format!("{w}_boxes.txt")), "").unwrap();
        }
        let vi = root.join("val/images");
        std::fs::create_dir_all(&vi).unwrap();
        save_png(&vi.join("val_0.JPEG"), SIDE, SIDE, 3, &px(201)).unwrap();
        save_png(&vi.join("val_1.JPEG"), SIDE, SIDE, 3, &px(11)).unwrap();
        std::fs::write(
            root.join("val/val_annotations.txt"),
            "val_0.JPEG\tn02\t0\t0\t10\t10\nval_1.JPEG\tn01\t1\t2\t3\t4\n",
        )
        .unwrap();
    }

    #[test]
    fn train_and_val_official_layout() {
        let dir = tempfile::tempdir().unwrap();
        make(dir.path());
        let (train, classes) = read_tiny(dir.path(), true).unwrap();
        assert_eq!(classes, vec!["n01", "n02"]);
        assert_eq!(train.labels, Some(vec![0, 0, 1, 1]));
        assert_eq!(train.image(2)[0], 200);
        let (val, _) = read_tiny(dir.path(), false).unwrap();
        assert_eq!(val.labels, Some(vec![1, 0]));
        assert_eq!(val.image(0)[0], 201);
    }

    #[test]
    fn val_errors() {
        let dir = tempfile::tempdir().unwrap();
        make(dir.path());
        let ann = dir.path().join("val/val_annotations.txt");
        std::fs::write(&ann, "val_0.JPEG\tn02\n").unwrap();
        let e = read_tiny(dir.path(), false).unwrap_err().to_string();
        assert!(e.contains("val_1.JPEG") && e.contains("no line"), "{e}");
        std::fs::write(&ann, "val_0.JPEG\tn09\nval_1.JPEG\tn01\n").unwrap();
        assert!(read_tiny(dir.path(), false).unwrap_err().to_string().contains("n09 is not in wnids.txt"));
        std::fs::write(&ann, "val_0.JPEG\tn02\nval_1.JPEG\tn01\nval_2.JPEG\tn01\n").unwrap();
        assert!(read_tiny(dir.path(), false).unwrap_err().to_string().contains("val_2.JPEG: annotated"));
        std::fs::write(dir.path().join("wnids.txt"), "n01\n").unwrap();
        assert!(read_tiny(dir.path(), true).unwrap_err().to_string().contains("do not match"));
    }
}
