//! The network family of the spec, in candle: one layer per file, each with its training and
//! deploy forms, and the conversion between them.

mod activation;
mod batch_norm;
mod channel_select;
mod classifier;
mod condensed_group_conv;
mod conv;
mod convolution;
mod dense_block;
mod dense_layer;
mod device_ops;
mod dropout;
mod fused_stage;
mod init;
mod layout;
mod learned_dsc_conv;
mod learned_group_conv;
mod linear;
mod network;
mod pool;
mod preact_conv;
mod preactivation;
mod state;
mod step_work;

pub use activation::Act;
pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use channel_select::ChannelSelect;
pub use classifier::{Classifier, CondensedLinear};
pub use condensed_group_conv::CondensedGroupConv;
pub use conv::{Conv2d, Conv2dConfig};
pub(crate) use convolution::convolve;
pub use dense_layer::{Bottleneck, DenseLayer, Spatial};
pub use dropout::Dropout;
pub use init::SeededInit;
pub use layout::{checkpoint_tensors, deploy_tensors};
pub use learned_dsc_conv::{LearnedDscConfig, LearnedDscConv};
pub use learned_group_conv::LearnedGroupConv;
pub use linear::Linear;
pub use network::{Form, LiveFractions, Network};
pub use pool::AvgPool2d;
pub use preact_conv::PreActConv;
pub use preactivation::PreActivation;
pub use state::{HasState, Saved, State, StateTensor};
pub use step_work::{StageKind, StageWork, StepWork};

/// What a pruning update did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Layer drops made (one per layer per drop event).
    pub drops: usize,
    /// Layers that changed form (learned-dsc masked -> separable); their parameters changed.
    pub conversions: usize,
}

impl std::ops::Add for PruneReport {
    type Output = PruneReport;
    fn add(self, o: PruneReport) -> PruneReport {
        PruneReport {
            drops: self.drops + o.drops,
            conversions: self.conversions + o.conversions,
        }
    }
}
