//! Saving and loading a backbone alone: the artifact users take downstream.
//!
//! * burn's record format (burnpack, `.bpk`): `save_backbone` / `load_backbone`. The file's
//!   metadata names the backbone (`relnet_backbone = conv4`...), so loading needs no other input.
//! * safetensors with the PyTorch reference's state-dict names (`layer1.conv.weight`,
//!   `layer1.0.downsample.0.weight`, BN `weight`/`bias`/`running_mean`/`running_var`, linear
//!   weights transposed): `export_safetensors` / `import_safetensors`. PyTorch loads it into the
//!   reference module with a strict `load_state_dict` (BatchNorm fills in the absent
//!   `num_batches_tracked` counters itself); a state dict saved from PyTorch imports back (its
//!   counters are ignored). Checked both ways by `tests/torch/interop.py`.
//!
//! Writes go to a temporary file renamed into place, so a crash never leaves half a file.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::{BurnToPyTorchAdapter, BurnpackStore, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};

use crate::backbone::{Backbone, BackboneKind};

/// Metadata key naming the backbone kind in both formats.
pub const KIND_KEY: &str = "relnet_backbone";

/// An artifact that cannot be written or read: which file, what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct ModelIoError {
    pub path: PathBuf,
    pub problem: String,
}

fn err(path: &Path, problem: impl std::fmt::Display) -> ModelIoError {
    ModelIoError { path: path.to_path_buf(), problem: problem.to_string() }
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

fn commit(tmp: &Path, path: &Path) -> Result<(), ModelIoError> {
    std::fs::rename(tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        err(path, format!("cannot move the written file into place: {e}"))
    })
}

fn ensure_parent(path: &Path) -> Result<(), ModelIoError> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => {
            std::fs::create_dir_all(p).map_err(|e| err(path, format!("cannot create folder: {e}")))
        }
        _ => Ok(()),
    }
}

/// Saves the backbone alone in burn's record format (burnpack).
pub fn save_backbone(backbone: &Backbone, kind: BackboneKind, path: &Path) -> Result<(), ModelIoError> {
    ensure_parent(path)?;
    let tmp = tmp_path(path);
    let mut store =
        BurnpackStore::from_file(&tmp).auto_extension(false).overwrite(true).metadata(KIND_KEY, kind.name());
    backbone.save_into(&mut store).map_err(|e| err(path, format!("cannot write backbone: {e}")))?;
    let canonical = path.with_file_name(format!(
        ".{}.{}.canonical.tmp",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id()
    ));
    let stripped = without_param_ids(&tmp, &canonical);
    let _ = std::fs::remove_file(&tmp);
    stripped.map_err(|e| {
        let _ = std::fs::remove_file(&canonical);
        err(path, format!("cannot write backbone: {e}"))
    })?;
    commit(&canonical, path)
}

/// Copies the burnpack file `from` to `to` without the tensors' parameter ids. burn draws a
/// parameter's id at random when the module is built (not from the seed) and stores it in the
/// file, so two runs with equal weights wrote different bytes. A backbone artifact carries no
/// optimiser state (the only thing the ids key), so it goes without them: equal weights make
/// equal files and equal content hashes. Checkpoints keep their ids.
fn without_param_ids(from: &Path, to: &Path) -> Result<(), burn_pack::Error> {
    let reader = burn_pack::Reader::from_file(from)?;
    let metadata = reader.metadata().clone();
    let scalars = reader.scalars().clone();
    let mut tensors = reader.into_tensors()?;
    for t in &mut tensors {
        t.param_id = None;
    }
    let mut writer = burn_pack::Writer::new(tensors).auto_extension(false).overwrite(true);
    for (k, v) in &metadata {
        writer = writer.with_metadata(k, v);
    }
    for (k, v) in scalars {
        writer = writer.with_scalar(&k, v);
    }
    writer.write_to_file(to)
}

