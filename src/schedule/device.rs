//! Where runs execute: GPUs found by `nvidia-smi`, or CPU slots; `--devices` overrides.

use std::fmt;
use std::process::Command;

/// One place a run can execute; a slot runs one run at a time.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// A CUDA GPU; the run sees only it, as `cuda:0`, through CUDA_VISIBLE_DEVICES.
    Gpu {
        index: usize,
        name: String,
        /// Total memory in MiB, as nvidia-smi reports it.
        memory_mib: Option<u64>,
    },
    /// A share of the CPU: `threads` rayon threads.
    Cpu { slot: usize, threads: usize },
}

impl Slot {
    /// The `--device` the child gets.
    pub fn train_device(&self) -> &'static str {
        match self {
            Self::Gpu { .. } => "cuda:0",
            Self::Cpu { .. } => "cpu",
        }
    }

    /// A short name: `cuda:1`, `cpu#0`.
    pub fn label(&self) -> String {
        match self {
            Self::Gpu { index, .. } => format!("cuda:{index}"),
            Self::Cpu { slot, .. } => format!("cpu#{slot}"),
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gpu {
                index,
                name,
                memory_mib,
            } => {
                write!(f, "cuda:{index} ({name}")?;
                if let Some(m) = memory_mib {
                    write!(f, ", {m} MiB")?;
                }
                f.write_str(")")
            }
            Self::Cpu { slot, threads } => write!(f, "cpu#{slot} ({threads} threads)"),
        }
    }
}

/// Bad `--devices`.
#[derive(Debug, thiserror::Error)]
#[error("--devices {given}: {message} (expected e.g. `cuda:0,cuda:1`, `cpu` or `cpu:2`)")]
pub struct DevicesError {
    pub given: String,
    pub message: String,
}

/// Logical CPUs of this machine.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The GPUs `nvidia-smi` reports; empty when it is missing or fails.
pub fn discover_gpus() -> Vec<Slot> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output();
    let Ok(out) = out else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(',').map(str::trim);
            let index = fields.next()?.parse().ok()?;
            let name = fields.next().unwrap_or("GPU").to_string();
            let memory_mib = fields.next().and_then(|m| m.parse().ok());
            Some(Slot::Gpu {
                index,
                name,
                memory_mib,
            })
        })
        .collect()
}

/// Most CPU slots `--devices` may ask for, per core: beyond it a count is surely a typo, and
/// each slot is a process with its own model and data.
pub const MAX_SLOTS_PER_CORE: usize = 4;

/// `count` CPU slots of `threads` threads each.
pub fn cpu_slots(count: usize, threads: usize) -> Vec<Slot> {
    (0..count)
        .map(|slot| Slot::Cpu {
            slot,
            threads: threads.max(1),
        })
        .collect()
}

/// A warning when `slots` ask for more CPU threads than this machine has cores.
pub fn oversubscribed(slots: &[Slot]) -> Option<String> {
    let threads: usize = slots
        .iter()
        .map(|s| match s {
            Slot::Cpu { threads, .. } => *threads,
            Slot::Gpu { .. } => 0,
        })
        .sum();
    let cores = cpu_count();
    (threads > cores).then(|| {
        format!(
            "the CPU slots ask for {threads} threads on {cores} cores: runs will share cores \
             and each will be slower than on its own"
        )
    })
}

/// The slots `given` (`--devices`) names.
pub fn slots(given: &str) -> Result<Vec<Slot>, DevicesError> {
    let err = |message: String| DevicesError {
        given: given.to_string(),
        message,
    };
    let known = discover_gpus();
    let mut slots = Vec::new();
    for part in given.split(',').map(str::trim) {
        if part == "cpu" || part.starts_with("cpu:") {
            let n: usize = match part.strip_prefix("cpu:") {
                None => 1,
                Some(n) => n.parse().ok().filter(|&n| n >= 1).ok_or_else(|| {
                    err(format!("`{part}`: the slot count must be an integer >= 1"))
                })?,
            };
            let cores = cpu_count();
            let most = MAX_SLOTS_PER_CORE * cores;
            let cpus = slots
                .iter()
                .filter(|s| matches!(s, Slot::Cpu { .. }))
                .count();
            if n > most || cpus + n > most {
                return Err(err(format!(
                    "at most {most} CPU slots on this {cores}-core machine \
                     ({MAX_SLOTS_PER_CORE} per core), got {}",
                    cpus + n
                )));
            }
            let threads = (cores / n).max(1);
            let first = slots.len();
            slots.extend((0..n).map(|i| Slot::Cpu {
                slot: first + i,
                threads,
            }));
        } else if let Some(i) = part.strip_prefix("cuda:") {
            let index: usize = i
                .parse()
                .map_err(|_| err(format!("`{part}`: the GPU index must be an integer")))?;
            let found = known
                .iter()
                .find(|s| matches!(s, Slot::Gpu { index: k, .. } if *k == index));
            slots.push(found.cloned().unwrap_or(Slot::Gpu {
                index,
                name: "GPU".into(),
                memory_mib: None,
            }));
        } else {
            return Err(err(format!("`{part}` is not a device")));
        }
    }
    if slots.is_empty() {
        return Err(err("no devices given".into()));
    }
    let mut labels: Vec<String> = slots.iter().map(Slot::label).collect();
    labels.sort();
    if labels.windows(2).any(|w| w[0] == w[1]) {
        return Err(err("a device is listed twice".into()));
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_slots_and_gpus() {
        let s = slots("cpu:2").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].label(), "cpu#1");
        let s = slots("cuda:0,cuda:3").unwrap();
        assert_eq!(s[1].label(), "cuda:3");
        assert_eq!(s[1].train_device(), "cuda:0");
        let too_many = format!("cpu:{}", MAX_SLOTS_PER_CORE * cpu_count() + 1);
        for bad in [
            "cuda:x",
            "cpu:0",
            "tpu",
            "cuda:1,cuda:1",
            "",
            "cpu:100000000",
            &too_many,
        ] {
            assert!(slots(bad).is_err(), "{bad}");
        }
        let e = slots("cpu:100000000").unwrap_err().to_string();
        assert!(e.contains("at most") && e.contains("cpu:100000000"), "{e}");
    }

    /// More CPU threads than cores is a warning: `cpu,cpu` asks for every core twice.
    #[test]
    fn oversubscription_is_noticed() {
        let cores = cpu_count();
        assert!(oversubscribed(&cpu_slots(1, cores)).is_none());
        assert!(oversubscribed(&slots("cpu,cpu").unwrap()).is_some());
        assert!(oversubscribed(&cpu_slots(cores + 1, 1)).is_some());
    }
}
