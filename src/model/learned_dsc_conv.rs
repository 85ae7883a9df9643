//! CondenseNeXt's learned depthwise-separable conv by group-wise kernel pruning (spec section 4).

use candle_core::{Module, Result, Tensor, Var};
use candle_nn::{ModuleT, VarBuilder};

use super::channel_select::ChannelSelect;
use super::conv::{conv_init, Conv2d, Conv2dConfig};
use super::dropout::Dropout;
use super::fused_stage::FusedStage;
use super::preactivation::PreActivation;
use super::state::{
    fresh_var, from_host, host_values, saved_like, HasState, Saved, State, StateTensor,
};
use super::PruneReport;
use crate::config::Activation;
use crate::cost::{conv_flops, trace, Cost, LayerCost};
use crate::kernels::{self, separable_conv, KernelPairs, LiveKernels, StageConv};

/// Pruning schedule and shape of a [`LearnedDscConv`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnedDscConfig {
    /// Output channels per group; groups = W / cardinality.
    pub cardinality: usize,
    /// Pruning factor: a group ends with about `p * in_per_group` kernels.
    pub p: usize,
    /// Number of evenly spaced drops.
    pub steps: usize,
    /// Progress of the last drop, after which the layer converts.
    pub until: f64,
}

#[derive(Debug, Clone)]
enum DscForm {
    /// A grouped 3x3 conv `[W, Cin/groups, 3, 3]` times a per-kernel 0/1 mask.
    Masked {
        weight: Var,
        /// `kept[o * in_per_group + i]`: kernel (out o, in i of o's group) is live.
        kept: Vec<bool>,
        /// `[W, Cin/groups, 1, 1]` float 0/1, equal to `kept`.
        mask: Tensor,
        drops: usize,
    },
    /// index-select of the kept kernels' inputs -> depthwise 3x3 on `T` channels -> 1x1 `T -> W`.
    Separable {
        select: ChannelSelect,
        /// `select`'s index as the depthwise conv's pairs `(t, index[t])`.
        pairs: KernelPairs,
        dw: Conv2d,
        pw: Conv2d,
    },
}

/// BN -> act -> (dropout) -> learned-dsc. Converts itself to the separable form right after
/// the last drop; training continues on that form.
#[derive(Debug, Clone)]
pub struct LearnedDscConv {
    name: String,
    pre: PreActivation,
    cfg: LearnedDscConfig,
    cin: usize,
    width: usize,
    form: DscForm,
}

impl LearnedDscConv {
    /// Needs `width % cardinality == 0`, `cin % (width / cardinality) == 0` and
    /// `p <= cardinality` (checked by `ModelSpec::validate`).
    pub fn new(
        cin: usize,
        width: usize,
        cfg: LearnedDscConfig,
        act: Activation,
        dropout: Option<Dropout>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let groups = width / cfg.cardinality;
        let in_per_group = cin / groups;
        let weight = vb.pp("conv").get_with_hints(
            (width, in_per_group, 3, 3),
            "weight",
            conv_init(3, width),
        )?;
        let kept = vec![true; width * in_per_group];
        let mask = Tensor::ones((width, in_per_group, 1, 1), weight.dtype(), weight.device())?;
        Ok(Self {
            name: vb.prefix(),
            pre: PreActivation::new(cin, act, dropout, &vb)?,
            cfg,
            cin,
            width,
            form: DscForm::Masked {
                weight: fresh_var(&weight)?,
                kept,
                mask,
                drops: 0,
            },
        })
    }

    fn groups(&self) -> usize {
        self.width / self.cfg.cardinality
    }

    fn in_per_group(&self) -> usize {
        self.cin / self.groups()
    }

    /// Kernels each group removes at every drop: `floor(in_per_group * (cardinality - p) / steps)`.
    pub fn delta(&self) -> usize {
        self.in_per_group() * (self.cfg.cardinality - self.cfg.p) / self.cfg.steps
    }

    /// Kernels a group keeps after the last drop.
    pub fn final_kernels_per_group(&self) -> usize {
        self.in_per_group() * self.cfg.cardinality - self.cfg.steps * self.delta()
    }

    /// Drops due by progress `t`: those m in 1..=steps with `t >= m / steps * until`.
    fn drops_due(&self, t: f64) -> usize {
        let steps = self.cfg.steps;
        (1..=steps)
            .filter(|&m| t >= m as f64 * self.cfg.until / steps as f64)
            .count()
    }

    /// The progress values at which a drop happens (the last one also converts the layer).
    pub fn schedule_changes(&self) -> Vec<f64> {
        let steps = self.cfg.steps;
        (1..=steps)
            .map(|m| m as f64 * self.cfg.until / steps as f64)
            .collect()
    }

