//! One conv of a dense layer in the form the fused dense block runs it
//! ([`super::dense_block`]): what each layer kind hands the block.

use candle_core::{Result, Tensor};

use super::batch_norm::BatchNorm;
use super::preactivation::PreActivation;
use crate::kernels::{BlockStage, StageConv};

/// One conv of a layer as the fused block runs it: its description, its parameters
/// (`[running mean; running var; gamma; beta; weight]`, the weight as the conv reads it:
/// masked, or made from other weights) and the BN whose running statistics it updates.
pub struct FusedStage<'a> {
    pub(super) stage: BlockStage,
    pub(super) params: [Tensor; 5],
    pub(super) norm: &'a BatchNorm,
}

impl<'a> FusedStage<'a> {
    /// `pre` followed by `conv` with weight `w`, `cin -> cout` channels.
    pub(super) fn new(
        pre: &'a PreActivation,
        conv: StageConv,
        w: &Tensor,
        shape: (usize, usize),
        train: bool,
    ) -> Result<Self> {
        let (stage, params) = pre.block_stage(conv, w, shape, train)?;
        Ok(Self {
            stage,
            params,
            norm: pre.norm(),
        })
    }
}
