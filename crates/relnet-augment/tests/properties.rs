//! Property tests of every transform.

use proptest::prelude::*;
use rand::SeedableRng;
use relnet_augment::*;

fn arb_image(max: usize) -> impl Strategy<Value = RgbImage> {
    (1..=max, 1..=max)
        .prop_flat_map(|(w, h)| prop::collection::vec(any::<u8>(), w * h * 3).prop_map(move |d| RgbImage::new(w, h, d)))
}

fn rng(seed: u64) -> AugRng {
    AugRng::seed_from_u64(seed)
}

fn params(side: usize) -> PresetParams {
    PresetParams { side, padding: 4, cutout: Some(0.25), mean: [0.491, 0.482, 0.447], std: [0.247, 0.243, 0.262] }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn shapes_for_any_input_and_size(img in arb_image(40), size in 1usize..48, pad in 0usize..6, seed in any::<u64>()) {
        let mut r = rng(seed);
        let rrc = RandomResizedCrop::new(size, (0.08, 1.0), (0.75, 4.0 / 3.0)).unwrap().apply(img.clone(), &mut r);
        prop_assert_eq!((rrc.width, rrc.height, rrc.data.len()), (size, size, size * size * 3));
        let rc = RandomCrop::new(size, pad).unwrap().apply(img.clone(), &mut r);
        prop_assert_eq!((rc.width, rc.height), (size, size));
        for t in [&ColorJitter::new(0.8, 0.8, 0.8, 0.2, 1.0).unwrap() as &dyn Transform,
                  &RandomGrayscale::new(0.5).unwrap(), &RandomHorizontalFlip::new(0.5).unwrap(),
                  &RandomAffine::new(18.0, (0.1, 0.1), (0.9, 1.1), 10.0, 1.0).unwrap()] {
            let out = t.apply(img.clone(), &mut r);
            prop_assert_eq!((out.width, out.height), (img.width, img.height));
        }
        let rot = Rotate90(1).apply(img.clone(), &mut r);
        prop_assert_eq!((rot.width, rot.height), (img.height, img.width));
    }

    #[test]
    fn presets_give_normalised_views_in_range(img in arb_image(36), seed in any::<u64>()) {
        let side = 32;
        let p = params(side);
        // Square inputs of the preset's side, as datasets give them.
        let sq = RgbImage::new(side, side, (0..side * side * 3).map(|i| img.data[i % img.data.len()]).collect());
        for preset in [Preset::Relational, Preset::CropFlip, Preset::Flip, Preset::Plain, Preset::Finetune] {
            let pipe = preset.build(&p).unwrap();
            let mut out = vec![f32::NAN; 3 * side * side];
            let (h, w) = pipe.apply_into(sq.clone(), &mut rng(seed), &mut out);
            prop_assert_eq!((h, w), (side, side));
            for c in 0..3 {
                let (lo, hi) = ((0.0 - p.mean[c]) / p.std[c], (1.0 - p.mean[c]) / p.std[c]);
                for &v in &out[c * side * side..(c + 1) * side * side] {
                    // Cutout writes 0, which is inside [lo, hi] for these constants.
                    prop_assert!(v >= lo - 1e-5 && v <= hi + 1e-5, "{:?} channel {} value {}", preset, c, v);
                }
            }
        }
    }

    #[test]
    fn same_seed_same_view_other_seed_other_view(img in arb_image(32), seed in any::<u64>()) {
        prop_assume!(img.width * img.height >= 16);
        // Not constant, so different draws show.
        prop_assume!(img.data.iter().any(|&v| v != img.data[0]));
        let pipe = Preset::Relational.build(&params(16)).unwrap();
        let run = |s| pipe.augment(img.clone(), &mut rng(s));
        prop_assert_eq!(run(seed), run(seed));
        // Over a few other seeds at least one view differs (a single pair may coincide).
        prop_assert!((1..6u64).any(|d| run(seed.wrapping_add(d)) != run(seed)));
    }

    #[test]
    fn flip_twice_is_identity(img in arb_image(24)) {
        let mut a = img.clone();
        hflip(&mut a);
        hflip(&mut a);
        prop_assert_eq!(a, img);
    }

    #[test]
    fn neutral_jitter_is_identity(img in arb_image(16)) {
        let mut a = img.clone();
        ColorJitter::apply_with(&mut a, [0, 1, 2, 3], [Some(1.0), Some(1.0), Some(1.0), None]);
        prop_assert_eq!(&a, &img);
        // Hue 0 still passes through PIL's 8-bit HSV: identity up to its rounding (H has 256
        // levels for 360 degrees, about 6 RGB levels at full value and saturation, plus the
        // rounding of S and V). Checked once over all 2^24 colours: at most 7, at (1, 7, 248);
        // the earlier bound of 6 failed on a random input.
        ColorJitter::apply_with(&mut a, [3, 2, 1, 0], [Some(1.0), Some(1.0), Some(1.0), Some(0.0)]);
        let worst = a.data.iter().zip(&img.data).map(|(&x, &y)| (x as i32 - y as i32).abs()).max().unwrap();
        prop_assert!(worst <= 7, "hue 0 changed a value by {}", worst);
        let off = ColorJitter::new(0.0, 0.0, 0.0, 0.0, 1.0).unwrap();
        prop_assert_eq!(off.apply(img.clone(), &mut rng(1)), img);
    }

    #[test]
    fn grayscale_has_equal_channels(img in arb_image(16), seed in any::<u64>()) {
        let out = RandomGrayscale::new(1.0).unwrap().apply(img, &mut rng(seed));
        for p in out.data.chunks_exact(3) {
            prop_assert!(p[0] == p[1] && p[1] == p[2]);
        }
    }

    #[test]
    fn full_square_crop_is_the_resized_image(side in 1usize..32, size in 1usize..40, seed in any::<u64>(), fill in any::<u8>()) {
        let img = RgbImage::new(side, side, (0..side * side * 3).map(|i| (i as u8).wrapping_mul(fill)).collect());
        let out = RandomResizedCrop::new(size, (1.0, 1.0), (1.0, 1.0)).unwrap().apply(img.clone(), &mut rng(seed));
        prop_assert_eq!(&out, &resize_bilinear(&img, (0, 0, side, side), size, size));
        if size == side {
            prop_assert_eq!(out, img);
        }
    }

    #[test]
    fn bad_parameters_are_errors(p in prop_oneof![-5.0f64..-0.001, 1.001f64..5.0], s in prop_oneof![-1.0f64..0.0, 1.0001f64..3.0]) {
        prop_assert!(RandomHorizontalFlip::new(p).is_err());
        prop_assert!(RandomGrayscale::new(p).is_err());
        prop_assert!(ColorJitter::new(0.8, 0.8, 0.8, 0.2, p).is_err());
        prop_assert!(RandomErasing::new(p, (0.1, 0.1), (1.0, 1.0), 0.0).is_err());
        // A scale needs 0 < min <= max <= 1. Every `s` drawn here breaks it as the maximum
        // (negative: below the minimum 0.08; above 1: over 1) and as the minimum (negative: not
        // above 0; above 1: above the maximum 1), so both constructions fail, for every `s`.
        prop_assert!(RandomResizedCrop::new(32, (0.08, s), (0.75, 1.33)).is_err(), "scale (0.08, {}) accepted", s);
        prop_assert!(RandomResizedCrop::new(32, (s, 1.0), (0.75, 1.33)).is_err(), "scale ({}, 1.0) accepted", s);
        prop_assert!(RandomErasing::new(0.5, (0.08, s), (1.0, 1.0), 0.0).is_err(), "erasing scale (0.08, {}) accepted", s);
    }

    #[test]
    fn valid_parameters_are_accepted(p in 0.0f64..=1.0, lo in 1e-6f64..=1.0, frac in 0.0f64..=1.0) {
        // The other side of `bad_parameters_are_errors`: every probability in [0, 1] and every
        // scale with 0 < min <= max <= 1 constructs; swapping a scale's unequal ends fails.
        prop_assert!(RandomHorizontalFlip::new(p).is_ok(), "p {}", p);
        prop_assert!(RandomGrayscale::new(p).is_ok(), "p {}", p);
        prop_assert!(ColorJitter::new(0.8, 0.8, 0.8, 0.2, p).is_ok(), "p {}", p);
        let hi = (lo + (1.0 - lo) * frac).min(1.0);
        prop_assert!(lo <= hi && hi <= 1.0);
        prop_assert!(RandomErasing::new(p, (lo, hi), (1.0, 1.0), 0.0).is_ok(), "p {} scale ({}, {})", p, lo, hi);
        prop_assert!(RandomResizedCrop::new(32, (lo, hi), (0.75, 1.33)).is_ok(), "scale ({}, {})", lo, hi);
        if lo < hi {
            prop_assert!(RandomResizedCrop::new(32, (hi, lo), (0.75, 1.33)).is_err(), "scale ({}, {}) accepted", hi, lo);
        }
    }
}

