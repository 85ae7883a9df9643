//! A fixed index-select over channels (repeats allowed): the condensed layers' input
//! selection and the channel shuffle.

use candle_core::{Module, Result, Tensor};

use crate::kernels::{self, select_channels, ChannelIndex};

/// `y[:, j] = x[:, index[j]]`. The index is held as a u32 tensor (the saved state) and on the
/// host (for the kernel); both always hold the same values.
#[derive(Debug, Clone)]
pub struct ChannelSelect {
    index: Tensor,
    host: ChannelIndex,
}

impl ChannelSelect {
    /// From a u32 index tensor.
    pub fn new(index: Tensor) -> Result<Self> {
        let host = ChannelIndex::new(index.to_vec1::<u32>()?);
        Ok(Self { index, host })
    }

    /// The channel shuffle of `channels` channels in `groups` groups: view
    /// `(groups, channels / groups)`, transpose, flatten.
    pub fn shuffle(channels: usize, groups: usize, device: &candle_core::Device) -> Result<Self> {
        let host = ChannelIndex::shuffle(channels, groups);
        let index = Tensor::from_vec(host.to_vec(), channels, device)?;
        Ok(Self { index, host })
    }

    /// The u32 index tensor.
    pub fn index(&self) -> &Tensor {
        &self.index
    }

    /// The index values: output channel `j` reads input channel `values()[j]`.
    pub fn values(&self) -> Vec<u32> {
        self.host.to_vec()
    }

    /// From a saved u32 (or integer-valued) index over `channels` input channels; fails,
    /// naming `name`, when a value is out of range.
    pub fn restore(name: &str, index: &Tensor, channels: usize) -> Result<Self> {
        let index = index.to_dtype(candle_core::DType::U32)?;
        let values = index.to_vec1::<u32>()?;
        if let Some(&bad) = values.iter().find(|&&i| i as usize >= channels) {
            candle_core::bail!(
                "tensor `{name}` selects channel {bad} of an input with {channels} channels"
            );
        }
        Self::new(index)
    }
}

impl Module for ChannelSelect {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if kernels::fast_for(x) {
            select_channels(x, &self.host)
        } else {
            x.index_select(&self.index, 1)
        }
    }
}
