//! Data-parallel training over several devices (`--devices cuda:0,cuda:1`).
//!
//! Each device holds a replica of the model and its own optimiser. Every step splits the batch's
//! M images (each with its K views) into one shard per device; each replica runs the method's
//! step on its shard (so relational pairs are formed, and batch-norm statistics computed, per
//! device), the gradients are averaged over the devices, and every replica applies the same
//! update, so the replicas stay equal. Running batch-norm statistics are the first device's (as
//! PyTorch's DDP broadcasts rank 0's buffers).
//!
//! The average is burn's own all-reduce where the backend has one: on CUDA every replica's
//! parameters are marked distributed, and burn's autodiff all-reduces each gradient (NCCL)
//! inside `backward`. Elsewhere (CPU backends: burn-flex and burn-ndarray have no collective
//! operations in burn 0.22) relnet averages the gradients itself through the first device, which
//! is also how several replicas on one CPU device (`--devices cpu,cpu`) test the path.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::distributed::{DistributedConfig, DistributedContext, ReduceOperation};
use relnet_augment::ViewBatch;

use crate::methods::{Batch, Method, OptimKind};

/// The replicas beyond the first device's model (which the training loop keeps as before).
pub struct Replicas<M: Module> {
    main: Device,
    devices: Vec<Device>,
    models: Vec<Option<M>>,
    optims: Vec<ModuleOptimizer>,
    /// Averaged gradients waiting for [`Replicas::apply`].
    pending: Vec<Option<GradientsParams>>,
    /// burn's all-reduce inside backward (CUDA); `None`: relnet averages on the host path.
    collective: Option<DistributedContext>,
}

/// Marks every parameter distributed: burn's autodiff then all-reduces its gradient.
struct Sharder;

