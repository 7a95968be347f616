//! Device selection in one place: `--device cpu|cuda|cuda:N`.
//!
//! burn 0.22 picks the backend at run time through its `Device`; relnet's CPU backend is
//! burn-flex, CUDA is compiled in with the cargo feature `cuda`.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// A device as the user names it on the command line or in a config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(format!("unknown device `{s}` (expected cpu, cuda or cuda:N)")),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
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

impl DeviceSpec {
    /// The burn device, or a clear error when CUDA is not compiled in or not present.
    pub fn device(self) -> crate::Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::flex()),
            DeviceSpec::Cuda(n) => cuda_device(n).map_err(crate::Error::Device),
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(index: usize) -> Result<Device, String> {
    // Enumeration opens the driver; without one (no libcuda, no GPU) it may panic: turn that
    // into an error instead of a crash.
    let found = std::panic::catch_unwind(|| Device::enumerate(burn::tensor::DeviceType::Cuda).into_vec().len());
    match found {
        Ok(count) if index < count => Ok(Device::cuda(index)),
        Ok(0) => Err("`cuda` requested but no CUDA device is present on this machine".into()),
        Ok(count) => Err(format!("`cuda:{index}` requested but only {count} CUDA device(s) are present (cuda:0..cuda:{})", count - 1)),
        Err(_) => Err("`cuda` requested but the CUDA driver could not be loaded (is an NVIDIA driver installed?)".into()),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_index: usize) -> Result<Device, String> {
    Err("`cuda` requested but this relnet was built without CUDA support; rebuild with \
         `cargo build --release --features cuda` (the first CUDA build needs internet, see the README)"
        .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(3)));
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
            assert!(bad.parse::<DeviceSpec>().unwrap_err().contains("unknown device"), "{bad}");
        }
    }

    #[test]
    fn cpu_device_computes() {
        let d = DeviceSpec::Cpu.device().unwrap();
        let t = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0, 3.0], &d);
        let s: f32 = t.sum().into_scalar::<f32>();
        assert_eq!(s, 6.0);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_is_a_clear_error() {
        let e = DeviceSpec::Cuda(0).device().unwrap_err().to_string();
        assert!(e.contains("built without CUDA") && e.contains("--features cuda"), "{e}");
    }
}
