//! The devices a device-parametrized test runs on: [`devices`].
//!
//! A test of a device-agnostic invariant (exact selection, masked optimizers, DNR, a
//! pruning event) loops over [`devices`] and compares each device's result with the
//! CPU's. By default that is the CPU, plus the first CUDA device where libtorch sees one;
//! [`DEVICES_VAR`] restricts or requires: `AP_TEST_DEVICES=cuda` runs on CUDA only and
//! fails loudly where there is none (what `xtask/gpu-check.sh` sets on a GPU machine),
//! `AP_TEST_DEVICES=cpu` keeps a CUDA machine's tests on the CPU, and a comma-separated
//! list (`cpu,cuda:1`) names several.

use tch::Device;

/// The variable that restricts or requires the devices of [`devices`].
pub const DEVICES_VAR: &str = "AP_TEST_DEVICES";

/// The devices to run a device-parametrized test on, in order: those [`DEVICES_VAR`]
/// names, else the CPU and, where libtorch sees one, `cuda:0`.
///
/// # Panics
/// When [`DEVICES_VAR`] names something other than `cpu`, `cuda` or `cuda:N`, or a CUDA
/// device this machine does not have: a device that was asked for is never skipped.
pub fn devices() -> Vec<Device> {
    let named = std::env::var(DEVICES_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let cuda = tch::Cuda::is_available().then(tch::Cuda::device_count);
    let list = match named {
        Some(v) => parse_devices(&v, cuda.unwrap_or(0)).unwrap_or_else(|e| panic!("{e}")),
        None => {
            let mut d = vec![Device::Cpu];
            if cuda.is_some() {
                d.push(Device::Cuda(0));
            }
            d
        }
    };
    eprintln!("device-parametrized test on {list:?}");
    list
}

/// Parses a [`DEVICES_VAR`] value against a machine with `cuda_count` CUDA devices.
pub fn parse_devices(value: &str, cuda_count: i64) -> Result<Vec<Device>, String> {
    let mut out = vec![];
    for part in value.split(',').map(str::trim) {
        let device = match part {
            "cpu" => Device::Cpu,
            "cuda" => Device::Cuda(0),
            _ => match part.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Device::Cuda(i),
                _ => {
                    return Err(format!(
                        "{DEVICES_VAR}={value}: `{part}` is not cpu, cuda or cuda:N"
                    ))
                }
            },
        };
        if let Device::Cuda(i) = device {
            if i as i64 >= cuda_count {
                return Err(format!(
                    "{DEVICES_VAR}={value} requires CUDA device {i}, but libtorch sees {cuda_count} \
                     CUDA device(s) here (is this libtorch built with CUDA, is the driver loaded?)"
                ));
            }
        }
        if !out.contains(&device) {
            out.push(device);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_a_missing_cuda_device_is_an_error() {
        assert_eq!(parse_devices("cpu", 0), Ok(vec![Device::Cpu]));
        assert_eq!(
            parse_devices("cpu, cuda,cuda:1,cuda:0", 2),
            Ok(vec![Device::Cpu, Device::Cuda(0), Device::Cuda(1)])
        );
        let e = parse_devices("cuda", 0).unwrap_err();
        assert!(
            e.contains("requires CUDA device 0") && e.contains("sees 0"),
            "{e}"
        );
        assert!(parse_devices("cuda:2", 2).unwrap_err().contains("device 2"));
        let e = parse_devices("gpu", 1).unwrap_err();
        assert!(e.contains("`gpu` is not cpu, cuda or cuda:N"), "{e}");
        assert!(parse_devices("cuda:x", 1).is_err());
    }

    #[test]
    fn unset_means_the_cpu_then_cuda_where_present() {
        let cuda = tch::Cuda::is_available().then(tch::Cuda::device_count);
        let want = match std::env::var(DEVICES_VAR) {
            Ok(v) if !v.trim().is_empty() => parse_devices(&v, cuda.unwrap_or(0)).unwrap(),
            _ => [Device::Cpu]
                .into_iter()
                .chain(cuda.map(|_| Device::Cuda(0)))
                .collect(),
        };
        assert_eq!(devices(), want);
    }
}
