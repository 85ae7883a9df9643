//! Whether a model can be built (and trained at a batch size) in this machine's memory, decided
//! from the spec before anything is allocated.

use super::{BottleneckConv, ConfigError, ModelSpec, SpatialConv};

/// A lower bound of the memory a model needs, in bytes (f32 elements), by what takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryFloor {
    /// The conv weights (the dense training-form weights of the bottleneck and spatial convs).
    pub convs: u128,
    /// The classifier's weight.
    pub classifier: u128,
    /// The feature maps a training step keeps for its backward pass (every layer's input and
    /// bottleneck output), at the batch size; 0 when only building.
    pub features: u128,
}

impl MemoryFloor {
    /// `batch` = 0: building and counting the model (its weights). Otherwise one training
    /// step at that batch: weights, their gradients and momentum, and the stored features.
    pub fn of(spec: &ModelSpec, batch: usize) -> Self {
        let mut convs: u128 = 0;
        let mut features: u128 = 0;
        for l in spec.layers() {
            let (cin, width, growth) = (l.cin as u128, l.width as u128, l.growth as u128);
            convs += match spec.bottleneck_conv {
                BottleneckConv::LearnedGroup | BottleneckConv::Dense => width * cin,
                BottleneckConv::LearnedDsc => {
                    let groups = (width / spec.cardinality.resolve(l.width).max(1) as u128).max(1);
                    width * (cin / groups) * 9
                }
            };
            convs += match spec.spatial_conv {
                SpatialConv::Group => growth * (width / spec.spatial_groups.max(1) as u128) * 9,
                SpatialConv::Dsc => width * 9 + growth * width,
            };
            features += (cin + width) * (l.side * l.side) as u128;
        }
        let classifier = spec.final_channels() as u128 * spec.classes as u128;
        let copies = if batch == 0 { 1 } else { 3 };
        Self {
            convs: 4 * copies * convs,
            classifier: 4 * copies * classifier,
            features: 4 * features * batch as u128,
        }
    }

    pub fn total(&self) -> u128 {
        self.convs + self.classifier + self.features
    }

    /// The key that takes the most: `classes`, `train.batch` or `stages`.
    fn key(&self) -> &'static str {
        if self.classifier >= self.convs && self.classifier >= self.features {
            "classes"
        } else if self.features >= self.convs {
            "train.batch"
        } else {
            "stages"
        }
    }
}

/// Memory the kernel says can be allocated without swapping (`MemAvailable`), bytes; `None`
/// where /proc/meminfo is missing.
pub fn available_memory() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u128>()
        .ok()?;
    Some(kb * 1024)
}

/// Refuses a model whose [`MemoryFloor`] (at `batch`; 0 to build it only) exceeds this
/// machine's available memory, naming the key that takes the most and the estimate.
pub fn check_fits(spec: &ModelSpec, batch: usize) -> Result<(), ConfigError> {
    let floor = MemoryFloor::of(spec, batch);
    let what = if batch == 0 {
        "building it".to_string()
    } else {
        format!("a training step at batch {batch}")
    };
    let detail = format!(
        "conv weights {:.1}, classifier {:.1}, feature maps {:.1}",
        gb(floor.convs),
        gb(floor.classifier),
        gb(floor.features)
    );
    check_bytes(floor.key(), &what, floor.total(), &detail)
}

/// Refuses `bytes` of memory that `what` needs when this machine has less available, naming
/// `key`; `detail` (what takes them, in GB) follows the total in the message.
pub fn check_bytes(
    key: &'static str,
    what: &str,
    bytes: u128,
    detail: &str,
) -> Result<(), ConfigError> {
    let Some(available) = available_memory() else {
        return Ok(());
    };
    if bytes <= available {
        return Ok(());
    }
    Err(ConfigError::invalid(
        key,
        format!(
            "{what} needs at least {:.1} GB ({detail}) but this machine has {:.1} GB available",
            gb(bytes),
            gb(available)
        ),
    ))
}

/// Bytes in (decimal) GB, for messages.
fn gb(bytes: u128) -> f64 {
    bytes as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelSource;

    fn spec(model: &str, sets: &[&str]) -> ModelSpec {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        ModelSource::parse(model).resolve(&sets).unwrap().spec
    }

    /// The floor stays below what training really takes (CondenseNet-86 at batch 64 peaks at
    /// about 1.5 GB), and grows with the keys that make a model huge.
    #[test]
    fn the_floor_is_a_floor_and_names_the_key() {
        let cn86 = MemoryFloor::of(&spec("condensenet-86", &[]), 64);
        assert!(cn86.total() < 1_400_000_000, "{cn86:?}");
        assert!(cn86.total() > 300_000_000, "{cn86:?}");
        let wide = MemoryFloor::of(&spec("condensenext", &["classes=99999999"]), 0);
        assert_eq!(wide.key(), "classes");
        assert!(wide.total() > 40_000_000_000, "{wide:?}");
        let deep = MemoryFloor::of(&spec("condensenext", &["stages=[1000,1000,1000]"]), 0);
        assert_eq!(deep.key(), "stages");
        assert!(deep.total() > 30_000_000_000, "{deep:?}");
        let batch = MemoryFloor::of(&spec("condensenext", &[]), 100_000_000);
        assert_eq!(batch.key(), "train.batch");
    }
}
