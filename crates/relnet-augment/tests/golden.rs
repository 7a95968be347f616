//! Golden values computed independently with Pillow (`golden/make_golden.py`, which documents
//! the exact calls torchvision makes on PIL images). Tolerances: exact (0 levels) for the blends,
//! grey, hue shifts (over 1,024 varied colours) and resampling, which use Pillow's arithmetic; at
//! most 1 level for the affine transform (floating-point bilinear weights).

use relnet_augment::*;

fn source(w: usize, h: usize) -> RgbImage {
    let mut d = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                d.push(((x * 37 + y * 71 + c * 101 + (x * y * 13) % 29) % 256) as u8);
            }
        }
    }
    RgbImage::new(w, h, d)
}

fn noise() -> RgbImage {
    let mut d = Vec::with_capacity(32 * 32 * 3);
    for y in 0..32usize {
        for x in 0..32usize {
            for c in 0..3usize {
                d.push(((x * 7919 + y * 104729 + c * 1299709 + x * y * 31) % 256) as u8);
            }
        }
    }
    RgbImage::new(32, 32, d)
}

fn golden(name: &str) -> RgbImage {
    let text = include_str!("golden/golden.txt");
    let line = text.lines().find(|l| l.split(' ').next() == Some(name)).unwrap_or_else(|| panic!("no golden {name}"));
    let v: Vec<usize> = line.split(' ').skip(1).map(|s| s.parse().unwrap()).collect();
    RgbImage::new(v[0], v[1], v[2..].iter().map(|&x| x as u8).collect())
}

fn assert_close(name: &str, got: &RgbImage, tol: i32) {
    let want = golden(name);
    assert_eq!((got.width, got.height), (want.width, want.height), "{name}: size");
    let worst = got.data.iter().zip(&want.data).map(|(&a, &b)| (a as i32 - b as i32).abs()).max().unwrap();
    assert!(worst <= tol, "{name}: max difference {worst} > {tol}\n got {:?}\nwant {:?}", got.data, want.data);
}

#[test]
fn source_matches_the_script() {
    assert_eq!(source(6, 5), golden("source"));
}

#[test]
fn blends_are_exact() {
    for f in [0.37f32, 1.53] {
        let mut im = source(6, 5);
        adjust_brightness(&mut im, f);
        assert_close(&format!("brightness_{f}"), &im, 0);
    }
    for f in [0.4f32, 1.7] {
        let mut im = source(6, 5);
        adjust_contrast(&mut im, f);
        assert_close(&format!("contrast_{f}"), &im, 0);
    }
    for f in [0.3f32, 1.8] {
        let mut im = source(6, 5);
        adjust_saturation(&mut im, f);
        assert_close(&format!("saturation_{f}"), &im, 0);
    }
}

#[test]
fn hue_and_grey() {
    for (f, name) in [(-0.2f32, "hue_-0.2"), (0.13, "hue_0.13"), (0.0, "hue_0.0")] {
        let mut im = source(6, 5);
        adjust_hue(&mut im, f);
        assert_close(name, &im, 0);
    }
    assert_eq!(noise(), golden("noise"));
    for (f, name) in [(-0.2f32, "noise_hue_-0.2"), (0.13, "noise_hue_0.13"), (0.0, "noise_hue_0.0")] {
        let mut im = noise();
        adjust_hue(&mut im, f);
        let want = golden(name);
        let off = im.data.iter().zip(&want.data).filter(|(a, b)| a != b).count();
        assert_eq!(off, 0, "{name}: {off} of 3072 values differ from Pillow");
    }
    let mut im = source(6, 5);
    Grayscale::apply_in_place(&mut im);
    assert_close("grayscale", &im, 0);
}

#[test]
fn bilinear_resize_up_down_and_boxed() {
    let im = source(6, 5);
    assert_close("resize_11x9", &resize_bilinear(&im, (0, 0, 6, 5), 11, 9), 0);
    assert_close("resize_3x2", &resize_bilinear(&im, (0, 0, 6, 5), 3, 2), 0);
    assert_close("crop_1_1_4_3_resize_7x7", &resize_bilinear(&im, (1, 1, 4, 3), 7, 7), 0);
    assert_close("big_resize_20x20", &resize_bilinear(&source(32, 32), (0, 0, 32, 32), 20, 20), 0);
}

#[test]
fn affine_matches_pil() {
    let m = relnet_augment::inverse_affine((3.0, 2.5), 12.0, (1.0, -1.0), 1.05, 7.0);
    assert_close("affine_12_1_-1_1.05_7", &relnet_augment::affine_pil(&source(6, 5), m), 1);
}
