//! Named presets (spec section 2). Each is a complete [`ModelSpec`].

use super::spec::{Activation, BottleneckConv, Cardinality, Loss, ModelSpec, SpatialConv};
use super::ConfigError;

/// Preset names as a user types them (`condensenet-<N>` stands for every N = 6L+2).
pub const PRESET_NAMES: &[&str] = &[
    "condensenet-<N>",
    "condensenet-182",
    "condensenet-86-dsc",
    "condensenext",
];

/// CondenseNet-N: L = (N-2)/6 layers per block, growth 8-16-32, G = C = 4 (the reference
/// CIFAR recipe).
fn condensenet(layers_per_block: usize, growth: [usize; 3]) -> ModelSpec {
    ModelSpec {
        stages: vec![layers_per_block; 3],
        growth: growth.to_vec(),
        bottleneck: 4,
        bottleneck_conv: BottleneckConv::LearnedGroup,
        spatial_conv: SpatialConv::Group,
        spatial_groups: 4,
        p: 4,
        cardinality: Cardinality::Count(4),
        activation: Activation::Relu,
        loss: Loss::Ce,
        dropout: 0.0,
        head_keep: 0.5,
        classes: 10,
        prune_steps: 8,
        prune_until: 2.0 / 3.0,
    }
}

impl Default for ModelSpec {
    /// CondenseNet-86, the paper's baseline.
    fn default() -> Self {
        condensenet(14, [8, 16, 32])
    }
}

/// The preset called `name`.
pub fn preset(name: &str) -> Result<ModelSpec, ConfigError> {
    match name {
        "condensenet-182" => return Ok(condensenet(30, [12, 24, 48])),
        "condensenet-86-dsc" => {
            return Ok(ModelSpec {
                spatial_conv: SpatialConv::Dsc,
                ..condensenet(14, [8, 16, 32])
            })
        }
        "condensenext" => {
            // The paper's text where explicit (p = 4, cardinality = output channels, ReLU6,
            // focal loss, dropout 0.1); the authors' released configuration elsewhere.
            return Ok(ModelSpec {
                stages: vec![4, 4, 4],
                growth: vec![8, 8, 8],
                bottleneck_conv: BottleneckConv::LearnedDsc,
                cardinality: Cardinality::Width,
                activation: Activation::Relu6,
                loss: Loss::Focal,
                dropout: 0.1,
                ..condensenet(4, [8, 8, 8])
            });
        }
        _ => {}
    }
    let depth = name
        .strip_prefix("condensenet-")
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| ConfigError::UnknownPreset(name.to_string()))?;
    if depth < 8 || (depth - 2) % 6 != 0 {
        return Err(ConfigError::UnknownPreset(name.to_string()));
    }
    Ok(condensenet((depth - 2) / 6, [8, 16, 32]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_valid() {
        for name in [
            "condensenet-50",
            "condensenet-86",
            "condensenet-122",
            "condensenet-182",
            "condensenet-86-dsc",
            "condensenext",
        ] {
            preset(name)
                .unwrap()
                .validate()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn depth_must_be_6l_plus_2() {
        assert_eq!(preset("condensenet-86").unwrap().stages, vec![14, 14, 14]);
        assert_eq!(preset("condensenet-8").unwrap().stages, vec![1, 1, 1]);
        for bad in [
            "condensenet-87",
            "condensenet-2",
            "condensenet-",
            "densenet-86",
            "condensenet-x",
        ] {
            assert!(
                matches!(preset(bad), Err(ConfigError::UnknownPreset(_))),
                "{bad}"
            );
        }
    }
}
