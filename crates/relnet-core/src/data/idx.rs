//! MNIST-style IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed.
//!
//! Header: two zero bytes, a type byte (only `0x08`, unsigned byte, is used by these datasets),
//! the number of dimensions, then one big-endian u32 per dimension. Image files are 3-D
//! (`n x rows x cols`, magic `0x00000803`), label files 1-D (`n`, magic `0x00000801`).
//!
//! The size the header claims is checked against the data actually present before any large
//! allocation, so a corrupt header (say 10^12 images) is an error, not an out-of-memory.
//! Images are returned with 1 channel; the registry replicates them to 3 (see `ImageSet::into_rgb`).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::ImageSet;
use crate::error::{DataError, DataResult};

/// Larger than any IDX dataset relnet knows (Fashion-MNIST train is 47 MB), far below memory.
const MAX_BYTES: u64 = 1 << 34;

/// Reads an IDX image file and its label file into an [`ImageSet`] with 1 channel.
pub fn read_idx_pair(images: &Path, labels: &Path, num_classes: u32) -> DataResult<ImageSet> {
    let (dims, pixels) = read_idx(images, 3)?;
    let (ldims, lbytes) = read_idx(labels, 1)?;
    if ldims[0] != dims[0] {
        return Err(DataError::file(
            labels,
            format!("{} labels but {} holds {} images", ldims[0], images.display(), dims[0]),
        ));
    }
    let mut out = Vec::with_capacity(lbytes.len());
    for (i, &l) in lbytes.iter().enumerate() {
        out.push(super::util::check_label(labels, i, l as u32, num_classes)?);
    }
    ImageSet::new(dims[1], dims[2], 1, pixels, Some(out))
}

/// Reads an IDX file of unsigned bytes with `ndim` dimensions: returns the dims and the data.
pub fn read_idx(path: &Path, ndim: usize) -> DataResult<(Vec<usize>, Vec<u8>)> {
    let file = File::open(path).map_err(|e| DataError::io(path, "cannot open", e))?;
    let file_len = file.metadata().map_err(|e| DataError::io(path, "cannot stat", e))?.len();
    let mut raw = BufReader::new(file);
    let mut magic2 = [0u8; 2];
    raw.read_exact(&mut magic2).map_err(|e| DataError::io(path, "reading the IDX header", e))?;
    let gz = magic2 == [0x1f, 0x8b];
    let chained = std::io::Cursor::new(magic2).chain(raw);
    let mut reader: Box<dyn Read> =
        if gz { Box::new(flate2::read::MultiGzDecoder::new(chained)) } else { Box::new(chained) };
    let mut head = [0u8; 4];
    reader.read_exact(&mut head).map_err(|e| gz_io(path, gz, "reading the IDX header", e))?;
    if head[0] != 0 || head[1] != 0 {
        return Err(DataError::file(
            path,
            format!("bad magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file", head[0], head[1], head[2], head[3]),
        ));
    }
    if head[2] != 0x08 {
        return Err(DataError::file(
            path,
            format!("IDX data type 0x{:02x} not supported (expected 0x08, unsigned byte)", head[2]),
        ));
    }
    if head[3] as usize != ndim {
        return Err(DataError::file(
            path,
            format!("IDX file has {} dimensions, expected {ndim} (magic 0x0000080{ndim})", head[3]),
        ));
    }
    let mut dims = Vec::with_capacity(ndim);
    let mut total: u64 = 1;
    for _ in 0..ndim {
        let mut d = [0u8; 4];
        reader.read_exact(&mut d).map_err(|e| gz_io(path, gz, "reading the IDX header", e))?;
        let d = u32::from_be_bytes(d) as u64;
        dims.push(d as usize);
        total = total.saturating_mul(d);
    }
    if dims.contains(&0) {
        return Err(DataError::file(path, format!("IDX header has a zero dimension: {dims:?}")));
    }
    if total > MAX_BYTES {
        return Err(DataError::file(
            path,
            format!("IDX header claims {dims:?} = {total} bytes of data: absurd, the file is corrupt"),
        ));
    }
    let header = 4 + 4 * ndim as u64;
    if !gz && file_len != header + total {
        let have = file_len.saturating_sub(header);
        let problem = if have < total { "truncated" } else { "has trailing bytes" };
        return Err(DataError::file(
            path,
            format!("header claims {dims:?} = {total} bytes of data but the file holds {have}: {problem}"),
        ));
    }
    // For gzip the decompressed size is unknown until read: read at most total+1 bytes, growing
    // the buffer as data arrives, so a lying header cannot make us allocate its claim.
    let mut data = Vec::with_capacity(if gz { total.min(file_len.saturating_mul(8)) as usize } else { total as usize });
    reader.take(total + 1).read_to_end(&mut data).map_err(|e| gz_io(path, gz, "reading IDX data", e))?;
    if data.len() as u64 != total {
        let problem = if (data.len() as u64) < total { "truncated" } else { "has trailing bytes" };
        return Err(DataError::file(
            path,
            format!(
                "header claims {dims:?} = {total} bytes of data but the file holds {}{}: {problem}",
                data.len(),
                if gz { "+" } else { "" }
            ),
        ));
    }
    Ok((dims, data))
}

