//! The dataset registry: names, metadata, where each dataset lives under the data root, and
//! loading a split by name.
//!
//! Layout under the data root (an official archive extracted there just works):
//!
//! | name | folder under the data root |
//! |---|---|
//! | `cifar10` | `cifar-10-batches-bin/` (official binary) or `cifar10/{train,test}/<class>/*` |
//! | `cifar100`, `cifar100-20` | `cifar-100-binary/` |
//! | `stl10` | `stl10_binary/` |
//! | `tiny-imagenet` | `tiny-imagenet-200/` |
//! | `slimagenet64` | `slimagenet64/{train,test}/<class>/*` |
//! | `mnist`, `fashion-mnist` | `mnist/`, `fashion-mnist/` with the four IDX files, raw or `.gz` |
//! | `synthetic` | nothing: generated in memory |
//! | `folder:<path>` | `<path>/{train,test}/<class>/*` (the path itself, not under the root) |

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::cifar::{self, Cifar100Labels};
use super::{ImageSet, folder, idx, stl10, synthetic, tiny};
use crate::error::{DataError, DataResult};

/// Environment variable naming the data root when `--data-root` is not given.
pub const DATA_ROOT_ENV: &str = "RELNET_DATA";

/// A dataset split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
    /// STL-10's 100,000 unlabelled images (used for self-supervised pretraining).
    Unlabeled,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Unlabeled => "unlabeled",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            "unlabeled" | "unlabelled" => Ok(Split::Unlabeled),
            _ => Err(format!("unknown split `{s}` (expected train, test or unlabeled)")),
        }
    }
}

/// A dataset known to relnet, by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DatasetId {
    Cifar10,
    Cifar100,
    /// CIFAR-100 with its 20 coarse superclasses as labels.
    Cifar100Coarse,
    Stl10,
    TinyImagenet,
    Slimagenet64,
    Mnist,
    FashionMnist,
    Synthetic,
    /// Any image folder `<path>/{train,test}/<class>/*`.
    Folder(PathBuf),
    /// A dataset registered by another crate ([`register`]).
    Registered(String),
}

/// The registered names, in the order `relnet data list` shows them.
pub const NAMES: [&str; 10] = [
    "synthetic",
    "cifar10",
    "cifar100",
    "cifar100-20",
    "stl10",
    "tiny-imagenet",
    "slimagenet64",
    "mnist",
    "fashion-mnist",
    "folder:<path>",
];

impl DatasetId {
    pub fn name(&self) -> String {
        match self {
            DatasetId::Cifar10 => "cifar10".into(),
            DatasetId::Cifar100 => "cifar100".into(),
            DatasetId::Cifar100Coarse => "cifar100-20".into(),
            DatasetId::Stl10 => "stl10".into(),
            DatasetId::TinyImagenet => "tiny-imagenet".into(),
            DatasetId::Slimagenet64 => "slimagenet64".into(),
            DatasetId::Mnist => "mnist".into(),
            DatasetId::FashionMnist => "fashion-mnist".into(),
            DatasetId::Synthetic => "synthetic".into(),
            DatasetId::Folder(p) => format!("folder:{}", p.display()),
            DatasetId::Registered(n) => n.clone(),
        }
    }
}

impl fmt::Display for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for DatasetId {
    type Err = DataError;
    fn from_str(s: &str) -> DataResult<Self> {
        if let Some(p) = s.strip_prefix("folder:") {
            if p.is_empty() {
                return Err(DataError::Invalid("`folder:` needs a path, e.g. folder:/data/my-images".into()));
            }
            return Ok(DatasetId::Folder(PathBuf::from(p)));
        }
        Ok(match s {
            "cifar10" => DatasetId::Cifar10,
            "cifar100" => DatasetId::Cifar100,
            "cifar100-20" | "supercifar100" => DatasetId::Cifar100Coarse,
            "stl10" => DatasetId::Stl10,
            "tiny-imagenet" | "tiny" => DatasetId::TinyImagenet,
            "slimagenet64" | "slim" => DatasetId::Slimagenet64,
            "mnist" => DatasetId::Mnist,
            "fashion-mnist" => DatasetId::FashionMnist,
            "synthetic" => DatasetId::Synthetic,
            _ if REGISTRY.get(s).is_some() => DatasetId::Registered(s.to_string()),
            _ => {
                return Err(DataError::Invalid(format!("unknown dataset `{s}`; known: {}", names().join(", "))));
            }
        })
    }
}