    /// Live kernels per group: in the masked form from the mask, afterwards from the index.
    pub fn kernels_per_group(&self) -> Vec<usize> {
        let (card, ipg) = (self.cfg.cardinality, self.in_per_group());
        match &self.form {
            DscForm::Masked { kept, .. } => kept
                .chunks(card * ipg)
                .map(|g| g.iter().filter(|&&k| k).count())
                .collect(),
            DscForm::Separable { select, .. } => {
                vec![select.index().elem_count() / self.groups(); self.groups()]
            }
        }
    }

    /// Live and all kernels of the conv (every group starts with `cardinality * in_per_group`).
    pub fn live_kernels(&self) -> (usize, usize) {
        let all = self.groups() * self.cfg.cardinality * self.in_per_group();
        (self.kernels_per_group().iter().sum(), all)
    }

    /// Where the schedule has this layer, e.g. `learned-dsc 3/8 drops` or `learned-dsc
    /// converted`.
    pub fn schedule_state(&self) -> String {
        match &self.form {
            DscForm::Masked { drops, .. } => {
                format!("learned-dsc {drops}/{} drops", self.cfg.steps)
            }
            DscForm::Separable { .. } => "learned-dsc converted".to_string(),
        }
    }

    pub fn is_separable(&self) -> bool {
        matches!(self.form, DscForm::Separable { .. })
    }

    /// The layer's name (`{name}.index`, `{name}.dw.weight`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// BN -> act (-> dropout, identity in eval mode) over the `Cin` input channels.
    pub fn pre(&self) -> &PreActivation {
        &self.pre
    }

    /// The converted form's index-select, depthwise 3x3 and pointwise 1x1, in forward order;
    /// `None` before the conversion.
    pub fn separable(&self) -> Option<(&ChannelSelect, &Conv2d, &Conv2d)> {
        match &self.form {
            DscForm::Separable { select, dw, pw, .. } => Some((select, dw, pw)),
            DscForm::Masked { .. } => None,
        }
    }

    /// Takes the index-select saved as `{name}.index` in `saved` (converted form only).
    pub fn restore_index(&mut self, saved: &Saved) -> Result<()> {
        let cin = self.cin;
        let DscForm::Separable { select, pairs, .. } = &mut self.form else {
            candle_core::bail!("{}: not converted to the separable form", self.name);
        };
        let name = format!("{}.index", self.name);
        let index = saved_like(saved, &name, select.index())?;
        *select = ChannelSelect::restore(&name, index, cin)?;
        *pairs = KernelPairs::gathered(cin, &select.values())?;
        Ok(())
    }

    /// Makes the drops due by `t`, and converts after the last one.
    pub fn advance_schedule(&mut self, t: f64) -> Result<PruneReport> {
        let due = self.drops_due(t);
        let mut report = PruneReport::default();
        while let DscForm::Masked { drops, .. } = &self.form {
            if *drops >= due {
                break;
            }
            self.drop_kernels()?;
            report.drops += 1;
            if matches!(self.form, DscForm::Masked { drops, .. } if drops == self.cfg.steps) {
                self.convert()?;
                report.conversions += 1;
            }
        }
        Ok(report)
    }

    /// Puts the layer where a run had it at progress `t`: masked with the saved mask and the
    /// drops due by `t`, or, once every drop is due, separable with the saved index and weights.
    pub fn restore_schedule(&mut self, t: f64, saved: &Saved) -> Result<()> {
        let due = self.drops_due(t);
        let (card, ipg, width) = (self.cfg.cardinality, self.in_per_group(), self.width);
        let DscForm::Masked { weight, mask, .. } = &self.form else {
            candle_core::bail!("{}: restore needs a freshly built layer", self.name);
        };
        if due == self.cfg.steps {
            let taps = width / card * self.final_kernels_per_group();
            let name = format!("{}.index", self.name);
            let like = Tensor::zeros(taps, candle_core::DType::U32, weight.device())?;
            let index = saved_like(saved, &name, &like)?.to_dtype(candle_core::DType::U32)?;
            let dw_like = Tensor::zeros((taps, 1, 3, 3), weight.dtype(), weight.device())?;
            let pw_like = Tensor::zeros((width, taps, 1, 1), weight.dtype(), weight.device())?;
            let dw_name = format!("{}.dw", self.name);
            let pw_name = format!("{}.pw", self.name);
            let dw = saved_like(saved, &format!("{dw_name}.weight"), &dw_like)?;
            let pw = saved_like(saved, &format!("{pw_name}.weight"), &pw_like)?;
            let select = ChannelSelect::new(index)?;
            self.form = DscForm::Separable {
                pairs: KernelPairs::gathered(self.cin, &select.values())?,
                select,
                dw: Conv2d::from_weight(dw_name, dw, Conv2dConfig::grouped3x3(taps))?,
                pw: Conv2d::from_weight(pw_name, pw, Conv2dConfig::pointwise())?,
            };
            return Ok(());
        }
        let name = format!("{}.conv.mask", self.name);
        let saved_mask = saved_like(saved, &name, mask)?;
        let kept: Vec<bool> = host_values(saved_mask)?.iter().map(|&v| v != 0.0).collect();
        let expect = card * ipg - due * self.delta();
        if kept
            .chunks(card * ipg)
            .any(|g| g.iter().filter(|&&k| k).count() != expect)
        {
            candle_core::bail!(
                "checkpoint mask `{name}` does not have {expect} live kernels in every group \
                 ({due} drops due at progress {t})"
            );
        }
        self.form = DscForm::Masked {
            weight: weight.clone(),
            mask: saved_mask.to_dtype(mask.dtype())?,
            kept,
            drops: due,
        };
        Ok(())
    }

