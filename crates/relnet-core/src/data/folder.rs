//! Image folders: `<split dir>/<class>/<image>`, class index = position of the class folder name
//! in byte-wise sorted order (as torchvision's `ImageFolder`). Used for the CIFAR-10 JPEG layout,
//! SlimageNet64, tiny-ImageNet's train split and any `folder:<path>` dataset.
//!
//! Rules: hidden entries (names starting with `.`) are ignored; every other file in a class folder
//! must decode as an image (PNG or JPEG) of the split's size, else the load fails naming the file.
//! Grey or RGBA images are converted to RGB. An empty class folder is an error.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::ImageSet;
use super::util::is_hidden;
use crate::error::{DataError, DataResult};

/// A list of image files with their labels, plus the class names (index = label).
#[derive(Clone, Debug, Default)]
pub struct FileList {
    pub classes: Vec<String>,
    pub files: Vec<(PathBuf, u16)>,
}

/// Sorted, non-hidden entries of a folder.
pub(crate) fn sorted_entries(dir: &Path) -> DataResult<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, "cannot list folder", e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| DataError::io(dir, "cannot list folder", e))?;
        if !is_hidden(&entry.file_name()) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Image files directly inside `dir` (sorted). Sub-folders are an error; an empty folder too.
pub(crate) fn image_files(dir: &Path) -> DataResult<Vec<PathBuf>> {
    let entries = sorted_entries(dir)?;
    if entries.is_empty() {
        return Err(DataError::file(dir, "class folder is empty"));
    }
    for e in &entries {
        if e.is_dir() {
            return Err(DataError::file(e, "unexpected folder inside a class folder (expected image files only)"));
        }
    }
    Ok(entries)
}

/// Lists `<dir>/<class>/<inner>/*` (inner is empty for plain image folders).
pub fn list_class_folders(dir: &Path, inner: &str) -> DataResult<FileList> {
    if !dir.is_dir() {
        return Err(DataError::file(dir, "not a folder"));
    }
    let mut list = FileList::default();
    for class_dir in sorted_entries(dir)? {
        let name = class_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !class_dir.is_dir() {
            return Err(DataError::file(&class_dir, "unexpected file: a split folder holds only class folders"));
        }
        let label =
            u16::try_from(list.classes.len()).map_err(|_| DataError::file(dir, "more than 65535 class folders"))?;
        let images_dir = if inner.is_empty() { class_dir.clone() } else { class_dir.join(inner) };
        for f in image_files(&images_dir)? {
            list.files.push((f, label));
        }
        list.classes.push(name);
    }
    if list.classes.is_empty() {
        return Err(DataError::file(dir, "no class folders found (expected <split>/<class>/<image files>)"));
    }
    Ok(list)
}

/// Decodes one image file to RGB, returning (height, width, pixels).
pub fn decode_rgb(path: &Path) -> DataResult<(usize, usize, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, "cannot read", e))?;
    let img =
        image::load_from_memory(&bytes).map_err(|e| DataError::file(path, format!("not a readable image ({e})")))?;
    let rgb = img.to_rgb8();
    Ok((rgb.height() as usize, rgb.width() as usize, rgb.into_raw()))
}

/// Decodes all files in parallel into one [`ImageSet`]. Every image must be `size` (height,
/// width); when `size` is `None` the first image's size is required of all.
pub fn decode_files(files: &[(PathBuf, u16)], size: Option<(usize, usize)>) -> DataResult<ImageSet> {
    let Some((first, _)) = files.first() else {
        return Err(DataError::Invalid("no image files to read".into()));
    };
    let (h, w) = match size {
        Some(s) => s,
        None => {
            let (h, w, _) = decode_rgb(first)?;
            (h, w)
        }
    };
    let per = h * w * 3;
    let mut pixels = vec![0u8; files.len() * per];
    pixels.par_chunks_mut(per).zip(files.par_iter()).try_for_each(|(dst, (path, _))| {
        let (ih, iw, px) = decode_rgb(path)?;
        if (ih, iw) != (h, w) {
            return Err(DataError::file(
                path,
                format!("image is {iw}x{ih} (width x height), expected {w}x{h} like the rest of the split"),
            ));
        }
        dst.copy_from_slice(&px);
        Ok(())
    })?;
    let labels = files.iter().map(|(_, l)| *l).collect();
    ImageSet::new(h, w, 3, pixels, Some(labels))
}

