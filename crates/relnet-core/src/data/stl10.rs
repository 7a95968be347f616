//! STL-10 binary layout (`stl10_binary/`).
//!
//! `{train,test,unlabeled}_X.bin` hold 96x96x3 images, each stored channel by channel and,
//! within a channel, **column-major** (the format was written from MATLAB). `{train,test}_y.bin`
//! hold one label byte per image, **1-based** (1..=10); relnet stores them 0-based.

use std::path::Path;

use super::ImageSet;
use super::util::{check_label, for_each_record, optional_names};
use crate::error::{DataError, DataResult};

pub const SIDE: usize = 96;
const IMAGE: usize = SIDE * SIDE * 3;

/// The STL-10 class names in label order (0-based).
pub const STL10_CLASSES: [&str; 10] =
    ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"];

/// Reads `X` (images) and, when given, `y` (1-based labels) of one STL-10 split.
pub fn read_stl10(x_path: &Path, y_path: Option<&Path>) -> DataResult<ImageSet> {
    let labels = match y_path {
        Some(y) => Some(read_labels(y)?),
        None => None,
    };
    let mut pixels = Vec::new();
    if let Ok(m) = std::fs::metadata(x_path) {
        pixels.reserve_exact(m.len() as usize);
    }
    let n = for_each_record(x_path, IMAGE, "STL-10 image", |_, rec| {
        push_column_major(&mut pixels, rec);
        Ok(())
    })?;
    if let (Some(l), Some(y)) = (&labels, y_path)
        && l.len() != n
    {
        return Err(DataError::file(y, format!("{} labels but {} holds {n} images", l.len(), x_path.display())));
    }
    ImageSet::new(SIDE, SIDE, 3, pixels, labels)
}

fn read_labels(path: &Path) -> DataResult<Vec<u16>> {
    let mut labels = Vec::new();
    for_each_record(path, 1, "STL-10 label", |i, rec| {
        if rec[0] == 0 {
            return Err(DataError::file(
                path,
                format!("record {i}: label 0 out of range (STL-10 labels are 1-based, 1..=10)"),
            ));
        }
        labels.push(check_label(path, i, rec[0] as u32 - 1, 10)?);
        Ok(())
    })?;
    Ok(labels)
}

/// Appends one image stored as 3 column-major planes as HWC.
fn push_column_major(out: &mut Vec<u8>, rec: &[u8]) {
    let plane = SIDE * SIDE;
    for row in 0..SIDE {
        for col in 0..SIDE {
            for ch in 0..3 {
                out.push(rec[ch * plane + col * SIDE + row]);
            }
        }
    }
}

/// Class names from `class_names.txt` if present, else the standard list.
pub fn class_names(dir: &Path) -> Vec<String> {
    optional_names(&dir.join("class_names.txt"), 10)
        .unwrap_or_else(|| STL10_CLASSES.iter().map(|s| s.to_string()).collect())
}

/// Writes images (HWC 96x96x3) and optional 0-based labels in the official STL-10 layout.
pub fn write_stl10(x_path: &Path, y_path: Option<&Path>, images: &[Vec<u8>], labels: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(images.len() * IMAGE);
    for img in images {
        for ch in 0..3 {
            for col in 0..SIDE {
                for row in 0..SIDE {
                    out.push(img[(row * SIDE + col) * 3 + ch]);
                }
            }
        }
    }
    std::fs::write(x_path, out)?;
    if let Some(y) = y_path {
        std::fs::write(y, labels.iter().map(|l| l + 1).collect::<Vec<u8>>())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_major_and_one_based_labels() {
        let dir = tempfile::tempdir().unwrap();
        let x = dir.path().join("train_X.bin");
        let y = dir.path().join("train_y.bin");
        // By hand: in channel 0, byte index col*96+row. Put 200 at row 1, col 0 (index 1) and
        // 100 at row 0, col 1 (index 96): after reading, pixel (1,0) red is 200, (0,1) red is 100.
        let mut rec = vec![0u8; IMAGE];
        rec[1] = 200;
        rec[96] = 100;
        rec[2 * SIDE * SIDE] = 55; // blue of (0,0)
        std::fs::write(&x, &rec).unwrap();
        std::fs::write(&y, [10u8]).unwrap();
        let set = read_stl10(&x, Some(&y)).unwrap();
        assert_eq!(set.labels, Some(vec![9]));
        let img = set.image(0);
        assert_eq!(img[(SIDE) * 3], 200);
        assert_eq!(img[3], 100);
        assert_eq!(img[2], 55);

        let imgs: Vec<Vec<u8>> = (0..3).map(|s| (0..IMAGE).map(|i| (i * 7 + s * 13) as u8).collect()).collect();
        write_stl10(&x, Some(&y), &imgs, &[0, 4, 9]).unwrap();
        let set = read_stl10(&x, Some(&y)).unwrap();
        assert_eq!(set.labels, Some(vec![0, 4, 9]));
        for (i, img) in imgs.iter().enumerate() {
            assert_eq!(set.image(i), &img[..]);
        }
        let unl = read_stl10(&x, None).unwrap();
        assert_eq!(unl.labels, None);
        assert_eq!(unl.len(), 3);
    }

    #[test]
    fn bad_labels_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let x = dir.path().join("test_X.bin");
        let y = dir.path().join("test_y.bin");
        std::fs::write(&x, vec![0u8; IMAGE * 2]).unwrap();
        std::fs::write(&y, [0u8, 1]).unwrap();
        let e = read_stl10(&x, Some(&y)).unwrap_err().to_string();
        assert!(e.contains("test_y.bin") && e.contains("1-based"), "{e}");
        std::fs::write(&y, [11u8, 1]).unwrap();
        assert!(read_stl10(&x, Some(&y)).unwrap_err().to_string().contains("label 10 out of range"));
        std::fs::write(&y, [1u8, 1, 1]).unwrap();
        let e = read_stl10(&x, Some(&y)).unwrap_err().to_string();
        assert!(e.contains("3 labels but") && e.contains("2 images"), "{e}");
        std::fs::write(&x, vec![0u8; IMAGE + 1]).unwrap();
        assert!(read_stl10(&x, None).unwrap_err().to_string().contains("not a whole number"));
    }
}
