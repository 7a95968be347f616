//! Device selection in one place: `--device cpu|ndarray|cuda[:N]|wgpu[:N]`.
//!
//! burn 0.22 picks the backend at run time through its `Device` (the dispatch backend), so one
//! binary runs every backend compiled into it. relnet's CPU backend is burn-flex; the others are
//! cargo features: `cuda` (burn's CubeCL CUDA runtime), `wgpu` (CubeCL on Vulkan/Metal/WebGPU,
//! also Mesa's software rasterizer) and `ndarray` (burn-ndarray: deprecated upstream and slow,
//! kept for the conformance suite).

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// A device as the user names it on the command line or in a config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// burn-flex, the default CPU backend.
    #[default]
    Cpu,
    /// burn-ndarray (cargo feature `ndarray`).
    Ndarray,
    /// A CUDA GPU by index (cargo feature `cuda`).
    Cuda(usize),
    /// A wgpu adapter: `None` is wgpu's own pick, `Some(n)` the n-th adapter `relnet device`
    /// lists (cargo feature `wgpu`).
    Wgpu(Option<usize>),
}

const EXPECTED: &str = "expected cpu, ndarray, cuda, cuda:N, wgpu or wgpu:N";

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let index = |rest: &str| rest.parse::<usize>().map_err(|_| format!("unknown device `{s}` ({EXPECTED})"));
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "ndarray" => Ok(DeviceSpec::Ndarray),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            "wgpu" => Ok(DeviceSpec::Wgpu(None)),
            _ => {
                if let Some(rest) = s.strip_prefix("cuda:") {
                    index(rest).map(DeviceSpec::Cuda)
                } else if let Some(rest) = s.strip_prefix("wgpu:") {
                    index(rest).map(|n| DeviceSpec::Wgpu(Some(n)))
                } else {
                    Err(format!("unknown device `{s}` ({EXPECTED})"))
                }
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Ndarray => f.write_str("ndarray"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Wgpu(None) => f.write_str("wgpu"),
            DeviceSpec::Wgpu(Some(n)) => write!(f, "wgpu:{n}"),
        }
    }
}

impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether this build has CUDA compiled in.
pub const CUDA_COMPILED: bool = cfg!(feature = "cuda");
/// Whether this build has wgpu compiled in.
pub const WGPU_COMPILED: bool = cfg!(feature = "wgpu");
/// Whether this build has burn-ndarray compiled in.
pub const NDARRAY_COMPILED: bool = cfg!(feature = "ndarray");

impl DeviceSpec {
    /// The burn device, or a clear error when its backend is not compiled in or not present.
    pub fn device(self) -> crate::Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::flex()),
            DeviceSpec::Ndarray => ndarray_device().map_err(crate::Error::Device),
            DeviceSpec::Cuda(n) => cuda_device(n).map_err(crate::Error::Device),
            DeviceSpec::Wgpu(n) => wgpu_device(n).map_err(crate::Error::Device),
        }
    }

    /// The cargo feature that compiles this device's backend in (`None` for the default CPU).
    pub fn feature(self) -> Option<&'static str> {
        match self {
            DeviceSpec::Cpu => None,
            DeviceSpec::Ndarray => Some("ndarray"),
            DeviceSpec::Cuda(_) => Some("cuda"),
            DeviceSpec::Wgpu(_) => Some("wgpu"),
        }
    }
}

fn not_compiled(what: &str, feature: &str) -> String {
    format!(
        "`{what}` requested but this relnet was built without {feature} support; rebuild with \
         `cargo build --release --features {feature}` (see docs/backends.md)"
    )
}

/// Runs a device query that may panic inside a driver (no libcuda, no Vulkan loader).
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn guarded<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Option<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(f).ok();
    std::panic::set_hook(hook);
    r
}

#[cfg(feature = "ndarray")]
#[allow(deprecated)] // burn-ndarray is deprecated upstream: relnet keeps it for conformance only
fn ndarray_device() -> Result<Device, String> {
    Ok(Device::ndarray())
}

#[cfg(not(feature = "ndarray"))]
fn ndarray_device() -> Result<Device, String> {
    Err(not_compiled("ndarray", "ndarray"))
}