fn kind_from(path: &Path, meta: Option<&String>) -> Result<BackboneKind, ModelIoError> {
    let name = meta.ok_or_else(|| err(path, format!("no `{KIND_KEY}` metadata: not a relnet backbone file")))?;
    name.parse().map_err(|e: String| err(path, e))
}

/// The backbone kind recorded in an artifact saved by [`save_backbone`], without loading weights.
pub fn backbone_kind(path: &Path) -> Result<BackboneKind, ModelIoError> {
    if !path.is_file() {
        return Err(err(path, "no such file"));
    }
    let reader =
        burn_pack::Reader::from_file(path).map_err(|e| err(path, format!("not a readable burnpack file: {e}")))?;
    kind_from(path, reader.metadata().get(KIND_KEY))
}

/// Loads a backbone saved by [`save_backbone`]; the kind comes from the file.
pub fn load_backbone(path: &Path, device: &Device) -> Result<(Backbone, BackboneKind), ModelIoError> {
    let kind = backbone_kind(path)?;
    let mut backbone = kind.init(device);
    let mut store = BurnpackStore::from_file(path).auto_extension(false);
    backbone.load_from(&mut store).map_err(|e| err(path, format!("cannot load {kind} weights: {e}")))?;
    Ok((backbone, kind))
}

/// burn field names -> the reference's PyTorch names (and back for import).
const RENAMES: [(&str, &str); 2] = [(r"downsample\.conv\.", "downsample.0."), (r"downsample\.bn\.", "downsample.1.")];

/// Exports the backbone to safetensors with the PyTorch reference's tensor names.
pub fn export_safetensors(backbone: &Backbone, kind: BackboneKind, path: &Path) -> Result<(), ModelIoError> {
    ensure_parent(path)?;
    let tmp = tmp_path(path);
    let mut store = SafetensorsStore::from_file(&tmp)
        .with_to_adapter(BurnToPyTorchAdapter)
        .skip_enum_variants(true)
        .overwrite(true)
        .metadata(KIND_KEY, kind.name());
    for (from, to) in RENAMES {
        store = store.with_key_remapping(from, to);
    }
    backbone.save_into(&mut store).map_err(|e| err(path, format!("cannot write safetensors: {e}")))?;
    commit(&tmp, path)
}

/// Reads the `__metadata__` map of a safetensors header.
fn safetensors_metadata(path: &Path) -> Result<std::collections::HashMap<String, String>, ModelIoError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| err(path, format!("cannot open: {e}")))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|_| err(path, "truncated: no safetensors header"))?;
    let len = u64::from_le_bytes(len);
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > size.saturating_sub(8) || len > 100 << 20 {
        return Err(err(path, format!("header length {len} exceeds the file: not a safetensors file")));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).map_err(|_| err(path, "truncated safetensors header"))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| err(path, format!("bad safetensors header: {e}")))?;
    Ok(json
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default())
}

/// Imports a backbone from safetensors with PyTorch names. The kind comes from the file's
/// metadata, or from `kind` when the file has none (a state dict saved by PyTorch).
pub fn import_safetensors(
    path: &Path,
    kind: Option<BackboneKind>,
    device: &Device,
) -> Result<(Backbone, BackboneKind), ModelIoError> {
    let meta = safetensors_metadata(path)?;
    let kind = match (meta.get(KIND_KEY), kind) {
        (Some(m), _) => kind_from(path, Some(m))?,
        (None, Some(k)) => k,
        (None, None) => return Err(err(path, format!("no `{KIND_KEY}` metadata: say which backbone it holds"))),
    };
    let mut backbone = kind.init(device);
    let mut store = SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter).skip_enum_variants(true);
    for (from, to) in RENAMES {
        // File name -> burn name.
        store = store.with_key_remapping(to.replace('.', r"\."), from.replace(r"\.", "."));
    }
    backbone.load_from(&mut store).map_err(|e| err(path, format!("cannot load {kind} weights: {e}")))?;
    Ok((backbone, kind))
}
