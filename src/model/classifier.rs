//! The classifier: a Linear over all features in training, a condensed one in deploy form.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::linear::Linear;
use super::state::{from_host, host_values, saved_like, HasState, Saved, State, StateTensor};
use crate::cost::{trace, Cost, LayerCost};

/// Training form: a Linear whose input features can be masked. The head "drop" at the end of
/// the schedule masks all but the `keep` features of largest L1 column norm, so the masked
/// training form computes exactly what the condensed deploy form does.
#[derive(Debug, Clone)]
pub struct Classifier {
    name: String,
    linear: Linear,
    /// Features kept when the head is pruned.
    keep: usize,
    /// `[1, C]` float 0/1; all ones until [`Classifier::prune`].
    mask: Tensor,
    kept: Option<Vec<u32>>,
}

impl Classifier {
    pub fn new(
        features: usize,
        classes: usize,
        keep: usize,
        bias: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let linear = Linear::new(features, classes, bias, vb.clone())?;
        let mask = Tensor::ones((1, features), vb.dtype(), vb.device())?;
        Ok(Self {
            name: vb.prefix(),
            linear,
            keep,
            mask,
            kept: None,
        })
    }

    pub fn is_pruned(&self) -> bool {
        self.kept.is_some()
    }

    /// Masks all but the `keep` features of largest L1 column norm (ties: lower index first).
    pub fn prune(&mut self) -> Result<()> {
        if self.is_pruned() {
            return Ok(());
        }
        let norms = host_values(&self.linear.weight().abs()?.sum(0)?)?;
        let mut order: Vec<usize> = (0..norms.len()).collect();
        order.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]).then(a.cmp(&b)));
        let mut kept: Vec<u32> = order[..self.keep].iter().map(|&j| j as u32).collect();
        kept.sort_unstable();
        let mut mask = vec![0f64; norms.len()];
        for &j in &kept {
            mask[j as usize] = 1.0;
        }
        self.mask = from_host(mask, (1, norms.len()), &self.mask)?;
        self.kept = Some(kept);
        Ok(())
    }

    /// The deploy form: index-select of the kept features, then a Linear over them.
    pub fn condense(&self) -> Result<CondensedLinear> {
        let Some(kept) = &self.kept else {
            candle_core::bail!("{}: the classifier has not been pruned", self.name);
        };
        let index = Tensor::from_vec(kept.clone(), kept.len(), self.mask.device())?;
        let weight = self.linear.weight().index_select(&index, 1)?;
        let linear = Linear::from_tensors(self.name.clone(), &weight, self.linear.bias())?;
        Ok(CondensedLinear {
            name: self.name.clone(),
            index,
            linear,
        })
    }
}

impl Module for Classifier {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.is_pruned() {
            x.broadcast_mul(&self.mask)?
        } else {
            x.clone()
        };
        self.linear.forward(&x)
    }
}

impl HasState for Classifier {
    fn collect_state(&self, out: &mut State) {
        self.linear.collect_state(out);
        out.push((
            format!("{}.mask", self.name),
            StateTensor::Mask(self.mask.clone()),
        ));
    }
}

/// index-select of the kept features -> smaller Linear.
#[derive(Debug, Clone)]
pub struct CondensedLinear {
    name: String,
    index: Tensor,
    linear: Linear,
}

impl CondensedLinear {
    /// The u32 index of the kept features.
    pub fn index(&self) -> &Tensor {
        &self.index
    }

    /// The Linear over the kept features.
    pub fn linear(&self) -> &Linear {
        &self.linear
    }

    /// Takes the index saved as `{name}.index` in `saved`, over `features` input features.
    pub fn restore_index(&mut self, saved: &Saved, features: usize) -> Result<()> {
        let name = format!("{}.index", self.name);
        let index = saved_like(saved, &name, &self.index)?;
        let select = super::channel_select::ChannelSelect::restore(&name, index, features)?;
        self.index = select.index().clone();
        Ok(())
    }
}

impl Module for CondensedLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.index_select(&self.index, 1)?;
        trace::record(|| {
            LayerCost::same(&format!("{}.index", self.name), "index-select", Cost::ZERO)
        });
        self.linear.forward(&x)
    }
}

impl HasState for CondensedLinear {
    fn collect_state(&self, out: &mut State) {
        out.push((
            format!("{}.index", self.name),
            StateTensor::Index(self.index.clone()),
        ));
        self.linear.collect_state(out);
    }
}