#[test]
fn scale_and_probability_bounds_are_exact() {
    // The edges: 0 and 1 are probabilities; a scale may be (x, x) and may reach 1, not 0.
    for p in [0.0, 1.0] {
        assert!(RandomHorizontalFlip::new(p).is_ok() && RandomGrayscale::new(p).is_ok(), "p {p}");
    }
    assert!(RandomResizedCrop::new(32, (1.0, 1.0), (1.0, 1.0)).is_ok());
    assert!(RandomResizedCrop::new(32, (0.3, 0.3), (0.75, 1.33)).is_ok());
    assert!(RandomResizedCrop::new(32, (0.0, 1.0), (0.75, 1.33)).is_err(), "min scale 0");
    assert!(RandomResizedCrop::new(32, (0.08, 1.0 + 1e-9), (0.75, 1.33)).is_err(), "max scale over 1");
    assert!(RandomResizedCrop::new(32, (0.5, 0.4), (0.75, 1.33)).is_err(), "min above max");
    assert!(RandomResizedCrop::new(32, (0.08, f64::NAN), (0.75, 1.33)).is_err(), "NaN scale");
    assert!(RandomHorizontalFlip::new(f64::NAN).is_err(), "NaN probability");
}

#[test]
fn size_zero_and_bad_jitter_are_errors() {
    assert!(RandomResizedCrop::new(0, (0.08, 1.0), (0.75, 1.33)).is_err());
    assert!(RandomCrop::new(0, 4).is_err());
    let e = ColorJitter::new(0.8, -0.1, 0.8, 0.2, 0.8).unwrap_err();
    assert_eq!(e.param, "contrast");
    assert!(ColorJitter::new(0.8, 0.8, 0.8, 0.7, 0.8).is_err());
    assert!(Normalize::new([0.5; 3], [0.0, 1.0, 1.0]).is_err());
    assert!(RandomAffine::new(-1.0, (0.1, 0.1), (0.9, 1.1), 10.0, 0.5).is_err());
    let msg = RandomHorizontalFlip::new(1.5).unwrap_err().to_string();
    assert!(msg.contains("RandomHorizontalFlip") && msg.contains("`p`"), "{msg}");
}
