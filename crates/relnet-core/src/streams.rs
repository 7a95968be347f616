//! Independent random streams derived from a run's seed.
//!
//! Every random draw of a run (the order of an epoch, the views of a batch, a subset of images or
//! labels, a probe's split and order, a clustering) takes its generator's seed from
//! [`stream`]`(seed, purpose, parts)`: a hash of the run seed, the purpose and the coordinates of
//! the draw (epoch, batch, class...). Two draws share a seed only if all three are equal, so seed 2
//! never replays seed 3 one batch later (as a XOR such as `seed ^ (epoch << 32) ^ batch` would),
//! and a resumed run redraws exactly what the interrupted one would have drawn.

/// What a stream is for. The discriminant is part of the hash: never renumber a variant, or every
/// result made with it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum Purpose {
    /// The permutation of an epoch: parts `[epoch]`.
    EpochOrder = 1,
    /// The augmentation draws of one batch: parts `[epoch, batch]`.
    Views = 2,
    /// The images `--limit-images` keeps: no parts.
    ImageSubset = 3,
    /// The labelled images of one class under a label budget: parts `[class]`.
    LabelSubset = 4,
    /// The linear probe's validation split: no parts.
    ProbeSplit = 5,
    /// The linear probe's minibatch order: no parts.
    ProbeOrder = 6,
    /// DeepCluster's k-means of one epoch: parts `[epoch]`.
    Clustering = 7,
    /// The queries a retrieval figure shows: no parts.
    RetrievalQueries = 8,
    /// Deep InfoMax's prior samples of one batch: parts `[epoch, first image, images]`.
    Prior = 9,
    /// DeepCluster's re-initialisation of its last layer after a clustering: parts `[epoch]`
    /// (drawn by burn's generator, seeded through [`with_device_seed`]).
    HeadReinit = 10,
}

/// The version of the derivation below, stored in checkpoints and in the grid's cell hash so that
/// runs and results made with another derivation are never resumed or trusted as the same.
/// Version 1 is the XOR derivation `seed ^ (epoch << 32) ^ batch` with XORed constants.
pub const VERSION: u32 = 2;

/// burn keeps one random generator per process (per backend): the parameter initialisers and
/// `Tensor::random` draw from it. Every draw relnet makes from it goes through
/// [`with_device_seed`], which holds this lock while it seeds the generator and draws, so two runs
/// in one process (tests running in parallel, a program training two models at once) cannot
/// interleave their draws and each gets the values its seed gives alone.
static DEVICE_GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Seeds burn's generator for `device` with `seed` and runs `f`, while no other thread of this
/// process draws through this function.
///
/// burn initialises parameters lazily (on first use), so a model returned by `init` has drawn
/// nothing yet: `f` returns it through [`materialise`], which draws them before the lock is
/// released. `f` must not call `with_device_seed` itself (the lock is not re-entrant).
pub fn with_device_seed<R>(device: &burn::prelude::Device, seed: u64, f: impl FnOnce() -> R) -> R {
    let _held = DEVICE_GENERATOR.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    device.seed(seed);
    f()
}

/// `module` with every float parameter drawn (burn draws them lazily, on first use), in the
/// module's visiting order.
pub fn materialise<M: burn::module::Module>(module: M) -> M {
    module.visit(&mut Materialise);
    module
}

/// Draws every float parameter a module has not drawn yet (burn's lazy initialisation).
struct Materialise;

impl burn::module::ModuleVisitor for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::prelude::Tensor<D>>) {
        let _ = param.val();
    }
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a bijection of u64 that mixes every input bit into every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of the stream `purpose` at coordinates `parts` of a run seeded `seed`.
///
/// For a fixed seed, purpose and prefix, each absorbed part is a bijection, so draws that differ
/// in their last coordinate never share a seed; across seeds and purposes collisions are those of
/// a 64-bit hash (the tests check the first millions of (seed, epoch, batch) triples).
pub fn stream(seed: u64, purpose: Purpose, parts: &[u64]) -> u64 {
    let mut h = mix(seed ^ GOLDEN);
    h = mix(h ^ mix((purpose as u64).wrapping_mul(GOLDEN) ^ parts.len() as u64));
    for (i, &p) in parts.iter().enumerate() {
        h = mix(h ^ mix(p.wrapping_add((i as u64 + 1).wrapping_mul(GOLDEN))));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_of_the_first_triples_share_a_view_stream() {
        // 8 seeds x 250 epochs x 800 batches = 1.6 M triples (CIFAR-10 at M = 64 has 782 batches).
        let mut all = Vec::with_capacity(8 * 250 * 800);
        for seed in 0..8u64 {
            for epoch in 0..250u64 {
                for batch in 0..800u64 {
                    all.push(stream(seed, Purpose::Views, &[epoch, batch]));
                }
            }
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "{} (seed, epoch, batch) triples share a view stream", n - all.len());
    }

    #[test]
    fn the_old_xor_collision_is_gone() {
        // seed ^ (epoch << 32) ^ batch gave seed 2 batch 1 the views of seed 3 batch 0.
        assert_ne!(stream(2, Purpose::Views, &[0, 1]), stream(3, Purpose::Views, &[0, 0]));
        assert_ne!(stream(0, Purpose::Views, &[1, 0]), stream(1 << 32, Purpose::Views, &[0, 0]));
    }

    #[test]
    fn purposes_and_coordinates_give_distinct_streams() {
        let purposes = [
            Purpose::EpochOrder,
            Purpose::Views,
            Purpose::ImageSubset,
            Purpose::LabelSubset,
            Purpose::ProbeSplit,
            Purpose::ProbeOrder,
            Purpose::Clustering,
            Purpose::RetrievalQueries,
        ];
        let mut all = Vec::new();
        for seed in 0..64u64 {
            for p in purposes {
                all.push(stream(seed, p, &[]));
                for e in 0..64u64 {
                    all.push(stream(seed, p, &[e]));
                    all.push(stream(seed, p, &[e, 0]));
                    all.push(stream(seed, p, &[0, e]));
                }
            }
        }
        // [0, 0] appears twice per (seed, purpose) by construction; everything else is distinct.
        let n = all.len() - 64 * purposes.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn streams_are_a_pure_function_of_their_inputs() {
        // Fixed values: a change here changes every result relnet has produced with these streams.
        assert_eq!(stream(1, Purpose::Views, &[0, 0]), stream(1, Purpose::Views, &[0, 0]));
        let a = stream(1, Purpose::EpochOrder, &[3]);
        let b = stream(1, Purpose::EpochOrder, &[4]);
        assert_ne!(a, b);
        // Neighbouring inputs differ in about half of their bits (avalanche).
        let diff = (a ^ b).count_ones();
        assert!((16..=48).contains(&diff), "{diff} bits differ");
    }
}
