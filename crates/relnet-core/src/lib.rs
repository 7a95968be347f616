//! relnet-core: the data layer, typed configs, device selection, the relational
//! objective, the pretraining methods and their shared training loop.

pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod cluster;
pub mod config;
pub mod conformance;
pub mod data;
pub mod ddp;
pub mod device;
pub mod error;
pub mod features;
pub mod fsutil;
pub mod methods;
pub mod objective;
pub mod pretrain;
pub mod record;
pub use relnet_models::registry;
pub mod run;
pub mod streams;
pub mod trainer;

pub use error::{DataError, DataResult, Error, Result};
