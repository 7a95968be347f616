//! relnet-core: the data layer, typed configs, device selection and (later) the relational
//! objective and the training loop.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod fsutil;
pub mod objective;
pub mod pretrain;
pub mod relational;

pub use error::{DataError, DataResult};
