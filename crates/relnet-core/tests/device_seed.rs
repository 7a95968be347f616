//! `streams::with_device_seed` against burn's per-process generator. A test binary of its own:
//! the library's unit tests seed and draw from that generator without the lock (each on its own
//! model, values they do not compare across runs), which would move this test's draws.

use burn::module::Module;
use burn::prelude::*;
use relnet_core::streams::{materialise, with_device_seed};

/// Sets the flag when dropped, also when the test panics (the drawing thread then stops, and the
/// scope can end).
struct SetOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A model's parameters drawn under `with_device_seed` are those its seed gives alone, while
/// another thread draws with another seed as fast as it can (without the lock the two threads'
/// seeding and draws interleave: a trial without it failed 3 of 200 draws).
#[test]
fn draws_under_the_lock_are_the_seeds_alone_while_another_thread_draws() {
    let device = Device::flex();
    let draw = |seed: u64| -> Vec<f32> {
        let layer = with_device_seed(&device, seed, || materialise(burn::nn::LinearConfig::new(32, 32).init(&device)));
        layer.weight.val().into_data().iter::<f32>().collect()
    };
    let alone = draw(1);
    assert_ne!(alone, draw(2));
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                draw(2);
            }
        });
        let _stop = SetOnDrop(&done);
        let same = (0..1000).filter(|_| draw(1) == alone).count();
        assert_eq!(same, 1000, "draws of seed 1 equal to its draw alone");
    });
}

/// burn draws a parameter on its first use; `materialise` draws them all (inside the lock).
#[test]
fn materialise_draws_every_lazy_parameter() {
    let device = Device::flex();
    let lazy = burn::nn::LinearConfig::new(4, 4).init(&device);
    assert!(!lazy.weight.is_initialized());
    assert_eq!(Module::num_params(&lazy), 20);
    assert!(!lazy.weight.is_initialized(), "counting parameters drew them");
    // Under the lock: the other test of this binary draws at the same time.
    let drawn = with_device_seed(&device, 0, || materialise(lazy));
    assert!(drawn.weight.is_initialized() && drawn.bias.as_ref().unwrap().is_initialized());
}