    /// Every group removes `delta` live kernels of smallest L1 norm over their 3x3 taps.
    fn drop_kernels(&mut self) -> Result<()> {
        let delta = self.delta();
        let (card, ipg, width) = (self.cfg.cardinality, self.in_per_group(), self.width);
        let DscForm::Masked {
            weight,
            kept,
            mask,
            drops,
        } = &mut self.form
        else {
            return Ok(());
        };
        let w = host_values(weight.as_tensor())?;
        let l1 = |kernel: usize| {
            w[kernel * 9..kernel * 9 + 9]
                .iter()
                .map(|v| v.abs())
                .sum::<f64>()
        };
        for group in 0..width / card {
            let kernels = group * card * ipg..(group + 1) * card * ipg;
            let mut live: Vec<(f64, usize)> =
                kernels.filter(|&k| kept[k]).map(|k| (l1(k), k)).collect();
            live.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for &(_, k) in live.iter().take(delta) {
                kept[k] = false;
            }
        }
        let values: Vec<f64> = kept.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
        *mask = from_host(values, (width, ipg, 1, 1), mask)?;
        *drops += 1;
        Ok(())
    }

    /// Masked -> separable, with the same output: kept kernels in (group, out, in) order
    /// become depthwise channels; the pointwise weight is their 0/1 map to outputs.
    fn convert(&mut self) -> Result<()> {
        let DscForm::Masked { weight, kept, .. } = &self.form else {
            return Ok(());
        };
        let (card, ipg, width) = (self.cfg.cardinality, self.in_per_group(), self.width);
        let w = host_values(weight.as_tensor())?;
        let live: Vec<usize> = (0..kept.len()).filter(|&k| kept[k]).collect(); // (out, in) row-major = (group, out, in)
        let taps = live.len();
        let mut index = Vec::with_capacity(taps);
        let mut dw = Vec::with_capacity(taps * 9);
        let mut pw = vec![0f64; width * taps];
        for (n, &k) in live.iter().enumerate() {
            let (o, i) = (k / ipg, k % ipg);
            index.push(((o / card) * ipg + i) as u32);
            dw.extend_from_slice(&w[k * 9..k * 9 + 9]);
            pw[o * taps + n] = 1.0;
        }
        let device = weight.device();
        let dw_cfg = Conv2dConfig::grouped3x3(taps);
        self.form = DscForm::Separable {
            pairs: KernelPairs::gathered(self.cin, &index)?,
            select: ChannelSelect::new(Tensor::from_vec(index, taps, device)?)?,
            dw: Conv2d::from_weight(
                format!("{}.dw", self.name),
                &from_host(dw, (taps, 1, 3, 3), weight)?,
                dw_cfg,
            )?,
            pw: Conv2d::from_weight(
                format!("{}.pw", self.name),
                &from_host(pw, (width, taps, 1, 1), weight)?,
                Conv2dConfig::pointwise(),
            )?,
        };
        Ok(())
    }
}

