//! relnet-toy: how a crate that depends on relnet adds its own method, evaluator, backbone and
//! dataset, without a line changed inside relnet.
//!
//! - [`method`]: `toy-mvc`, multi-view contrast: K views of each image, each view's projection
//!   classified against the mean projection of every image's views (cross-entropy at a
//!   temperature). It takes the run's K (`--k`) and has a `--temperature`, both flag names that
//!   relnet's own methods also use.
//! - [`evaluator`]: `centroid`, nearest class centroid on L2-normalised frozen features.
//! - [`backbone`]: `toy-cnn`, three conv -> BN -> ReLU blocks with max and average pooling,
//!   described as a list of relnet's layers.
//! - [`dataset`]: `stripes`, four classes of striped 32x32 images, generated in memory.
//!
//! [`register`] adds all four; `src/main.rs` is relnet's command line with them, and
//! `tests/toy.rs` runs them through pretraining, evaluation, a grid cell, its report and the
//! conformance suite.

pub mod backbone;
pub mod dataset;
pub mod evaluator;
pub mod method;

/// Registers the toy method, evaluator, backbone and dataset (once per process; later calls do
/// nothing).
pub fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        relnet_models::backbone::register(backbone::entry()).expect("toy-cnn registers");
        relnet_core::methods::register::<method::ToyMvcOptions>().expect("toy-mvc registers");
        relnet_eval::register::<evaluator::CentroidOptions>().expect("centroid registers");
        relnet_core::data::registry::register("stripes", dataset::Stripes::default()).expect("stripes registers");
    });
}
