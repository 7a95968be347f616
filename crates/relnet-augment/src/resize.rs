//! Bilinear resampling with PIL's algorithm (what torchvision does to PIL images): a separable
//! triangle filter whose support widens when downsampling (antialiasing), 22-bit fixed-point
//! coefficients, horizontal pass then vertical, each rounded to 8 bits.

use crate::image::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: the first input index and the fixed-point weights.
struct Coeffs {
    start: Vec<usize>,
    len: Vec<usize>,
    ksize: usize,
    k: Vec<i32>,
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

fn coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // triangle support is 1
    let ksize = support.ceil() as usize * 2 + 1;
    let mut c = Coeffs {
        start: Vec::with_capacity(out_size),
        len: Vec::with_capacity(out_size),
        ksize,
        k: vec![0; out_size * ksize],
    };
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut total = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            *wx = triangle((x as f64 + xmin as f64 - center + 0.5) * ss);
            total += *wx;
        }
        for (k, &wx) in c.k[xx * ksize..xx * ksize + n].iter_mut().zip(&w[..n]) {
            let v = if total != 0.0 { wx / total } else { 0.0 };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            *k = if v < 0.0 { (f - 0.5) as i32 } else { (f + 0.5) as i32 };
        }
        c.start.push(xmin);
        c.len.push(n);
    }
    c
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes the `(x0, y0, w, h)` box of `src` to `out_w x out_h` (the box must lie inside `src`).
/// Equal sizes are copied exactly, as in PIL.
pub fn resize_bilinear(src: &RgbImage, bx: (usize, usize, usize, usize), out_w: usize, out_h: usize) -> RgbImage {
    let (x0, y0, bw, bh) = bx;
    debug_assert!(x0 + bw <= src.width && y0 + bh <= src.height && bw > 0 && bh > 0);
    // Horizontal pass: box rows, bw -> out_w columns.
    let mut mid = vec![0u8; bh * out_w * 3];
    if bw == out_w {
        for y in 0..bh {
            let s = ((y0 + y) * src.width + x0) * 3;
            mid[y * out_w * 3..(y + 1) * out_w * 3].copy_from_slice(&src.data[s..s + bw * 3]);
        }
    } else {
        let c = coeffs(bw, out_w);
        for y in 0..bh {
            let row = &src.data[((y0 + y) * src.width + x0) * 3..((y0 + y) * src.width + x0 + bw) * 3];
            let out = &mut mid[y * out_w * 3..(y + 1) * out_w * 3];
            for xx in 0..out_w {
                let k = &c.k[xx * c.ksize..xx * c.ksize + c.len[xx]];
                let base = c.start[xx] * 3;
                let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
                for (i, &w) in k.iter().enumerate() {
                    let p = base + i * 3;
                    acc[0] += row[p] as i32 * w;
                    acc[1] += row[p + 1] as i32 * w;
                    acc[2] += row[p + 2] as i32 * w;
                }
                out[xx * 3] = clip8(acc[0]);
                out[xx * 3 + 1] = clip8(acc[1]);
                out[xx * 3 + 2] = clip8(acc[2]);
            }
        }
    }
    if bh == out_h {
        return RgbImage { width: out_w, height: out_h, data: mid };
    }
    // Vertical pass: bh -> out_h rows.
    let c = coeffs(bh, out_h);
    let stride = out_w * 3;
    let mut data = vec![0u8; out_h * stride];
    for yy in 0..out_h {
        let k = &c.k[yy * c.ksize..yy * c.ksize + c.len[yy]];
        let out = &mut data[yy * stride..(yy + 1) * stride];
        for (i, o) in out.iter_mut().enumerate() {
            let mut acc = 1i32 << (PRECISION_BITS - 1);
            for (j, &w) in k.iter().enumerate() {
                acc += mid[(c.start[yy] + j) * stride + i] as i32 * w;
            }
            *o = clip8(acc);
        }
    }
    RgbImage { width: out_w, height: out_h, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_a_copy_and_constant_stays_constant() {
        let img = RgbImage::new(3, 2, (0..18).map(|v| v as u8 * 9).collect());
        assert_eq!(resize_bilinear(&img, (0, 0, 3, 2), 3, 2), img);
        let flat = RgbImage::new(5, 5, vec![77; 75]);
        for (w, h) in [(2, 9), (13, 3), (1, 1), (32, 32)] {
            assert!(resize_bilinear(&flat, (1, 0, 4, 5), w, h).data.iter().all(|&v| v == 77));
        }
    }
}
