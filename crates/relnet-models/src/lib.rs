//! Backbones and heads (issue 4).
