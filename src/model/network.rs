//! The whole network (spec section 1), in training or deploy form.

use candle_core::{Device, Module, Result, Tensor, Var};
use candle_nn::{ModuleT, VarBuilder};

use super::activation::Act;
use super::batch_norm::{BatchNorm, BatchNormConfig, RUNNING_VAR};
use super::classifier::{Classifier, CondensedLinear};
use super::conv::{Conv2d, Conv2dConfig};
use super::dense_block;
use super::dense_layer::{Bottleneck, DenseLayer};
use super::dropout::NoiseClock;
use super::init::SeededInit;
use super::pool::AvgPool2d;
use super::state::{saved_like, HasState, Saved, State, StateTensor};
use super::PruneReport;
use crate::config::{Loss, ModelSpec, INPUT_CHANNELS, INPUT_SIDE};

/// The live fraction of each pruned layer family of a training-form network: depends only on
/// where the schedule is (how many drops each layer made), never on the weights.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LiveFractions {
    /// Of the learned group convs' input connections; `None` without such layers.
    pub learned_group: Option<f64>,
    /// Of the learned-dsc convs' kernels; `None` without such layers.
    pub learned_dsc: Option<f64>,
}

/// Which form a [`Network`] is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    /// Masks and pruning schedules, full classifier.
    Training,
    /// Condensed: index-selects, grouped and separable convs, condensed classifier.
    Deploy,
}

impl std::fmt::Display for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Training => "training",
            Self::Deploy => "deploy",
        })
    }
}

#[derive(Debug, Clone)]
enum Head {
    Training(Classifier),
    Deploy(CondensedLinear),
}

/// stem -> dense blocks with pooling transitions -> BN -> act -> pool -> classifier.
#[derive(Debug, Clone)]
pub struct Network {
    spec: ModelSpec,
    stem: Conv2d,
    blocks: Vec<Vec<DenseLayer>>,
    /// One after every block but the last.
    transitions: Vec<AvgPool2d>,
    head_norm: BatchNorm,
    head_act: Act,
    head_pool: AvgPool2d,
    head: Head,
    /// The step dropout noise is drawn for (shared with every clone).
    noise: NoiseClock,
}

impl Network {
    /// A training-form network; `seed` names the dropout noise streams. `spec` must be valid.
    pub fn new(spec: &ModelSpec, seed: u64, vb: VarBuilder) -> Result<Self> {
        if let Err(e) = spec.validate() {
            candle_core::bail!("invalid model: {e}");
        }
        let stem = Conv2d::new(
            INPUT_CHANNELS,
            spec.stem_channels(),
            Conv2dConfig::default(),
            vb.pp("stem.conv"),
        )?;
        let noise = NoiseClock::default();
        let plans = spec.layers();
        let mut blocks = Vec::with_capacity(spec.stages.len());
        for b in 0..spec.stages.len() {
            let layers = plans
                .iter()
                .filter(|p| p.block == b)
                .map(|p| DenseLayer::new(spec, p, seed, &noise, vb.pp(p.name())))
                .collect::<Result<Vec<_>>>()?;
            blocks.push(layers);
        }
        let transitions = (0..spec.stages.len() - 1)
            .map(|b| AvgPool2d::new(format!("transition{b}.pool"), 2))
            .collect();
        let features = spec.final_channels();
        let bias = match spec.loss {
            Loss::Ce => 0.0,
            // Sigmoid focal loss starts every class at prior 1/classes.
            Loss::Focal => -((spec.classes - 1) as f64).ln(),
        };
        Ok(Self {
            spec: spec.clone(),
            stem,
            blocks,
            transitions,
            head_norm: BatchNorm::new(features, BatchNormConfig::default(), vb.pp("head.bn"))?,
            head_act: Act::new("head.act".into(), spec.activation),
            head_pool: AvgPool2d::new("head.pool".into(), INPUT_SIDE >> (spec.stages.len() - 1)),
            head: Head::Training(Classifier::new(
                features,
                spec.classes,
                spec.head_kept(),
                bias,
                vb.pp("classifier"),
            )?),
            noise,
        })
    }

