//! Frozen-backbone features of a whole split, computed once (eval mode, no augmentation).

pub use relnet_core::features::{extract, extract_with};