impl LearnedDscConv {
    /// This conv as a stage of the fused dense block: the 3x3 of the masked weight over its
    /// live kernels, or after the conversion the depthwise of the gathered channels then the
    /// pointwise.
    pub fn block_stage(&self, train: bool) -> Result<Option<FusedStage<'_>>> {
        let shape = (self.cin, self.width);
        let (w, conv) = match &self.form {
            DscForm::Masked {
                weight, mask, kept, ..
            } => (
                weight.as_tensor().broadcast_mul(mask)?,
                StageConv::Live3x3(self.kernel_mask(kept)?),
            ),
            DscForm::Separable { pairs, dw, pw, .. } => (
                Self::separable_weight(dw, pw)?,
                StageConv::Separable(pairs.clone()),
            ),
        };
        FusedStage::new(&self.pre, conv, &w, shape, train).map(Some)
    }

    /// The separable stage's weight: `[dw (T x 9) | pw (W x T)]`, flattened.
    fn separable_weight(dw: &Conv2d, pw: &Conv2d) -> Result<Tensor> {
        Tensor::cat(&[dw.weight().flatten_all()?, pw.weight().flatten_all()?], 0)
    }

    /// The masked form's live kernels, as the fused kernels take them.
    fn kernel_mask(&self, kept: &[bool]) -> Result<LiveKernels> {
        LiveKernels::new(self.cin, self.width, self.groups(), kept)
    }
}

impl ModuleT for LearnedDscConv {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match &self.form {
            DscForm::Masked {
                weight, mask, kept, ..
            } => {
                let groups = self.groups();
                // The conv of the masked weight over its live kernels: the dropped ones are
                // not run where enough are dropped, and get no gradient.
                let w = weight.as_tensor().broadcast_mul(mask)?;
                let live = StageConv::Live3x3(self.kernel_mask(kept)?);
                let y = match self.pre.convolve_fused(x, &w, live, train)? {
                    Some(y) => y,
                    None => self
                        .pre
                        .convolve(x, &w, Conv2dConfig::grouped3x3(groups), train)?,
                };
                trace::record(|| {
                    // Both conventions count the masked conv at its full (executed) size: the spec
                    // defines the /C rule for learned-group only, and measure_model counts a conv by
                    // its weight shape.
                    let side = (y.dim(2).unwrap_or(0), y.dim(3).unwrap_or(0));
                    let cost = Cost::new(
                        conv_flops(self.cin, self.width, 3, groups, side),
                        weight.elem_count() as u64,
                    );
                    let op = if groups == 1 {
                        "learned-dsc3x3".to_string()
                    } else {
                        format!("learned-dsc3x3/g{groups}")
                    };
                    LayerCost::same(&format!("{}.conv", self.name), op, cost)
                });
                Ok(y)
            }
            DscForm::Separable {
                select,
                pairs,
                dw,
                pw,
            } => {
                if kernels::fast_for(x) {
                    // One fused kernel: BN, activation and dropout, the depthwise of the
                    // gathered channels made in cache, the pointwise.
                    let w = Self::separable_weight(dw, pw)?;
                    let stage = StageConv::Separable(pairs.clone());
                    if let Some(y) = self.pre.convolve_fused(x, &w, stage, train)? {
                        trace::record(|| {
                            let name = format!("{}.index", self.name);
                            LayerCost::same(&name, "index-select", Cost::ZERO)
                        });
                        let (taps, side) = (pairs.len(), (y.dim(2)?, y.dim(3)?));
                        dw.record_shape(taps, taps, side);
                        pw.record_shape(taps, self.width, side);
                        return Ok(y);
                    }
                }
                let a = self.pre.forward_t(x, train)?;
                trace::record(|| {
                    LayerCost::same(&format!("{}.index", self.name), "index-select", Cost::ZERO)
                });
                if !kernels::fast_for(&a) {
                    return pw.forward(&dw.forward(&select.forward(&a)?)?);
                }
                // One fused op: the gathered and depthwise planes are never stored.
                let y = separable_conv(&a, dw.weight(), pw.weight(), pairs)?;
                let (taps, side) = (pairs.len(), (y.dim(2)?, y.dim(3)?));
                dw.record_shape(taps, taps, side);
                pw.record_shape(taps, self.width, side);
                Ok(y)
            }
        }
    }
}

impl HasState for LearnedDscConv {
    fn collect_state(&self, out: &mut State) {
        self.pre.collect_state(out);
        match &self.form {
            DscForm::Masked { weight, mask, .. } => {
                out.push((
                    format!("{}.conv.weight", self.name),
                    StateTensor::Param(weight.clone()),
                ));
                out.push((
                    format!("{}.conv.mask", self.name),
                    StateTensor::Mask(mask.clone()),
                ));
            }
            DscForm::Separable { select, dw, pw, .. } => {
                out.push((
                    format!("{}.index", self.name),
                    StateTensor::Index(select.index().clone()),
                ));
                dw.collect_state(out);
                pw.collect_state(out);
            }
        }
    }
}