    /// A float32 training-form network initialised from the project's seeded generator.
    pub fn seeded(spec: &ModelSpec, seed: u64, device: &Device) -> Result<Self> {
        Self::new(
            spec,
            seed,
            SeededInit::new(seed).var_builder(candle_core::DType::F32, device),
        )
    }

    /// The device the network's tensors live on.
    pub fn device(&self) -> &Device {
        self.stem.weight().device()
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn form(&self) -> Form {
        match self.head {
            Head::Training(_) => Form::Training,
            Head::Deploy(_) => Form::Deploy,
        }
    }

    pub fn layers(&self) -> impl Iterator<Item = &DenseLayer> {
        self.blocks.iter().flatten()
    }

    /// The first conv (3 -> stem channels), before any block.
    pub fn stem(&self) -> &Conv2d {
        &self.stem
    }

    /// The dense layers, block by block.
    pub fn blocks(&self) -> &[Vec<DenseLayer>] {
        &self.blocks
    }

    /// The pooling after block `b`, for every block but the last.
    pub fn transition(&self, b: usize) -> Option<&AvgPool2d> {
        self.transitions.get(b)
    }

    /// The head before the classifier: BN -> activation -> global average pool.
    pub fn head_parts(&self) -> (&BatchNorm, &Act, &AvgPool2d) {
        (&self.head_norm, &self.head_act, &self.head_pool)
    }

    /// The condensed classifier of the deploy form (`None` in training form).
    pub fn condensed_head(&self) -> Option<&CondensedLinear> {
        match &self.head {
            Head::Deploy(c) => Some(c),
            Head::Training(_) => None,
        }
    }

    /// The deploy form of `spec` with the tensors of a deploy file (`model.safetensors`, as
    /// [`crate::analyze::write_deploy`] writes it): the structure is the spec's, every index,
    /// parameter and running statistic is the file's. Fails, naming the tensor, when the file
    /// lacks one, holds one of another shape or dtype or one the model does not have, a
    /// parameter or running statistic that is not finite, a negative running variance, or an
    /// index that points outside its input.
    pub fn from_deploy(spec: &ModelSpec, saved: &Saved, device: &Device) -> Result<Network> {
        let mut net = Network::seeded(spec, 0, device)?;
        net.finish_pruning()?;
        let mut net = net.condense()?;
        for (name, entry) in net.state() {
            if let Some(t) = saved.get(&name) {
                check_deploy_tensor(&name, &entry, t)?;
            }
        }
        for (layer, plan) in net.blocks.iter_mut().flatten().zip(spec.layers()) {
            layer.restore_deploy_indices(saved, plan.cin)?;
        }
        if let Head::Deploy(c) = &mut net.head {
            c.restore_index(saved, spec.final_channels())?;
        }
        let state = net.state();
        for (name, entry) in &state {
            if let StateTensor::Param(v) | StateTensor::RunningStat(v) = entry {
                let value = saved_like(saved, name, v.as_tensor())?;
                v.set(&value.to_dtype(v.dtype())?.to_device(v.device())?)?;
            }
        }
        let known: std::collections::HashSet<&str> =
            state.iter().map(|(n, _)| n.as_str()).collect();
        let mut extra: Vec<&String> = saved
            .keys()
            .filter(|k| !known.contains(k.as_str()))
            .collect();
        extra.sort();
        if let Some(name) = extra.first() {
            candle_core::bail!("tensor `{name}` is not part of this model's deploy form");
        }
        Ok(net)
    }

    /// Runs the pruning schedules up to progress `t` in [0, 1).
    pub fn advance_schedule(&mut self, t: f64) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        for layer in self.blocks.iter_mut().flatten() {
            report = report + layer.advance_schedule(t)?;
        }
        Ok(report)
    }