impl ModuleMapper for Sharder {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = tensor.set_distributed(id);
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Whether `d` is a CUDA device: the one backend with collective operations in burn 0.22.
#[cfg(feature = "cuda")]
fn is_cuda(d: &Device) -> bool {
    format!("{:?}", d.as_dispatch().clone().inner()).to_lowercase().contains("cuda")
}

#[cfg(not(feature = "cuda"))]
fn is_cuda(_: &Device) -> bool {
    false
}

impl<M: Module> Replicas<M> {
    /// Replicas on `others` (autodiff devices) beside the model on `main`; none when `others` is
    /// empty (single-device training).
    pub fn new(main: &Device, others: &[Device], optim: OptimKind) -> Self {
        let n = others.len();
        let all: Vec<Device> = std::iter::once(main.clone()).chain(others.iter().cloned()).collect();
        let collective = (n > 0 && all.iter().all(is_cuda)).then(|| {
            DistributedContext::init(
                all.iter().map(|d| d.clone().without_autodiff()).collect(),
                DistributedConfig { all_reduce_op: ReduceOperation::Mean },
            )
        });
        Replicas {
            main: main.clone(),
            devices: others.to_vec(),
            models: (0..n).map(|_| None).collect(),
            optims: (0..n).map(|_| crate::trainer::optimizer(optim)).collect(),
            pending: (0..n).map(|_| None).collect(),
            collective,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// How many devices train (the main one included).
    pub fn devices(&self) -> usize {
        self.devices.len() + 1
    }

    /// Copies the main model to every replica (at the start and after each epoch's
    /// `begin_epoch`, which may change it: DeepCluster re-initialises its last layer). Returns
    /// the main model, marked distributed when burn all-reduces.
    pub fn sync(&mut self, main: M) -> M {
        if self.is_empty() {
            return main;
        }
        for (slot, device) in self.models.iter_mut().zip(&self.devices) {
            let m = main.clone().fork(device);
            *slot = Some(if self.collective.is_some() { m.map(&mut Sharder) } else { m });
        }
        if self.collective.is_some() { main.map(&mut Sharder) } else { main }
    }

    /// Replaces the optimisers' state with the checkpoint's (a resumed run).
    pub fn set_optimizers(&mut self, optim: &ModuleOptimizer) {
        for o in &mut self.optims {
            *o = optim.clone();
        }
    }

    /// One step: the main model on the first shard, the replicas on the others, in parallel.
    /// Returns the mean loss and accuracy over the shards and the main model's averaged
    /// gradients; the replicas' wait for [`apply`](Self::apply).
    pub fn step<T: Method<Model = M> + Sync>(
        &mut self,
        method: &T,
        main: &M,
        views: ViewBatch,
        indices: Vec<usize>,
        k: usize,
    ) -> (f32, f32, GradientsParams) {
        let n = self.devices();
        let m = indices.len();
        let shards = split(&views, m, k, n);
        let run = |model: &M, device: &Device, (v, idx): (ViewBatch, Vec<usize>)| {
            let batch = Batch { x: crate::batch::to_tensor(v, device), m: idx.len(), k, indices: idx };
            let out = method.step(model, &batch);
            let loss = out.loss.clone().into_scalar::<f32>();
            (loss, out.accuracy, GradientsParams::from_grads(out.loss.backward(), model))
        };
        let mut shards = shards.into_iter().zip(split_indices(&indices, n));
        let first = shards.next().expect("one shard per device");
        let models: Vec<M> = self.models.iter_mut().map(|m| m.take().expect("replicas synced")).collect();
        // Replicas compute at the precision of the thread that trains.
        let precision = relnet_models::precision::current();
        let (main_out, others) = std::thread::scope(|s| {
            let handles: Vec<_> = models
                .into_iter()
                .zip(&self.devices)
                .zip(shards)
                .map(|((model, device), shard)| {
                    let run = &run;
                    s.spawn(move || {
                        let r = relnet_models::precision::with_precision(precision, || run(&model, device, shard));
                        (model, r)
                    })
                })
                .collect();
            let main_out = run(main, &self.main, first);
            (main_out, handles.into_iter().map(|h| h.join().expect("replica step")).collect::<Vec<_>>())
        });
        let others: Vec<_> = others
            .into_iter()
            .zip(self.models.iter_mut())
            .map(|((model, r), slot)| {
                *slot = Some(model);
                r
            })
            .collect();
        let (mut loss, mut acc, mut grads) = main_out;
        let mut replica_grads = Vec::with_capacity(others.len());
        for (l, a, g) in others {
            loss += l;
            acc += a;
            replica_grads.push(g);
        }
        if self.collective.is_none() {
            let mut avg = Average {
                main: &self.main,
                main_grads: &mut grads,
                replicas: &mut replica_grads,
                devices: &self.devices,
            };
            main.visit(&mut avg);
        }
        self.pending = replica_grads.into_iter().map(Some).collect();
        (loss / n as f32, acc / n as f32, grads)
    }

    /// Each replica's optimiser step with its averaged gradients (the main model's is the
    /// training loop's own).
    pub fn apply(&mut self, rates: impl Fn(&M) -> ModuleLearningRate) {
        for ((slot, optim), grads) in self.models.iter_mut().zip(&mut self.optims).zip(&mut self.pending) {
            if let (Some(model), Some(g)) = (slot.take(), grads.take()) {
                let r = rates(&model);
                *slot = Some(optim.step(r, model, g));
            }
        }
    }

    /// Drops the pending gradients of a skipped step.
    pub fn discard(&mut self) {
        for p in &mut self.pending {
            *p = None;
        }
    }
}

/// Averages every parameter's gradient over the devices through the main device, and hands
/// each replica the average on its own device.
struct Average<'a> {
    main: &'a Device,
    main_grads: &'a mut GradientsParams,
    replicas: &'a mut [GradientsParams],
    devices: &'a [Device],
}

impl ModuleVisitor for Average<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let id = param.id;
        let Some(mut sum) = self.main_grads.remove::<D>(id) else { return };
        let mut count = 1.0;
        for g in self.replicas.iter_mut() {
            if let Some(t) = g.remove::<D>(id) {
                sum = sum + t.to_device(self.main);
                count += 1.0;
            }
        }
        let avg = sum.div_scalar(count);
        for (g, d) in self.replicas.iter_mut().zip(self.devices) {
            g.register::<D>(id, avg.clone().to_device(d));
        }
        self.main_grads.register::<D>(id, avg);
    }
}

/// The sizes of `n` near-equal shards of `m` images (the first ones one larger).
fn shard_sizes(m: usize, n: usize) -> Vec<usize> {
    (0..n).map(|i| m / n + usize::from(i < m % n)).collect()
}

fn split_indices(indices: &[usize], n: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    for size in shard_sizes(indices.len(), n) {
        out.push(indices[at..at + size].to_vec());
        at += size;
    }
    out
}