/// How images are normalised after scaling to [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub enum Normalization {
    /// Fixed per-channel mean and std (the reference's constants).
    Fixed { mean: [f32; 3], std: [f32; 3] },
    /// Computed from the train split when the dataset is loaded (`synthetic`, `folder:`).
    FromTrainSplit,
}

/// Where and how to obtain a dataset.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A `.tar.gz` archive that extracts to `top` under the data root; `md5` is its published
    /// checksum (the dataset's page, or torchvision's).
    TarGz { url: &'static str, top: &'static str, md5: &'static str },
    /// A `.zip` archive that extracts to `top` under the data root, with its published MD5.
    Zip { url: &'static str, top: &'static str, md5: &'static str },
    /// Four gzip IDX files fetched from `base` into `dir` under the data root, with their
    /// published MD5s (train images, train labels, test images, test labels).
    Idx { base: &'static str, dir: &'static str, md5: [&'static str; 4] },
    /// No automatic download: the help text says how to prepare it.
    Manual,
    /// Generated in memory.
    Generated,
}

/// Metadata of a registered dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetInfo {
    pub id: DatasetId,
    /// Number of classes (`None` for `folder:`, found from its class folders).
    pub num_classes: Option<usize>,
    /// (height, width) of every image (`None` for `folder:`, found from the first image).
    pub image_size: Option<(usize, usize)>,
    /// Channels in the files; 1-channel data is loaded as 3 identical channels.
    pub file_channels: usize,
    pub normalization: Normalization,
    pub splits: Vec<Split>,
    /// Split used for self-supervised pretraining (labels ignored).
    pub pretrain_split: Split,
    /// Split used to train linear probes and supervised baselines.
    pub train_split: Split,
    pub test_split: Split,
    /// Random-crop padding of the reference's augmentations (CIFAR 4, STL 12, tiny/slim 8).
    pub crop_padding: usize,
    /// Cutout's default size (fraction of the image area) when fine-tuning on this dataset: the
    /// reference's 0.25, with CIFAR-100's 0.0625 and STL-10's 0.111.
    pub cutout: f64,
    /// A small, quick dataset (the embedded `synthetic`): runs default to a few epochs and a small
    /// K instead of the paper's 200 epochs and K = 32.
    pub small: bool,
    pub source: Source,
    /// Where the official copy lives and what layout relnet expects.
    pub help: String,
}

const CIFAR10_NORM: Normalization = Normalization::Fixed { mean: [0.491, 0.482, 0.447], std: [0.247, 0.243, 0.262] };
const CIFAR100_NORM: Normalization = Normalization::Fixed { mean: [0.507, 0.487, 0.441], std: [0.267, 0.256, 0.276] };

impl DatasetId {
    /// The registry entry of this dataset.
    pub fn info(&self) -> DatasetInfo {
        use Split::*;
        let std_splits = vec![Train, Test];
        let base = |num_classes, side: usize, normalization, padding, source, help: &str| DatasetInfo {
            id: self.clone(),
            num_classes: Some(num_classes),
            image_size: Some((side, side)),
            file_channels: 3,
            normalization,
            splits: std_splits.clone(),
            pretrain_split: Train,
            train_split: Train,
            test_split: Test,
            crop_padding: padding,
            cutout: 0.25,
            small: false,
            source,
            help: help.to_string(),
        };
        match self {
            DatasetId::Cifar10 => base(
                10,
                32,
                CIFAR10_NORM,
                4,
                Source::TarGz {
                    url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                    top: "cifar-10-batches-bin",
                    md5: "c32a1d4ab5d03f1284b67883e8d87530",
                },
                "CIFAR-10 (https://www.cs.toronto.edu/~kriz/cifar.html). Either extract the official binary \
                 archive cifar-10-binary.tar.gz in the data root (giving cifar-10-batches-bin/data_batch_1.bin ... \
                 test_batch.bin), or put image folders at <root>/cifar10/{train,test}/<class>/*.png|jpg with the \
                 classes airplane ... truck. `relnet data download cifar10` fetches the binary archive.",
            ),
            DatasetId::Cifar100 | DatasetId::Cifar100Coarse => {
                let coarse = *self == DatasetId::Cifar100Coarse;
                let info = base(
                    if coarse { 20 } else { 100 },
                    32,
                    CIFAR100_NORM,
                    4,
                    Source::TarGz {
                        url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
                        top: "cifar-100-binary",
                        md5: "03b5dce01913d631647c71ecec9e9cb8",
                    },
                    "CIFAR-100 (https://www.cs.toronto.edu/~kriz/cifar.html): extract the official binary archive \
                     cifar-100-binary.tar.gz in the data root (giving cifar-100-binary/train.bin and test.bin). \
                     `cifar100-20` uses the same files with the 20 coarse labels. \
                     `relnet data download cifar100` fetches it.",
                );
                DatasetInfo { cutout: 0.0625, ..info }
            }
            DatasetId::Stl10 => DatasetInfo {
                splits: vec![Train, Test, Unlabeled],
                pretrain_split: Unlabeled,
                cutout: 0.111,
                ..base(
                    10,
                    96,
                    Normalization::Fixed { mean: [0.5; 3], std: [0.5; 3] },
                    12,
                    Source::TarGz {
                        url: "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
                        top: "stl10_binary",
                        md5: "91f7769df0f17e558f3565bffb0c7dfb",
                    },
                    "STL-10 (https://cs.stanford.edu/~acoates/stl10/): extract stl10_binary.tar.gz in the data root \
                     (giving stl10_binary/{train,test,unlabeled}_X.bin, {train,test}_y.bin). \
                     `relnet data download stl10` fetches it (2.6 GB).",
                )
            },
            DatasetId::TinyImagenet => base(
                200,
                64,
                Normalization::Fixed { mean: [0.5; 3], std: [0.25; 3] },
                8,
                Source::Zip {
                    url: "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                    top: "tiny-imagenet-200",
                    md5: "90528d7ca1a48142e341f4ef8d21d0de",
                },
                "tiny-ImageNet (http://cs231n.stanford.edu/tiny-imagenet-200.zip): unzip in the data root, giving \
                 tiny-imagenet-200/{wnids.txt,train/<wnid>/images/*.JPEG,val/images,val/val_annotations.txt}. \
                 The val split is relnet's test split. `relnet data download tiny-imagenet` fetches it.",
            ),
            DatasetId::Slimagenet64 => base(
                1000,
                64,
                Normalization::Fixed { mean: [0.5; 3], std: [0.25; 3] },
                8,
                Source::Manual,
                "SlimageNet64 (https://zenodo.org/record/3672132): no automatic download. Prepare image folders \
                 <root>/slimagenet64/{train,test}/<class>/*.png (64x64 RGB; the reference uses 160 train and 40 test \
                 images per class).",
            ),
            DatasetId::Mnist | DatasetId::FashionMnist => {
                let fashion = *self == DatasetId::FashionMnist;
                let (mean, std) = if fashion { (0.2860, 0.3530) } else { (0.1307, 0.3081) };
                DatasetInfo {
                    file_channels: 1,
                    ..base(
                        10,
                        28,
                        Normalization::Fixed { mean: [mean; 3], std: [std; 3] },
                        4,
                        if fashion {
                            Source::Idx {
                                base: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                                dir: "fashion-mnist",
                                md5: [
                                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                    "25c81989df183df01b3e8a0aad5dffbe",
                                    "bef4ecab320f06d8554ea6380940ec79",
                                    "bb300cfdad3c16e7a12a480ee83cd310",
                                ],
                            }
                        } else {
                            Source::Idx {
                                base: "https://ossci-datasets.s3.amazonaws.com/mnist/",
                                dir: "mnist",
                                md5: [
                                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                    "d53e105ee54ea40749a09fcbcd1e9432",
                                    "9fb629c4189551a2d022fa330f9573f3",
                                    "ec29112dd5afa0611ce80d1b7f02629c",
                                ],
                            }
                        },
                        if fashion {
                            "Fashion-MNIST (https://github.com/zalandoresearch/fashion-mnist): put the four IDX files \
                             train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte \
                             (raw or .gz) in <root>/fashion-mnist/. `relnet data download fashion-mnist` fetches them."
                        } else {
                            "MNIST (http://yann.lecun.com/exdb/mnist/): put the four IDX files train-images-idx3-ubyte, \
                             train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz) in \
                             <root>/mnist/. `relnet data download mnist` fetches them from the torchvision mirror."
                        },
                    )
                }
            }
            DatasetId::Synthetic => {
                let spec = synthetic::SyntheticSpec::default();
                DatasetInfo {
                    small: true,
                    ..base(
                        synthetic::CLASSES.len(),
                        spec.side,
                        Normalization::FromTrainSplit,
                        4,
                        Source::Generated,
                        "synthetic: generated in memory from a fixed seed, nothing to obtain.",
                    )
                }
            }
            DatasetId::Registered(name) => match REGISTRY.get(name) {
                Some(e) => DatasetInfo { id: self.clone(), ..e.source.info() },
                None => base(
                    0,
                    0,
                    Normalization::FromTrainSplit,
                    4,
                    Source::Manual,
                    &format!("`{name}` is not registered in this program"),
                ),
            },
            DatasetId::Folder(p) => DatasetInfo {
                num_classes: None,
                image_size: None,
                ..base(
                    0,
                    0,
                    Normalization::FromTrainSplit,
                    4,
                    Source::Manual,
                    &format!(
                        "an image folder: {}/{{train,test}}/<class>/<images> (PNG or JPEG, all of one size; \
                     class index = sorted folder name).",
                        p.display()
                    ),
                )
            },
        }
    }
}

/// The folder under which datasets are looked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataRoot(pub PathBuf);

impl DataRoot {
    /// `--data-root` if given, else `$RELNET_DATA`, else `./data`.
    pub fn resolve(flag: Option<&Path>) -> Self {
        if let Some(p) = flag {
            return DataRoot(p.to_path_buf());
        }
        match std::env::var_os(DATA_ROOT_ENV) {
            Some(v) if !v.is_empty() => DataRoot(PathBuf::from(v)),
            _ => DataRoot(PathBuf::from("data")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// A split in memory with its class names and where it was read from.
#[derive(Clone, Debug)]
pub struct LoadedSplit {
    pub dataset: DatasetId,
    pub split: Split,
    pub images: ImageSet,
    pub classes: Vec<String>,
    /// The file or folder the split was read from (`None` for generated data).
    pub source: Option<PathBuf>,
}

/// Where a dataset's files are, found under the data root.
#[derive(Clone, Debug, PartialEq)]
pub enum Location {
    CifarBinary(PathBuf),
    CifarFolder(PathBuf),
    Cifar100Binary(PathBuf),
    Stl10(PathBuf),
    Tiny(PathBuf),
    ImageFolder(PathBuf),
    Idx(PathBuf),
    Generated,
    /// A registered dataset: its [`DatasetSource`] finds its own files.
    Registered(String),
}

impl Location {
    /// The folder the dataset was found in (empty for generated data).
    pub fn path(&self) -> &Path {
        use Location::*;
        match self {
            CifarBinary(p) | CifarFolder(p) | Cifar100Binary(p) | Stl10(p) | Tiny(p) | ImageFolder(p) | Idx(p) => p,
            Generated | Registered(_) => Path::new(""),
        }
    }
}

impl DatasetInfo {
    fn missing(&self, looked_for: Vec<PathBuf>) -> DataError {
        DataError::Missing { dataset: self.id.name(), looked_for, help: format!("How to obtain it: {}", self.help) }
    }

    /// Finds the dataset under `root`, or says where it looked and how to obtain it.
    pub fn locate(&self, root: &DataRoot) -> DataResult<Location> {
        let r = root.path();
        let first_dir = |cands: Vec<PathBuf>, make: fn(PathBuf) -> Location| {
            cands.iter().find(|p| p.is_dir()).cloned().map(make).ok_or_else(|| self.missing(cands))
        };
        match &self.id {
            DatasetId::Cifar10 => {
                let bin = r.join("cifar-10-batches-bin");
                let fold = r.join("cifar10");
                if bin.is_dir() {
                    Ok(Location::CifarBinary(bin))
                } else if fold.join("train").is_dir() || fold.join("test").is_dir() {
                    Ok(Location::CifarFolder(fold))
                } else {
                    Err(self.missing(vec![bin, fold.join("train"), fold.join("test")]))
                }
            }
            DatasetId::Cifar100 | DatasetId::Cifar100Coarse => {
                first_dir(vec![r.join("cifar-100-binary")], Location::Cifar100Binary)
            }
            DatasetId::Stl10 => first_dir(vec![r.join("stl10_binary")], Location::Stl10),
            DatasetId::TinyImagenet => first_dir(vec![r.join("tiny-imagenet-200")], Location::Tiny),
            DatasetId::Slimagenet64 => {
                first_dir(vec![r.join("slimagenet64"), r.join("SlimageNet64")], Location::ImageFolder)
            }
            DatasetId::Mnist => first_dir(vec![r.join("mnist")], Location::Idx),
            DatasetId::FashionMnist => first_dir(vec![r.join("fashion-mnist")], Location::Idx),
            DatasetId::Synthetic => Ok(Location::Generated),
            DatasetId::Registered(name) => Ok(Location::Registered(name.clone())),
            DatasetId::Folder(p) => first_dir(vec![p.clone()], Location::ImageFolder),
        }
    }

    /// Loads one split into memory (1-channel data replicated to RGB).
    pub fn load(&self, split: Split, root: &DataRoot) -> DataResult<LoadedSplit> {
        if !self.splits.contains(&split) {
            return Err(DataError::Invalid(format!(
                "dataset `{}` has no `{split}` split (it has: {})",
                self.id,
                self.splits.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        let train = split == Split::Train;
        let loc = self.locate(root)?;
        let (images, classes, source) = match (&self.id, &loc) {
            (_, Location::CifarBinary(dir)) => {
                let files = cifar::cifar10_split_files(dir, train);
                let set = cifar::read_cifar10_files(&files)?;
                (set, cifar::cifar10_class_names(dir), dir.clone())
            }
            (_, Location::CifarFolder(dir)) => {
                let d = self.split_dir(dir, split)?;
                let (set, classes) = folder::read_image_folder(&d, self.image_size, Some(&cifar::CIFAR10_CLASSES))?;
                (set, classes, d)
            }
            (id, Location::Cifar100Binary(dir)) => {
                let which =
                    if *id == DatasetId::Cifar100Coarse { Cifar100Labels::Coarse } else { Cifar100Labels::Fine };
                let file = cifar::cifar100_split_file(dir, train);
                let set = cifar::read_cifar100_files(&[&file], which)?;
                (set, cifar::cifar100_class_names(dir, which), file)
            }
            (_, Location::Stl10(dir)) => {
                let x = dir.join(format!("{split}_X.bin"));
                let y = (split != Split::Unlabeled).then(|| dir.join(format!("{split}_y.bin")));
                let set = stl10::read_stl10(&x, y.as_deref())?;
                (set, stl10::class_names(dir), x)
            }
            (_, Location::Tiny(dir)) => {
                let (set, classes) = tiny::read_tiny(dir, train)?;
                (set, classes, dir.clone())
            }
            (_, Location::ImageFolder(dir)) => {
                let d = self.split_dir(dir, split)?;
                let (set, classes) = folder::read_image_folder(&d, self.image_size, None)?;
                if let Some(n) = self.num_classes
                    && classes.len() != n
                {
                    return Err(DataError::file(&d, format!("{} class folders, expected {n}", classes.len())));
                }
                (set, classes, d)
            }
            (_, Location::Idx(dir)) => {
                let (xs, ys) = if train { idx::TRAIN_STEMS } else { idx::TEST_STEMS };
                let find = |stem: &str| {
                    idx::find_idx(dir, stem)
                        .ok_or_else(|| self.missing(vec![dir.join(stem), dir.join(format!("{stem}.gz"))]))
                };
                let (x, y) = (find(xs)?, find(ys)?);
                let set = idx::read_idx_pair(&x, &y, 10)?;
                if Some((set.height, set.width)) != self.image_size {
                    return Err(DataError::file(
                        &x,
                        format!("images are {}x{}, expected 28x28", set.height, set.width),
                    ));
                }
                let names = match self.id {
                    DatasetId::FashionMnist => FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
                    _ => (0..10).map(|d| d.to_string()).collect(),
                };
                (set.into_rgb(), names, x)
            }
            (_, Location::Registered(name)) => {
                let entry = REGISTRY
                    .get(name)
                    .ok_or_else(|| DataError::Invalid(format!("dataset `{name}` is not registered in this program")))?;
                let (set, classes) = entry.source.load(split, root)?;
                return Ok(LoadedSplit { dataset: self.id.clone(), split, images: set, classes, source: None });
            }
            (_, Location::Generated) => {
                let set = synthetic::generate(&synthetic::SyntheticSpec::default(), train);
                let classes = synthetic::CLASSES.iter().map(|s| s.to_string()).collect();
                return Ok(LoadedSplit { dataset: self.id.clone(), split, images: set, classes, source: None });
            }
        };
        Ok(LoadedSplit { dataset: self.id.clone(), split, images, classes, source: Some(source) })
    }

    fn split_dir(&self, dir: &Path, split: Split) -> DataResult<PathBuf> {
        let d = dir.join(split.as_str());
        if d.is_dir() { Ok(d) } else { Err(self.missing(vec![d])) }
    }

    /// The normalisation mean and std: fixed constants, or computed from the train split.
    pub fn norm_stats(&self, root: &DataRoot) -> DataResult<([f32; 3], [f32; 3])> {
        self.norm_stats_reusing(root, None)
    }

    /// As [`norm_stats`](Self::norm_stats), reusing `loaded` when it is the train split, so a
    /// caller that already holds it does not read or generate it a second time.
    pub fn norm_stats_reusing(
        &self,
        root: &DataRoot,
        loaded: Option<&LoadedSplit>,
    ) -> DataResult<([f32; 3], [f32; 3])> {
        match &self.normalization {
            Normalization::Fixed { mean, std } => Ok((*mean, *std)),
            Normalization::FromTrainSplit => {
                let owned;
                let train = match loaded {
                    Some(s) if s.split == self.train_split => s,
                    _ => {
                        owned = self.load(self.train_split, root)?;
                        &owned
                    }
                };
                let (m, sd) = train.images.channel_stats();
                let pick = |v: &[f64], i: usize| v[i.min(v.len() - 1)] as f32;
                Ok((std::array::from_fn(|i| pick(&m, i)), std::array::from_fn(|i| pick(&sd, i).max(1e-3))))
            }
        }
    }
}

/// Fashion-MNIST class names in label order.
pub const FASHION_CLASSES: [&str; 10] =
    ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"];

/// Parses a dataset name and returns its registry entry.
pub fn lookup(name: &str) -> DataResult<DatasetInfo> {
    Ok(name.parse::<DatasetId>()?.info())
}

/// A dataset defined outside relnet's own readers: its metadata and how to load a split.
///
/// Register it with [`register`]; from then on its name works wherever a dataset is named
/// (`--dataset`, configs, the grid, `relnet data list`).
pub trait DatasetSource: Send + Sync + 'static {
    /// The dataset's metadata; its `id` is replaced by the registered name. [`DatasetInfo::new`]
    /// gives the usual defaults.
    fn info(&self) -> DatasetInfo;
    /// The images and class names of `split` (one of `info().splits`), read from under `root` or
    /// generated; a missing file is a [`DataError::Missing`] naming where it looked.
    fn load(&self, split: Split, root: &DataRoot) -> DataResult<(ImageSet, Vec<String>)>;
}

/// A registered dataset.
pub struct DatasetEntry {
    pub name: String,
    pub source: Box<dyn DatasetSource>,
}

impl crate::registry::Named for DatasetEntry {
    fn name(&self) -> &str {
        &self.name
    }
}

static REGISTRY: crate::registry::Registry<DatasetEntry> = crate::registry::Registry::new("dataset", Vec::new);

/// Makes the dataset `name` known to relnet. Names of relnet's own datasets are refused.
pub fn register(name: &str, source: impl DatasetSource) -> Result<(), crate::registry::RegistryError> {
    let builtin = name.starts_with("folder:")
        || NAMES.contains(&name)
        || matches!(name.parse::<DatasetId>(), Ok(id) if !matches!(id, DatasetId::Registered(_)));
    if builtin {
        return Err(crate::registry::RegistryError::Duplicate { kind: "dataset", name: name.to_string() });
    }
    REGISTRY.add(DatasetEntry { name: name.to_string(), source: Box::new(source) })
}

/// Every dataset name, relnet's own (in `relnet data list` order) then the registered ones.
pub fn names() -> Vec<String> {
    NAMES.iter().map(|s| s.to_string()).chain(REGISTRY.names()).collect()
}

impl DatasetInfo {
    /// The metadata of a dataset `name` with `classes` classes of `side` x `side` RGB images,
    /// train and test splits (pretraining on train), normalised from the train split, crop padding
    /// 4, cutout 0.25, nothing to download.
    pub fn new(name: &str, classes: usize, side: usize, help: &str) -> Self {
        DatasetInfo {
            id: DatasetId::Registered(name.to_string()),
            num_classes: Some(classes),
            image_size: Some((side, side)),
            file_channels: 3,
            normalization: Normalization::FromTrainSplit,
            splits: vec![Split::Train, Split::Test],
            pretrain_split: Split::Train,
            train_split: Split::Train,
            test_split: Split::Test,
            crop_padding: 4,
            cutout: 0.25,
            small: false,
            source: Source::Manual,
            help: help.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in NAMES.iter().filter(|n| !n.starts_with("folder")) {
            assert_eq!(n.parse::<DatasetId>().unwrap().name(), *n);
        }
        assert_eq!("folder:/x/y".parse::<DatasetId>().unwrap(), DatasetId::Folder("/x/y".into()));
        let e = "cifar11".parse::<DatasetId>().unwrap_err().to_string();
        assert!(e.contains("unknown dataset `cifar11`") && e.contains("cifar10"), "{e}");
        assert!("folder:".parse::<DatasetId>().is_err());
    }

    #[test]
    fn reference_metadata() {
        let c = lookup("cifar10").unwrap();
        assert_eq!(c.normalization, CIFAR10_NORM);
        assert_eq!((c.num_classes, c.image_size, c.crop_padding), (Some(10), Some((32, 32)), 4));
        let s = lookup("stl10").unwrap();
        assert_eq!(s.pretrain_split, Split::Unlabeled);
        assert_eq!((s.image_size, s.crop_padding), (Some((96, 96)), 12));
        assert_eq!(lookup("cifar100-20").unwrap().num_classes, Some(20));
        assert_eq!(lookup("tiny").unwrap().num_classes, Some(200));
    }

    #[test]
    fn missing_dataset_says_where_and_how() {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot(dir.path().to_path_buf());
        let e = lookup("cifar10").unwrap().load(Split::Train, &root).unwrap_err().to_string();
        assert!(e.contains("cifar-10-batches-bin") && e.contains("cifar10/train"), "{e}");
        assert!(e.contains("https://www.cs.toronto.edu/~kriz/cifar"), "{e}");
        let e = lookup("cifar10").unwrap().load(Split::Unlabeled, &root).unwrap_err().to_string();
        assert!(e.contains("no `unlabeled` split"), "{e}");
    }

    #[test]
    fn synthetic_loads_without_a_root() {
        let root = DataRoot(PathBuf::from("/nonexistent"));
        let s = lookup("synthetic").unwrap().load(Split::Test, &root).unwrap();
        assert_eq!(s.images.len(), synthetic::SyntheticSpec::default().test);
        assert_eq!(s.classes.len(), 10);
    }
}
