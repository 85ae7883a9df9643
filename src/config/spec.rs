//! [`ModelSpec`]: every key of the model family (spec section 2), and its validation.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The 1x1-position conv of a dense layer (Cin -> W).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BottleneckConv {
    /// CondenseNet learned group convolution, 1x1, pruned to `Cin / p` inputs per group.
    LearnedGroup,
    /// CondenseNeXt learned depthwise-separable conv by group-wise kernel pruning, 3x3.
    LearnedDsc,
    /// Plain 1x1 conv (DenseNet-BC).
    Dense,
}

/// The 3x3 conv of a dense layer (W -> growth).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpatialConv {
    /// Conv3x3 with `spatial_groups` groups.
    Group,
    /// Depthwise 3x3 -> BN -> activation -> pointwise 1x1.
    Dsc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    Relu,
    Relu6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Softmax cross-entropy.
    Ce,
    /// Class-balanced sigmoid focal loss (spec section 6).
    Focal,
}

/// `cardinality`: an integer, or `"W"` for "the bottleneck width of each layer" (one group
/// for learned-dsc, as the CondenseNeXt paper sets it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    Count(usize),
    Width,
}

impl Cardinality {
    /// The value for a layer whose bottleneck width is `width`.
    pub fn resolve(self, width: usize) -> usize {
        match self {
            Self::Count(n) => n,
            Self::Width => width,
        }
    }
}

impl fmt::Display for Cardinality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Width => f.write_str("W"),
        }
    }
}

impl Serialize for Cardinality {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Count(n) => s.serialize_u64(*n as u64),
            Self::Width => s.serialize_str("W"),
        }
    }
}

