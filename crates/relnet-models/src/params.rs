//! Parameter counting that matches PyTorch's: trainable tensors only, without BatchNorm's
//! running statistics (which burn's `num_params` includes).

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

struct Counter {
    path: Vec<String>,
    trainable: usize,
}

impl ModuleVisitor for Counter {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let running = self.path.last().is_some_and(|n| n.starts_with("running_"));
        if !running {
            self.trainable += param.lazy_shape().num_elements();
        }
    }
}

/// Trainable parameters of a module, as PyTorch's `sum(p.numel() for p in m.parameters())`.
pub fn trainable_params<M: Module>(m: &M) -> usize {
    let mut c = Counter { path: Vec::new(), trainable: 0 };
    m.visit(&mut c);
    c.trainable
}
