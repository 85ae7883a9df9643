//! CondenseNet's learned group convolution, training form (spec section 3).

use candle_core::{Result, Tensor, Var};
use candle_nn::{ModuleT, VarBuilder};

use super::condensed_group_conv::CondensedGroupConv;
use super::conv::{conv_init, Conv2dConfig};
use super::dropout::Dropout;
use super::fused_stage::FusedStage;
use super::preactivation::PreActivation;
use super::state::{
    fresh_var, from_host, host_values, saved_like, HasState, Saved, State, StateTensor,
};
use crate::config::Activation;
use crate::cost::{trace, Cost, LayerCost};
use crate::kernels::{GroupInputs, StageConv};

/// The conv reads only each group's live inputs ([`crate::kernels::StageConv::Live`]) once
/// at most this fraction of them is live; above it the masked dense conv (one larger GEMM
/// instead of one per group) is faster. Both compute the same output. Measured with
/// `ablate bench --models condensenet-86 --progress t` (2 cores, batch 64): at 3/4 live the
/// live kernel trains at 0.88x the dense one's speed, at 1/2 about even (1.04x), at 1/4
/// faster.
const LIVE_BELOW: f64 = 0.5;

/// BN -> act -> (dropout) -> 1x1 conv `Cin -> W` whose weight is multiplied by a mask.
///
/// Output channel `o` belongs to group `o mod G`. All outputs of a group read the same inputs,
/// so the mask is stored as one row per group (`kept[g][j]`); the dense `[W, Cin]` float mask
/// the conv multiplies by is derived from it.
#[derive(Debug, Clone)]
pub struct LearnedGroupConv {
    name: String,
    pre: PreActivation,
    /// `[W, Cin, 1, 1]`, the full dense weight (masked entries stay and keep training).
    weight: Var,
    groups: usize,
    condense_factor: usize,
    kept: Vec<Vec<bool>>,
    /// `[W, Cin, 1, 1]` float 0/1, always equal to `kept` spread over each group's outputs.
    mask: Tensor,
    /// `kept` as each group's list of live inputs, for the kernel that skips pruned work.
    live: GroupInputs,
    /// Drops done so far, 0 ..= C-1.
    stage: usize,
}

impl LearnedGroupConv {
    /// Needs `cin % condense_factor == 0`, `cin % groups == 0`, `width % groups == 0`
    /// (checked by `ModelSpec::validate`).
    pub fn new(
        cin: usize,
        width: usize,
        groups: usize,
        condense_factor: usize,
        act: Activation,
        dropout: Option<Dropout>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight =
            vb.pp("conv")
                .get_with_hints((width, cin, 1, 1), "weight", conv_init(1, width))?;
        let kept = vec![vec![true; cin]; groups];
        let mask = Self::mask_tensor(&kept, width, &weight)?;
        let live = GroupInputs::from_kept(&kept)?;
        Ok(Self {
            name: vb.prefix(),
            pre: PreActivation::new(cin, act, dropout, &vb)?,
            weight: fresh_var(&weight)?,
            groups,
            condense_factor,
            kept,
            mask,
            live,
            stage: 0,
        })
    }

    /// The `[W, Cin, 1, 1]` mask of `kept`, with the dtype and device of `like`.
    fn mask_tensor(kept: &[Vec<bool>], width: usize, like: &Tensor) -> Result<Tensor> {
        let (g, cin) = (kept.len(), kept[0].len());
        let values: Vec<f64> = (0..width)
            .flat_map(|o| kept[o % g].iter().map(|&k| if k { 1.0 } else { 0.0 }))
            .collect();
        from_host(values, (width, cin, 1, 1), like)
    }

    fn cin(&self) -> usize {
        self.kept[0].len()
    }

    fn width(&self) -> usize {
        self.mask.dim(0).unwrap_or(0)
    }