#[cfg(feature = "cuda")]
fn cuda_device(index: usize) -> Result<Device, String> {
    match guarded(|| Device::enumerate(burn::tensor::DeviceType::Cuda).into_vec().len()) {
        Some(count) if index < count => Ok(Device::cuda(index)),
        Some(0) => Err("`cuda` requested but no CUDA device is present on this machine".into()),
        Some(count) => Err(format!(
            "`cuda:{index}` requested but only {count} CUDA device(s) are present (cuda:0..cuda:{})",
            count - 1
        )),
        None => Err("`cuda` requested but the CUDA driver could not be loaded (is an NVIDIA driver installed?)".into()),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_index: usize) -> Result<Device, String> {
    Err(not_compiled("cuda", "cuda") + " (the first CUDA build needs internet)")
}

#[cfg(feature = "wgpu")]
fn wgpu_device(index: Option<usize>) -> Result<Device, String> {
    let listed = guarded(|| Device::enumerate(burn::tensor::DeviceType::Wgpu).into_vec());
    match (listed, index) {
        (None, _) => Err("`wgpu` requested but no graphics driver could be loaded (a Vulkan driver, e.g. NVIDIA's or Mesa's)".into()),
        (Some(v), _) if v.is_empty() => Err("`wgpu` requested but no wgpu adapter is present (install a Vulkan driver: NVIDIA's, or Mesa's `mesa-vulkan-drivers` for the CPU)".into()),
        (Some(_), None) => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        (Some(v), Some(n)) if n < v.len() => Ok(v[n].clone()),
        (Some(v), Some(n)) => Err(format!("`wgpu:{n}` requested but only {} wgpu adapter(s) are present (wgpu:0..wgpu:{})", v.len(), v.len() - 1)),
    }
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device(_index: Option<usize>) -> Result<Device, String> {
    Err(not_compiled("wgpu", "wgpu"))
}

/// One backend as `relnet device` lists it.
#[derive(Clone, Debug)]
pub struct BackendInfo {
    pub name: &'static str,
    /// The cargo feature that compiles it in (`None`: always there).
    pub feature: Option<&'static str>,
    pub compiled: bool,
    /// The devices it offers on this machine, as `--device` names them, or why none.
    pub devices: Result<Vec<String>, String>,
}

/// Every backend relnet knows, whether this build has it, and the devices it sees here.
pub fn backends() -> Vec<BackendInfo> {
    let mut out =
        vec![BackendInfo { name: "flex (CPU)", feature: None, compiled: true, devices: Ok(vec!["cpu".into()]) }];
    let info = |name, feature, compiled, devices| BackendInfo { name, feature: Some(feature), compiled, devices };
    let absent = || Err("not compiled in".to_string());
    out.push(info(
        "ndarray (CPU, deprecated upstream)",
        "ndarray",
        NDARRAY_COMPILED,
        if NDARRAY_COMPILED { Ok(vec!["ndarray".into()]) } else { absent() },
    ));
    out.push(info("cuda", "cuda", CUDA_COMPILED, if CUDA_COMPILED { list_cuda() } else { absent() }));
    out.push(info("wgpu", "wgpu", WGPU_COMPILED, if WGPU_COMPILED { list_wgpu() } else { absent() }));
    out
}

#[cfg(feature = "cuda")]
fn list_cuda() -> Result<Vec<String>, String> {
    let n = guarded(|| Device::enumerate(burn::tensor::DeviceType::Cuda).into_vec().len())
        .ok_or("the CUDA driver could not be loaded")?;
    Ok((0..n).map(|i| format!("cuda:{i}")).collect())
}

#[cfg(not(feature = "cuda"))]
fn list_cuda() -> Result<Vec<String>, String> {
    Err("not compiled in".into())
}

#[cfg(feature = "wgpu")]
fn list_wgpu() -> Result<Vec<String>, String> {
    let v = guarded(|| Device::enumerate(burn::tensor::DeviceType::Wgpu).into_vec())
        .ok_or("no graphics driver could be loaded")?;
    Ok(v.iter().enumerate().map(|(i, d)| format!("wgpu:{i} ({d:?})")).collect())
}

#[cfg(not(feature = "wgpu"))]
fn list_wgpu() -> Result<Vec<String>, String> {
    Err("not compiled in".into())
}

/// A comma-separated list of devices (`--devices cuda:0,cuda:1`): data-parallel training.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList(pub Vec<DeviceSpec>);

impl FromStr for DeviceList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v = s.split(',').map(|p| p.trim().parse::<DeviceSpec>()).collect::<Result<Vec<_>, _>>()?;
        if v.is_empty() {
            return Err("an empty device list".into());
        }
        Ok(DeviceList(v))
    }
}

impl fmt::Display for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.0.iter().map(|d| d.to_string()).collect();
        f.write_str(&names.join(","))
    }
}

impl serde::Serialize for DeviceList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        for (s, d) in [
            ("cpu", DeviceSpec::Cpu),
            ("ndarray", DeviceSpec::Ndarray),
            ("cuda", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
            ("wgpu", DeviceSpec::Wgpu(None)),
            ("wgpu:1", DeviceSpec::Wgpu(Some(1))),
        ] {
            assert_eq!(s.parse::<DeviceSpec>(), Ok(d));
        }
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
        assert_eq!(DeviceSpec::Wgpu(Some(2)).to_string(), "wgpu:2");
        assert_eq!(DeviceSpec::Wgpu(None).to_string(), "wgpu");
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", "", "wgpu:", "wgpu:-1"] {
            assert!(bad.parse::<DeviceSpec>().unwrap_err().contains("unknown device"), "{bad}");
        }
        let l: DeviceList = "cuda:0, cuda:1".parse().unwrap();
        assert_eq!(l, DeviceList(vec![DeviceSpec::Cuda(0), DeviceSpec::Cuda(1)]));
        assert_eq!(l.to_string(), "cuda:0,cuda:1");
        assert!("cpu,gpu".parse::<DeviceList>().unwrap_err().contains("`gpu`"));
    }

    #[test]
    fn cpu_device_computes() {
        let d = DeviceSpec::Cpu.device().unwrap();
        let t = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0, 3.0], &d);
        let s: f32 = t.sum().into_scalar::<f32>();
        assert_eq!(s, 6.0);
    }

    #[test]
    fn missing_backends_are_clear_errors() {
        for (spec, compiled) in [
            (DeviceSpec::Cuda(0), CUDA_COMPILED),
            (DeviceSpec::Wgpu(None), WGPU_COMPILED),
            (DeviceSpec::Ndarray, NDARRAY_COMPILED),
        ] {
            if !compiled {
                let e = spec.device().unwrap_err().to_string();
                let f = spec.feature().unwrap();
                assert!(e.contains("built without") && e.contains(&format!("--features {f}")), "{e}");
            }
        }
        let listed = backends();
        assert_eq!(
            listed.iter().filter(|b| b.compiled).count(),
            1 + [CUDA_COMPILED, WGPU_COMPILED, NDARRAY_COMPILED].iter().filter(|&&c| c).count()
        );
    }
}
