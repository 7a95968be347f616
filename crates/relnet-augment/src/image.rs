//! The image type the transforms work on: 8-bit RGB, channels last.

/// An 8-bit RGB image, row-major, channels last (`height * width * 3` bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), width * height * 3, "RgbImage: {width}x{height}x3 needs {} bytes", width * height * 3);
        RgbImage { width, height, data }
    }

    pub fn from_slice(width: usize, height: usize, data: &[u8]) -> Self {
        Self::new(width, height, data.to_vec())
    }

    pub fn zeros(width: usize, height: usize) -> Self {
        RgbImage { width, height, data: vec![0; width * height * 3] }
    }

    #[inline]
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let o = (y * self.width + x) * 3;
        [self.data[o], self.data[o + 1], self.data[o + 2]]
    }
}

/// PIL's RGB -> L (ITU-R 601-2 luma, 16-bit fixed point, rounded).
#[inline]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}
