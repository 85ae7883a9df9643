//! Deploy form of a learned group convolution (spec section 3).

use candle_core::{Module, Result, Tensor};
use candle_nn::ModuleT;

use super::channel_select::ChannelSelect;
use super::conv::{Conv2d, Conv2dConfig};
use super::preactivation::PreActivation;
use super::state::{saved_like, HasState, Saved, State, StateTensor};
use crate::cost::{trace, Cost, LayerCost};

/// index-select of the kept (group, input) pairs -> BN -> act -> 1x1 conv with `G` groups
/// (each group's outputs contiguous) -> channel shuffle back to the interleaved order.
#[derive(Debug, Clone)]
pub struct CondensedGroupConv {
    name: String,
    /// `G * Cin/C` input channels, group by group, ascending within a group.
    select: ChannelSelect,
    /// Each group's outputs contiguous -> interleaved.
    shuffle: ChannelSelect,
    pre: PreActivation,
    conv: Conv2d,
}

impl CondensedGroupConv {
    pub fn new(
        name: String,
        index: Tensor,
        pre: PreActivation,
        weight: Tensor,
        groups: usize,
    ) -> Result<Self> {
        let cfg = Conv2dConfig {
            groups,
            ..Conv2dConfig::pointwise()
        };
        let conv = Conv2d::from_weight(format!("{name}.conv"), &weight, cfg)?;
        let shuffle = ChannelSelect::shuffle(weight.dim(0)?, groups, weight.device())?;
        Ok(Self {
            name,
            select: ChannelSelect::new(index)?,
            shuffle,
            pre,
            conv,
        })
    }

    /// The layer's name (`{name}.index`, `{name}.bn.*`, `{name}.conv.weight`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The index-select of the kept (group, input) pairs.
    pub fn select(&self) -> &ChannelSelect {
        &self.select
    }

    /// BN -> act over the selected channels.
    pub fn pre(&self) -> &PreActivation {
        &self.pre
    }

    /// The grouped 1x1 conv, each group's outputs contiguous.
    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    /// The channel shuffle after the conv (a permutation: view `(G, W/G)`, transpose, flatten).
    pub fn shuffle(&self) -> &ChannelSelect {
        &self.shuffle
    }

    /// Takes the index-select saved as `{name}.index` in `saved`, over `cin` input channels.
    pub fn restore_index(&mut self, saved: &Saved, cin: usize) -> Result<()> {
        let name = format!("{}.index", self.name);
        let index = saved_like(saved, &name, self.select.index())?;
        self.select = ChannelSelect::restore(&name, index, cin)?;
        Ok(())
    }
}

impl ModuleT for CondensedGroupConv {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.select.forward(x)?;
        trace::record(|| {
            LayerCost::same(&format!("{}.index", self.name), "index-select", Cost::ZERO)
        });
        let y = self
            .shuffle
            .forward(&self.conv.forward_pre(&self.pre, &x, train)?)?;
        trace::record(|| LayerCost::same(&format!("{}.shuffle", self.name), "shuffle", Cost::ZERO));
        Ok(y)
    }
}

impl HasState for CondensedGroupConv {
    fn collect_state(&self, out: &mut State) {
        out.push((
            format!("{}.index", self.name),
            StateTensor::Index(self.select.index().clone()),
        ));
        self.pre.collect_state(out);
        self.conv.collect_state(out);
    }
}