    /// The stage for progress `t`: the smallest i in 0..C-1 with `2t < (i+1)/(C-1)`, else C-1.
    pub fn stage_at(&self, t: f64) -> usize {
        let c = self.condense_factor;
        (0..c.saturating_sub(1))
            .find(|&i| 2.0 * t < (i + 1) as f64 / (c - 1) as f64)
            .unwrap_or(c - 1)
    }

    /// The progress values in (0, 1) at which a drop happens: `i / (2 (C-1))`, i = 1..C-1.
    pub fn schedule_changes(&self) -> Vec<f64> {
        let c = self.condense_factor;
        (1..c).map(|i| i as f64 / (2 * (c - 1)) as f64).collect()
    }

    /// Input channels each group reads now.
    pub fn live_per_group(&self) -> usize {
        self.kept[0].iter().filter(|&&k| k).count()
    }

    /// Live and all input connections (output, input channel) of the conv: each output reads
    /// its group's live inputs.
    pub fn live_connections(&self) -> (usize, usize) {
        let width = self.width();
        (width * self.live_per_group(), width * self.cin())
    }

    /// Drops until the stage of `t` is reached; returns the number of drops done.
    pub fn advance_schedule(&mut self, t: f64) -> Result<usize> {
        let target = self.stage_at(t);
        let mut dropped = 0;
        while self.stage < target {
            self.drop_inputs()?;
            self.stage += 1;
            dropped += 1;
        }
        Ok(dropped)
    }

    /// Puts the layer at the stage of progress `t` with the mask saved in `saved`.
    pub fn restore_schedule(&mut self, t: f64, saved: &Saved) -> Result<()> {
        let name = format!("{}.conv.mask", self.name);
        let m = host_values(saved_like(saved, &name, &self.mask)?)?;
        let (cin, width, g) = (self.cin(), self.width(), self.groups);
        // Output o < G is the first output of group o.
        let kept: Vec<Vec<bool>> = (0..g)
            .map(|group| (0..cin).map(|j| m[group * cin + j] != 0.0).collect())
            .collect();
        let stage = self.stage_at(t);
        let expect_live = cin - stage * (cin / self.condense_factor);
        let mask = Self::mask_tensor(&kept, width, &self.mask)?;
        if host_values(&mask)? != m
            || kept
                .iter()
                .any(|k| k.iter().filter(|&&x| x).count() != expect_live)
        {
            candle_core::bail!(
                "checkpoint mask `{name}` is not a stage-{stage} learned-group mask \
                 ({expect_live} live inputs in every group, shared by the group's outputs)"
            );
        }
        self.live = GroupInputs::from_kept(&kept)?;
        self.kept = kept;
        self.mask = mask;
        self.stage = stage;
        Ok(())
    }

    /// Every group drops its `Cin / C` live inputs of lowest L1 score over the group's outputs.
    fn drop_inputs(&mut self) -> Result<()> {
        let (cin, width, g) = (self.cin(), self.width(), self.groups);
        let delta = cin / self.condense_factor;
        let w = host_values(&(self.weight.as_tensor() * &self.mask)?)?;
        for (group, kept) in self.kept.iter_mut().enumerate() {
            let mut score = vec![0f64; cin];
            for o in (group..width).step_by(g) {
                for (j, s) in score.iter_mut().enumerate() {
                    *s += w[o * cin + j].abs();
                }
            }
            let mut live: Vec<usize> = (0..cin).filter(|&j| kept[j]).collect();
            live.sort_by(|&a, &b| score[a].total_cmp(&score[b]).then(a.cmp(&b)));
            for &j in live.iter().take(delta) {
                kept[j] = false;
            }
        }
        self.mask = Self::mask_tensor(&self.kept, width, &self.mask)?;
        self.live = GroupInputs::from_kept(&self.kept)?;
        Ok(())
    }

    /// Where the schedule has this layer, e.g. `learned-group 1/2 live`.
    pub fn schedule_state(&self) -> String {
        let c = self.condense_factor;
        format!("learned-group {}/{c} live", c - self.stage)
    }

