//! relnet-eval: evaluation protocols. The linear probe is here; fine-tuning, retrieval, domain
//! transfer, grain and fewer labels are later work.

pub mod features;
pub mod linear;

pub use linear::{LinearConfig, ProbeResult, linear_probe};
