//! Augmentation pipelines (issue 3).