    /// Whether all C-1 drops are done (condensation ended).
    pub fn is_condensed(&self) -> bool {
        self.stage + 1 >= self.condense_factor
    }

    /// The deploy form: index-select -> BN -> act -> group conv -> shuffle (spec section 3).
    pub fn condense(&self) -> Result<CondensedGroupConv> {
        if !self.is_condensed() {
            candle_core::bail!(
                "{}: condensation has not finished ({} of {} drops)",
                self.name,
                self.stage,
                self.condense_factor - 1
            );
        }
        let (cin, width, g) = (self.cin(), self.width(), self.groups);
        let per_group: Vec<Vec<u32>> = self
            .kept
            .iter()
            .map(|k| (0..cin).filter(|&j| k[j]).map(|j| j as u32).collect())
            .collect();
        let cin_g = per_group[0].len();
        let w = host_values(self.weight.as_tensor())?;
        let out_g = width / g;
        let mut new_w = vec![0f64; width * cin_g];
        for (group, cols) in per_group.iter().enumerate() {
            for k in 0..out_g {
                let (new_row, old_row) = (group * out_g + k, group + k * g);
                for (n, &j) in cols.iter().enumerate() {
                    new_w[new_row * cin_g + n] = w[old_row * cin + j as usize];
                }
            }
        }
        let device = self.weight.device();
        let index = Tensor::from_vec(per_group.concat(), cin_g * g, device)?;
        let pre = self.pre.select(&self.name, &index)?;
        let weight = from_host(new_w, (width, cin_g, 1, 1), self.weight.as_tensor())?;
        CondensedGroupConv::new(self.name.clone(), index, pre, weight, g)
    }
}

impl LearnedGroupConv {
    /// This conv as a stage of the fused dense block: the live 1x1 once at most
    /// [`LIVE_BELOW`] of the inputs are live, else the dense 1x1 of the masked weight.
    pub fn block_stage(&self, train: bool) -> Result<FusedStage<'_>> {
        let shape = (self.cin(), self.width());
        let live_fraction = self.live_per_group() as f64 / self.cin() as f64;
        if live_fraction <= LIVE_BELOW {
            let conv = StageConv::Live(self.live.clone());
            return FusedStage::new(&self.pre, conv, self.weight.as_tensor(), shape, train);
        }
        let w = (self.weight.as_tensor() * &self.mask)?;
        FusedStage::new(
            &self.pre,
            StageConv::Pointwise { groups: 1 },
            &w,
            shape,
            train,
        )
    }
}

impl ModuleT for LearnedGroupConv {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let live_fraction = self.live_per_group() as f64 / self.cin() as f64;
        let live = if live_fraction <= LIVE_BELOW {
            self.pre
                .convolve_live(x, self.weight.as_tensor(), &self.live, train)?
        } else {
            None
        };
        let y = match live {
            Some(y) => y,
            None => {
                let w = (self.weight.as_tensor() * &self.mask)?;
                self.pre.convolve(x, &w, Conv2dConfig::pointwise(), train)?
            }
        };
        trace::record(|| {
            let (cin, width) = (self.cin() as u64, self.width() as u64);
            let full = cin * width * (y.dim(2).unwrap_or(0) * y.dim(3).unwrap_or(0)) as u64;
            let c = self.condense_factor as u64;
            LayerCost {
                name: format!("{}.conv", self.name),
                op: format!("learned-group1x1/g{}", self.groups),
                // measure_model: the full 1x1 cost and params divided by C.
                paper: Cost::new(full / c, cin * width / c),
                executed: Cost::new(full, cin * width),
            }
        });
        Ok(y)
    }
}

impl HasState for LearnedGroupConv {
    fn collect_state(&self, out: &mut State) {
        self.pre.collect_state(out);
        out.push((
            format!("{}.conv.weight", self.name),
            StateTensor::Param(self.weight.clone()),
        ));
        out.push((
            format!("{}.conv.mask", self.name),
            StateTensor::Mask(self.mask.clone()),
        ));
    }
}