fn gz_io(path: &Path, gz: bool, what: &str, e: std::io::Error) -> DataError {
    if gz && e.kind() != std::io::ErrorKind::UnexpectedEof {
        DataError::file(path, format!("{what}: corrupt gzip stream ({e})"))
    } else {
        DataError::io(path, what, e)
    }
}

/// Finds `<dir>/<stem>` or `<dir>/<stem>.gz` (raw preferred).
pub fn find_idx(dir: &Path, stem: &str) -> Option<PathBuf> {
    [dir.join(stem), dir.join(format!("{stem}.gz"))].into_iter().find(|p| p.is_file())
}

/// The four file stems of an MNIST-style dataset: (images, labels) for train, then for test.
pub const TRAIN_STEMS: (&str, &str) = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte");
pub const TEST_STEMS: (&str, &str) = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");

/// Writes an IDX u8 file (gzip-compressed when `gz`), for tests and conversions.
pub fn write_idx(path: &Path, dims: &[u32], data: &[u8], gz: bool) -> std::io::Result<()> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    if gz {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes)?;
        bytes = enc.finish()?;
    }
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_raw_and_gz() {
        let dir = tempfile::tempdir().unwrap();
        for gz in [false, true] {
            let xi = dir.path().join(format!("i{gz}"));
            let yi = dir.path().join(format!("l{gz}"));
            let px: Vec<u8> = (0..3 * 4 * 5).map(|i| i as u8).collect();
            write_idx(&xi, &[3, 4, 5], &px, gz).unwrap();
            write_idx(&yi, &[3], &[7, 0, 9], gz).unwrap();
            let set = read_idx_pair(&xi, &yi, 10).unwrap();
            assert_eq!((set.len(), set.height, set.width, set.channels), (3, 4, 5, 1));
            assert_eq!(set.pixels, px);
            assert_eq!(set.labels, Some(vec![7, 0, 9]));
        }
    }

    #[test]
    fn bad_headers_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train-images-idx3-ubyte");
        let err = |bytes: &[u8]| {
            std::fs::write(&p, bytes).unwrap();
            read_idx(&p, 3).unwrap_err().to_string()
        };
        assert!(err(&[1, 0, 8, 3]).contains("bad magic"));
        assert!(err(&[0, 0, 0x0d, 3]).contains("data type 0x0d"));
        assert!(err(&[0, 0, 8, 1, 0, 0, 0, 1, 5]).contains("1 dimensions, expected 3"));
        assert!(err(&[0, 0]).contains("truncated"));
        // 10^12 images of 28x28: refused from the header alone.
        let mut absurd = vec![0, 0, 8, 3];
        absurd.extend_from_slice(&(1_000_000_000u32).to_be_bytes());
        absurd.extend_from_slice(&1000u32.to_be_bytes());
        absurd.extend_from_slice(&784u32.to_be_bytes());
        let e = err(&absurd);
        assert!(e.contains("absurd") && e.contains("train-images-idx3-ubyte"), "{e}");
        let mut short = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
        short.extend_from_slice(&[0; 7]);
        assert!(err(&short).contains("truncated"));
        short.extend_from_slice(&[0; 2]);
        assert!(err(&short).contains("trailing"));
    }

    #[test]
    fn gz_lies_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gz");
        // Header claims 4000 x 1000 x 1000 = 4e9 bytes (under the absurd cap), gz holds 8.
        write_idx(&p, &[4000, 1000, 1000], &[1; 8], true).unwrap();
        let e = read_idx(&p, 3).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        bytes.truncate(n - 3);
        std::fs::write(&p, bytes).unwrap();
        assert!(read_idx(&p, 3).is_err());
    }

    #[test]
    fn label_count_and_range() {
        let dir = tempfile::tempdir().unwrap();
        let xi = dir.path().join("i");
        let yi = dir.path().join("l");
        write_idx(&xi, &[2, 1, 1], &[0, 0], false).unwrap();
        write_idx(&yi, &[3], &[0, 0, 0], false).unwrap();
        assert!(read_idx_pair(&xi, &yi, 10).unwrap_err().to_string().contains("3 labels but"));
        write_idx(&yi, &[2], &[0, 10], false).unwrap();
        let e = read_idx_pair(&xi, &yi, 10).unwrap_err().to_string();
        assert!(e.contains("record 1: label 10 out of range"), "{e}");
    }
}
