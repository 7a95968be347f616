//! Evaluators: linear probe, fine-tune, retrieval (issue 5 and later).