impl<'de> Deserialize<'de> for Cardinality {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Cardinality;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a positive integer or \"W\" (the bottleneck width)")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Cardinality, E> {
                Ok(Cardinality::Count(v as usize))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Cardinality, E> {
                usize::try_from(v)
                    .map(Cardinality::Count)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Cardinality, E> {
                match v {
                    "W" => Ok(Cardinality::Width),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Defines [`ModelSpec`] and its all-optional twin [`ModelPatch`] from one field list, so the
/// keys a file may override are exactly the keys a model has.
macro_rules! model_keys {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty, )*) => {
        /// A complete network of the family. Build one from a preset plus overrides
        /// ([`super::ModelSource`]); [`ModelSpec::validate`] states every rule.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ModelSpec {
            $( $(#[$doc])* pub $field: $ty, )*
        }

        /// Keys of a model TOML file or `--set`: a preset name plus any subset of [`ModelSpec`].
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ModelPatch {
            pub preset: Option<String>,
            $( pub $field: Option<$ty>, )*
        }

        impl ModelPatch {
            /// Overwrites the keys this patch sets.
            pub fn apply_to(self, spec: &mut ModelSpec) {
                $( if let Some(v) = self.$field { spec.$field = v; } )*
            }

            /// Names of the keys this patch sets (preset aside), in declaration order.
            pub fn keys(&self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $( if self.$field.is_some() { keys.push(stringify!($field)); } )*
                keys
            }
        }

        /// Every key of [`ModelSpec`], in declaration order.
        pub const MODEL_KEYS: &[&str] = &[ $( stringify!($field), )* ];
    };
}

model_keys! {
    /// Dense layers per block; its length is the number of blocks.
    stages: Vec<usize>,
    /// Growth rate k of each block.
    growth: Vec<usize>,
    /// Bottleneck width multiplier: W = bottleneck * growth.
    bottleneck: usize,
    bottleneck_conv: BottleneckConv,
    spatial_conv: SpatialConv,
    /// Groups of the 3x3 conv when `spatial_conv = "group"`.
    spatial_groups: usize,
    /// Pruning factor: learned-group condense factor C; learned-dsc keeps ~p kernels per input.
    p: usize,
    /// learned-group: number of groups G. learned-dsc: output channels per group.
    cardinality: Cardinality,
    activation: Activation,
    loss: Loss,
    /// Dropout rate right before each bottleneck conv, in [0, 1).
    dropout: f64,
    /// Fraction of classifier input features the deploy head keeps, in (0, 1].
    head_keep: f64,
    classes: usize,
    /// learned-dsc: number of evenly spaced kernel drops.
    prune_steps: usize,
    /// learned-dsc: training progress t of the last drop (and of the conversion), in (0, 1].
    prune_until: f64,
}

/// The most channels any layer of a model may have (checked before anything is built).
pub const MAX_CHANNELS: usize = 1 << 20;

/// Input size of every model in the family (CIFAR).
pub const INPUT_SIDE: usize = 32;
pub const INPUT_CHANNELS: usize = 3;

/// One dense layer of a [`ModelSpec`], with the channel counts it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPlan {
    pub block: usize,
    pub index: usize,
    /// Input channels.
    pub cin: usize,
    /// Growth k: channels the layer appends.
    pub growth: usize,
    /// Bottleneck width W = bottleneck * k.
    pub width: usize,
    /// Spatial side (height = width) of the layer's feature maps.
    pub side: usize,
}

impl LayerPlan {
    pub fn name(&self) -> String {
        format!("block{}.layer{}", self.block, self.index)
    }
}

impl ModelSpec {
    /// Channels out of the stem conv.
    pub fn stem_channels(&self) -> usize {
        2 * self.growth[0]
    }

    /// Every dense layer in forward order.
    pub fn layers(&self) -> Vec<LayerPlan> {
        let mut plans = Vec::new();
        let mut cin = self.stem_channels();
        for (block, (&layers, &growth)) in self.stages.iter().zip(&self.growth).enumerate() {
            let side = INPUT_SIDE >> block.min(31);
            for index in 0..layers {
                plans.push(LayerPlan {
                    block,
                    index,
                    cin,
                    growth,
                    width: self.bottleneck * growth,
                    side,
                });
                cin += growth;
            }
        }
        plans
    }

    /// Channels into the head.
    pub fn final_channels(&self) -> usize {
        self.stem_channels()
            + self
                .stages
                .iter()
                .zip(&self.growth)
                .map(|(l, g)| l * g)
                .sum::<usize>()
    }

    /// Classifier input features the deploy head keeps.
    pub fn head_kept(&self) -> usize {
        (self.final_channels() as f64 * self.head_keep).floor() as usize
    }

    /// Checks every rule; the error names the key and the rule it breaks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use ConfigError as E;
        if self.stages.is_empty() {
            return Err(E::invalid("stages", "must list at least one block"));
        }
        if let Some(i) = self.stages.iter().position(|&l| l == 0) {
            return Err(E::invalid(
                "stages",
                format!("block {i} has 0 layers; every block needs at least one"),
            ));
        }
        if self.growth.len() != self.stages.len() {
            return Err(E::invalid(
                "growth",
                format!(
                    "has {} entries but stages has {}; give one growth rate per block",
                    self.growth.len(),
                    self.stages.len()
                ),
            ));
        }
        if self.growth.contains(&0) {
            return Err(E::invalid("growth", "every growth rate must be at least 1"));
        }
        // Each block halves the side with a 2x2 pool; the head pools what is left in one window.
        if self.stages.len() > 4 {
            return Err(E::invalid(
                "stages",
                format!(
                    "{} blocks would pool 32x32 inputs below 4x4; at most 4",
                    self.stages.len()
                ),
            ));
        }
        if self.bottleneck == 0 {
            return Err(E::invalid("bottleneck", "must be at least 1"));
        }
        if self.p == 0 {
            return Err(E::invalid("p", "must be at least 1"));
        }
        if self.spatial_groups == 0 {
            return Err(E::invalid("spatial_groups", "must be at least 1"));
        }
        if let Cardinality::Count(0) = self.cardinality {
            return Err(E::invalid("cardinality", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(E::invalid(
                "dropout",
                format!("is {}; must be in [0, 1)", self.dropout),
            ));
        }
        if !(self.head_keep > 0.0 && self.head_keep <= 1.0) {
            return Err(E::invalid(
                "head_keep",
                format!("is {}; must be in (0, 1]", self.head_keep),
            ));
        }
        if self.classes < 2 {
            return Err(E::invalid(
                "classes",
                format!("is {}; need at least 2", self.classes),
            ));
        }
        if self.prune_steps == 0 {
            return Err(E::invalid("prune_steps", "must be at least 1"));
        }
        if !(self.prune_until > 0.0 && self.prune_until <= 1.0) {
            return Err(E::invalid(
                "prune_until",
                format!("is {}; must be in (0, 1]", self.prune_until),
            ));
        }
        self.check_channel_counts()?;
        if self.head_kept() == 0 {
            return Err(E::invalid(
                "head_keep",
                format!("keeps no feature of {}", self.final_channels()),
            ));
        }
        for layer in self.layers() {
            self.validate_layer(&layer)?;
        }
        Ok(())
    }

    /// Every channel count (stem, each block's growth, bottleneck widths, the concatenation)
    /// in checked arithmetic and at most [`MAX_CHANNELS`], so that nothing after this wraps or
    /// divides by a wrapped zero.
    fn check_channel_counts(&self) -> Result<(), ConfigError> {
        use ConfigError as E;
        let too_many = |key: &'static str, what: String| {
            E::invalid(
                key,
                format!("{what}; at most {MAX_CHANNELS} channels are supported"),
            )
        };
        let growth0 = self.growth[0];
        let mut channels = match growth0.checked_mul(2) {
            Some(c) if c <= MAX_CHANNELS => c,
            _ => {
                return Err(too_many(
                    "growth",
                    format!("the stem would have 2 * {growth0} channels"),
                ))
            }
        };
        for (block, (&layers, &growth)) in self.stages.iter().zip(&self.growth).enumerate() {
            match self.bottleneck.checked_mul(growth) {
                Some(w) if w <= MAX_CHANNELS => {}
                _ => {
                    return Err(too_many(
                        "bottleneck",
                        format!(
                            "block {block}: bottleneck * growth = {} * {growth} channels",
                            self.bottleneck
                        ),
                    ))
                }
            }
            match layers
                .checked_mul(growth)
                .and_then(|added| channels.checked_add(added))
            {
                Some(c) if c <= MAX_CHANNELS => channels = c,
                _ => {
                    return Err(too_many(
                        "stages",
                        format!("block {block}: {layers} layers of growth {growth} after {channels} channels"),
                    ))
                }
            }
        }
        Ok(())
    }

    fn validate_layer(&self, l: &LayerPlan) -> Result<(), ConfigError> {
        use ConfigError as E;
        let name = l.name();
        match self.spatial_conv {
            SpatialConv::Group => {
                let g = self.spatial_groups;
                if l.width % g != 0 || l.growth % g != 0 {
                    return Err(E::invalid(
                        "spatial_groups",
                        format!("{name}: a grouped 3x3 conv {} -> {} needs both divisible by {g} groups", l.width, l.growth),
                    ));
                }
            }
            SpatialConv::Dsc => {}
        }
        match self.bottleneck_conv {
            BottleneckConv::LearnedGroup => {
                let groups = self.cardinality.resolve(l.width);
                if l.cin % self.p != 0 {
                    return Err(E::invalid("p", format!("{name}: {} input channels are not divisible by the condense factor p = {}", l.cin, self.p)));
                }
                if l.cin % groups != 0 || l.width % groups != 0 {
                    return Err(E::invalid(
                        "cardinality",
                        format!("{name}: learned group conv {} -> {} needs both divisible by {groups} groups", l.cin, l.width),
                    ));
                }
            }
            BottleneckConv::LearnedDsc => {
                let card = self.cardinality.resolve(l.width);
                if card > l.width || l.width % card != 0 {
                    return Err(E::invalid(
                        "cardinality",
                        format!(
                            "{name}: {} output channels cannot be split into groups of {card}",
                            l.width
                        ),
                    ));
                }
                let groups = l.width / card;
                if l.cin % groups != 0 {
                    return Err(E::invalid(
                        "cardinality",
                        format!(
                            "{name}: {} input channels are not divisible by {groups} groups",
                            l.cin
                        ),
                    ));
                }
                if self.p > card {
                    return Err(E::invalid("p", format!("{name}: p = {} exceeds the cardinality {card}; learned-dsc needs p <= cardinality", self.p)));
                }
            }
            BottleneckConv::Dense => {}
        }
        Ok(())
    }
}

impl fmt::Display for BottleneckConv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LearnedGroup => "learned-group",
            Self::LearnedDsc => "learned-dsc",
            Self::Dense => "dense",
        })
    }
}