/// Reads an image-folder split. When `expected_classes` is given, the class folders must be
/// exactly those names (labels then follow that list's order).
pub fn read_image_folder(
    dir: &Path,
    size: Option<(usize, usize)>,
    expected_classes: Option<&[&str]>,
) -> DataResult<(ImageSet, Vec<String>)> {
    let mut list = list_class_folders(dir, "")?;
    if let Some(expected) = expected_classes {
        if list.classes.len() != expected.len() || list.classes.iter().zip(expected).any(|(a, b)| a != b) {
            return Err(DataError::file(
                dir,
                format!("class folders are {:?}, expected exactly {expected:?}", list.classes),
            ));
        }
        list.classes = expected.iter().map(|s| s.to_string()).collect();
    }
    let set = decode_files(&list.files, size)?;
    Ok((set, list.classes))
}

/// Writes an [`ImageSet`] as PNG files `<dir>/<class>/<index>.png` (tests, exports).
pub fn write_image_folder(dir: &Path, set: &ImageSet, classes: &[String]) -> DataResult<()> {
    for i in 0..set.len() {
        let class = &classes[set.label(i).unwrap_or(0) as usize];
        let d = dir.join(class);
        std::fs::create_dir_all(&d).map_err(|e| DataError::io(&d, "cannot create folder", e))?;
        let p = d.join(format!("{i:05}.png"));
        save_png(&p, set.width, set.height, set.channels, set.image(i))?;
    }
    Ok(())
}

/// Saves an 8-bit grey or RGB image as PNG.
pub fn save_png(path: &Path, width: usize, height: usize, channels: usize, px: &[u8]) -> DataResult<()> {
    let color = if channels == 1 { image::ExtendedColorType::L8 } else { image::ExtendedColorType::Rgb8 };
    image::save_buffer_with_format(path, px, width as u32, height as u32, color, image::ImageFormat::Png)
        .map_err(|e| DataError::file(path, format!("cannot write PNG: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(h: usize, w: usize, v: u8) -> Vec<u8> {
        (0..h * w * 3).map(|i| v.wrapping_add(i as u8)).collect()
    }

    #[test]
    fn png_folder_round_trip_sorted_classes() {
        let dir = tempfile::tempdir().unwrap();
        let classes = vec!["b_cls".to_string(), "a_cls".to_string()];
        let mut px = img(4, 5, 0);
        px.extend(img(4, 5, 100));
        px.extend(img(4, 5, 200));
        let set = ImageSet::new(4, 5, 3, px, Some(vec![0, 1, 0])).unwrap();
        write_image_folder(dir.path(), &set, &classes).unwrap();
        std::fs::write(dir.path().join("a_cls/.DS_Store"), b"junk").unwrap();
        let (back, names) = read_image_folder(dir.path(), None, None).unwrap();
        // Sorted: a_cls = 0 holds image 1; b_cls = 1 holds images 0 and 2.
        assert_eq!(names, vec!["a_cls", "b_cls"]);
        assert_eq!(back.labels, Some(vec![0, 1, 1]));
        assert_eq!(back.image(0), set.image(1));
        assert_eq!(back.image(1), set.image(0));
        assert_eq!(back.image(2), set.image(2));
    }

    #[test]
    fn folder_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let set = ImageSet::new(4, 4, 3, img(4, 4, 1), Some(vec![0])).unwrap();
        write_image_folder(dir.path(), &set, &["cat".to_string()]).unwrap();
        let err = |size| read_image_folder(dir.path(), size, None).unwrap_err().to_string();
        assert!(err(Some((8, 8))).contains("expected 8x8"));

        std::fs::write(dir.path().join("cat/notes.txt"), b"hello").unwrap();
        let e = err(None);
        assert!(e.contains("notes.txt") && e.contains("not a readable image"), "{e}");
        std::fs::remove_file(dir.path().join("cat/notes.txt")).unwrap();

        std::fs::create_dir(dir.path().join("dog")).unwrap();
        let e = err(None);
        assert!(e.contains("dog") && e.contains("class folder is empty"), "{e}");

        std::fs::remove_dir(dir.path().join("dog")).unwrap();
        let e = read_image_folder(dir.path(), None, Some(&["cat", "dog", "emu"])).unwrap_err().to_string();
        assert!(e.contains("expected exactly"), "{e}");

        std::fs::write(dir.path().join("stray.png"), b"x").unwrap();
        assert!(err(None).contains("only class folders"));
        assert!(
            read_image_folder(&dir.path().join("nowhere"), None, None)
                .unwrap_err()
                .to_string()
                .contains("not a folder")
        );
    }

    #[test]
    fn truncated_png_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let set = ImageSet::new(8, 8, 3, img(8, 8, 3), Some(vec![0])).unwrap();
        write_image_folder(dir.path(), &set, &["x".to_string()]).unwrap();
        let p = dir.path().join("x/00000.png");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let e = read_image_folder(dir.path(), None, None).unwrap_err().to_string();
        assert!(e.contains("00000.png"), "{e}");
    }
}