    /// The phases of a whole run: the intervals of progress `[start, end)` covering [0, 1) in
    /// which no layer's structure changes (learned-group stages, learned-dsc drops and
    /// conversion), in order. A network without a schedule has one phase.
    pub fn schedule_phases(&self) -> Vec<(f64, f64)> {
        let mut cuts: Vec<f64> = self
            .layers()
            .flat_map(DenseLayer::schedule_changes)
            .filter(|&t| t > 0.0 && t < 1.0)
            .collect();
        cuts.sort_by(f64::total_cmp);
        cuts.dedup();
        let starts = std::iter::once(0.0).chain(cuts.iter().copied());
        let ends = cuts.iter().copied().chain(std::iter::once(1.0));
        starts.zip(ends).collect()
    }

    /// The structure changes of a whole run, in order: the progress at which each phase after
    /// the first starts and the layers' state in it ([`Self::schedule_state`]). Found by running
    /// this network's schedule, so the network ends with every drop made.
    pub fn walk_schedule(&mut self) -> Result<Vec<(f64, String)>> {
        let mut events = Vec::new();
        for (start, end) in self.schedule_phases().into_iter().skip(1) {
            self.advance_schedule((start + end) / 2.0)?;
            events.push((start, self.schedule_state()));
        }
        Ok(events)
    }

    /// Where the schedule has the layers: their distinct states in layer order, e.g.
    /// `learned-group 3/4 live`; `fixed` for a network without a schedule.
    pub fn schedule_state(&self) -> String {
        let mut states: Vec<String> = Vec::new();
        for s in self.layers().filter_map(DenseLayer::schedule_state) {
            if !states.contains(&s) {
                states.push(s);
            }
        }
        if states.is_empty() {
            "fixed".to_string()
        } else {
            states.join(", ")
        }
    }

    /// How much of each pruned layer family is live now, over all its layers.
    pub fn live_fractions(&self) -> LiveFractions {
        let (mut group, mut dsc) = ((0, 0), (0, 0));
        let add = |sum: &mut (usize, usize), (live, all): (usize, usize)| {
            sum.0 += live;
            sum.1 += all;
        };
        for layer in self.layers() {
            match layer.bottleneck() {
                Bottleneck::LearnedGroup(c) => add(&mut group, c.live_connections()),
                Bottleneck::LearnedDsc(c) => add(&mut dsc, c.live_kernels()),
                Bottleneck::CondensedGroup(_) | Bottleneck::Dense(_) => {}
            }
        }
        let fraction = |(live, all): (usize, usize)| (all > 0).then(|| live as f64 / all as f64);
        LiveFractions {
            learned_group: fraction(group),
            learned_dsc: fraction(dsc),
        }
    }

    /// Selects the dropout noise of training step `step` (counted from 0 over the whole run).
    pub fn set_noise_step(&self, step: u64) {
        self.noise.set(step);
    }

    /// Loads a checkpoint written during training at progress `t` (the progress of the last
    /// iteration it had done) into this freshly built network of the same spec: the pruning
    /// schedules are put at `t` with the saved masks (converted learned-dsc layers take the
    /// saved index and weights), then every parameter and BN running statistic takes its
    /// saved value. Fails, naming the tensor, when the checkpoint does not fit the model.
    pub fn restore(&mut self, t: f64, saved: &Saved) -> Result<()> {
        if self.form() == Form::Deploy {
            candle_core::bail!("restore needs a training-form network");
        }
        for layer in self.blocks.iter_mut().flatten() {
            layer.restore_schedule(t, saved)?;
        }
        for (name, entry) in self.state() {
            if let StateTensor::Param(v) | StateTensor::RunningStat(v) = entry {
                let value = saved_like(saved, &name, v.as_tensor())?;
                v.set(&value.to_dtype(v.dtype())?.to_device(v.device())?)?;
            }
        }
        Ok(())
    }