/// Splits a batch of `k` view blocks of `m` images (`x[v * m + i]`) into `n` batches of the same
/// layout, each with its share of the images and all their views.
pub fn split(views: &ViewBatch, m: usize, k: usize, n: usize) -> Vec<ViewBatch> {
    let per = views.channels * views.height * views.width;
    let mut out = Vec::new();
    let mut start = 0;
    for size in shard_sizes(m, n) {
        let mut data = Vec::with_capacity(size * k * per);
        for v in 0..k {
            let from = (v * m + start) * per;
            data.extend_from_slice(&views.data[from..from + size * per]);
        }
        out.push(ViewBatch { n: size * k, data, channels: views.channels, height: views.height, width: views.width });
        start += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_keep_every_view_of_their_images() {
        // m = 5 images, k = 2 views, 1 value per view: value = 10 * view + image.
        let data: Vec<f32> = (0..2).flat_map(|v| (0..5).map(move |i| (10 * v + i) as f32)).collect();
        let vb = ViewBatch { n: 10, channels: 1, height: 1, width: 1, data };
        let s = split(&vb, 5, 2, 2);
        assert_eq!(s[0].data, vec![0.0, 1.0, 2.0, 10.0, 11.0, 12.0]);
        assert_eq!(s[1].data, vec![3.0, 4.0, 13.0, 14.0]);
        assert_eq!((s[0].n, s[1].n), (6, 4));
        assert_eq!(split_indices(&[7, 8, 9, 1, 2], 2), vec![vec![7, 8, 9], vec![1, 2]]);
        assert_eq!(shard_sizes(64, 3), vec![22, 21, 21]);
    }

    /// Two replicas on one CPU device: the averaged gradient is the mean of the two shards'
    /// gradients computed one after the other, and after the update both replicas hold the
    /// same parameters as the main model.
    fn flat(v: crate::conformance::Values) -> Vec<f32> {
        v.into_iter().flat_map(|(_, t)| t).collect()
    }

    fn flat_grads<M: Module>(model: &M, grads: &GradientsParams) -> Vec<f32> {
        flat(crate::conformance::param_grads(model, grads))
    }

    fn flat_params<M: Module>(model: &M) -> Vec<f32> {
        flat(crate::conformance::params(model))
    }

    #[test]
    fn two_replicas_average_the_shards_gradients_and_stay_equal() {
        use crate::methods::relational::{Relational, RelationalModel};
        use crate::objective::{Aggregation, RelationLoss};
        use relnet_models::BackboneKind;
        let device = Device::flex().autodiff();
        device.seed(5);
        let method =
            Relational { backbone: BackboneKind::Conv4, aggregation: Aggregation::Cat, loss: RelationLoss::Bce };
        let model = RelationalModel::new(BackboneKind::Conv4, Aggregation::Cat, &device);
        let (m, k, side) = (8, 3, 32);
        let n = m * k * 3 * side * side;
        let data: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        let views = ViewBatch { data, n: m * k, channels: 3, height: side, width: side };
        let indices: Vec<usize> = (0..m).collect();

        // The two shards one by one on the same weights.
        let shard_grads: Vec<Vec<f32>> = split(&views, m, k, 2)
            .into_iter()
            .zip(split_indices(&indices, 2))
            .map(|(v, idx)| {
                let batch = Batch { x: crate::batch::to_tensor(v, &device), m: idx.len(), k, indices: idx };
                let out = method.step(&model, &batch);
                let g = GradientsParams::from_grads(out.loss.backward(), &model);
                flat_grads(&model, &g)
            })
            .collect();
        let mean: Vec<f32> = shard_grads[0].iter().zip(&shard_grads[1]).map(|(a, b)| (a + b) / 2.0).collect();

        let mut replicas = Replicas::<RelationalModel>::new(
            &device,
            std::slice::from_ref(&device),
            OptimKind::Adam { weight_decay: None },
        );
        let model = replicas.sync(model);
        let (_, _, grads) = replicas.step(&method, &model, views, indices, k);
        let avg = flat_grads(&model, &grads);
        assert_eq!(avg.len(), mean.len());
        let err = avg.iter().zip(&mean).fold(0f32, |e, (a, b)| e.max((a - b).abs()));
        let scale = mean.iter().fold(0f32, |e, v| e.max(v.abs()));
        assert!(err <= 1e-5 * scale, "averaged gradient off by {err} (scale {scale})");
        // The shards differ, so the average is not just one of them.
        let d = shard_grads[0].iter().zip(&mean).fold(0f32, |e, (a, b)| e.max((a - b).abs()));
        assert!(d > 1e-3 * scale);

        let mut optim = crate::trainer::optimizer(OptimKind::Adam { weight_decay: None });
        let model = optim.step(ModuleLearningRate::from(1e-3f64), model, grads);
        replicas.apply(|_| ModuleLearningRate::from(1e-3f64));
        let replica = replicas.models[0].take().unwrap();
        assert_eq!(flat_params(&model), flat_params(&replica), "replicas equal after the update");
    }
}