    /// Runs every schedule to its end and prunes the classifier: the masked training form then
    /// computes exactly what [`Network::condense`] returns.
    pub fn finish_pruning(&mut self) -> Result<PruneReport> {
        let report = self.advance_schedule(1.0)?;
        if let Head::Training(c) = &mut self.head {
            c.prune()?;
        }
        Ok(report)
    }

    /// The deploy form. Fails unless [`Network::finish_pruning`] (or a full schedule) ran.
    /// Layers that do not change keep sharing their tensors with `self`.
    pub fn condense(&self) -> Result<Network> {
        let head = match &self.head {
            Head::Training(c) => Head::Deploy(c.condense()?),
            Head::Deploy(c) => Head::Deploy(c.clone()),
        };
        let blocks = self
            .blocks
            .iter()
            .map(|b| b.iter().map(DenseLayer::condense).collect())
            .collect::<Result<_>>()?;
        Ok(Network {
            blocks,
            head,
            ..self.clone()
        })
    }

    /// Every named tensor, in forward order.
    pub fn state(&self) -> State {
        let mut out = State::new();
        self.collect_state(&mut out);
        out
    }

    /// The trainable parameters, in forward order.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        self.state()
            .into_iter()
            .filter_map(|(name, t)| match t {
                StateTensor::Param(v) => Some((name, v)),
                _ => None,
            })
            .collect()
    }

    /// The classifier: pooled features `[N, C]` -> logits `[N, classes]`.
    pub(super) fn classify(&self, features: &Tensor) -> Result<Tensor> {
        match &self.head {
            Head::Training(c) => c.forward(features),
            Head::Deploy(c) => c.forward(features),
        }
    }

    /// A zero input batch of `n` images on `device`.
    pub fn zeros_input(n: usize, device: &Device) -> Result<Tensor> {
        Tensor::zeros(
            (n, INPUT_CHANNELS, INPUT_SIDE, INPUT_SIDE),
            candle_core::DType::F32,
            device,
        )
    }
}

impl ModuleT for Network {
    /// `[N, 3, 32, 32]` images -> `[N, classes]` logits. In evaluation (`train` false) the
    /// logits carry no graph: no gradient flows back from them.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = dense_block::unless_training(self.stem.forward(x)?, train);
        for (b, block) in self.blocks.iter().enumerate() {
            x = dense_block::unless_training(dense_block::forward(block, &x, train)?, train);
            if let Some(pool) = self.transitions.get(b) {
                x = pool.forward(&x)?;
            }
        }
        let x = self.head_norm.forward_act(&x, train, &self.head_act)?;
        let x = self.head_pool.forward(&x)?.flatten_from(1)?;
        Ok(dense_block::unless_training(self.classify(&x)?, train))
    }
}

impl HasState for Network {
    fn collect_state(&self, out: &mut State) {
        self.stem.collect_state(out);
        for layer in self.layers() {
            layer.collect_state(out);
        }
        self.head_norm.collect_state(out);
        match &self.head {
            Head::Training(c) => c.collect_state(out),
            Head::Deploy(c) => c.collect_state(out),
        }
    }
}

/// Checks the tensor `name` of a deploy file against the model's `entry`: the same dtype, and
/// for parameters and running statistics finite values (a variance also non-negative).
fn check_deploy_tensor(name: &str, entry: &StateTensor, saved: &Tensor) -> Result<()> {
    let expected = entry.tensor().dtype();
    if saved.dtype() != expected {
        candle_core::bail!(
            "tensor `{name}` is stored as {}, the model expects {}",
            saved.dtype().as_str(),
            expected.as_str()
        );
    }
    if let StateTensor::Param(_) | StateTensor::RunningStat(_) = entry {
        let values = super::state::host_values(saved)?;
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            candle_core::bail!("tensor `{name}` holds {v}; expected finite values");
        }
        if name.ends_with(&format!(".{RUNNING_VAR}")) {
            if let Some(v) = values.iter().find(|&&v| v < 0.0) {
                candle_core::bail!("tensor `{name}` holds the negative variance {v}");
            }
        }
    }
    Ok(())
}
