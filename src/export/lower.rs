//! The deploy network, layer object by layer object, as ONNX nodes: each function below
//! mirrors one layer's eval-mode `forward` in `crate::model` and reads the tensors that forward
//! uses, so the file computes what the deploy form computes (checked against onnxruntime by
//! `tests/onnx/check.py`).
//!
//! | layer (forward)                          | nodes                                         |
//! |------------------------------------------|-----------------------------------------------|
//! | `Conv2d`                                 | Conv (`group`, `pads`, no bias)               |
//! | `BatchNorm` (eval: running statistics)   | BatchNormalization                            |
//! | `Act`                                    | Relu, or Clip(0, 6) for ReLU6                 |
//! | `ChannelSelect` (index-select)           | Gather on axis 1 with an int64 index          |
//! | the channel shuffle                      | Reshape [N, G, C/G, H, W] -> Transpose -> Reshape |
//! | `AvgPool2d`                              | AveragePool (kernel = stride)                 |
//! | `DenseLayer`                             | Concat on axis 1, input first                 |
//! | `CondensedLinear`                        | Flatten, Gather on axis 1, Gemm (transB)      |
//!
//! Dropout is the identity in eval mode and emits nothing. BN is not folded: every BN of the
//! family is a pre-activation (BN -> act -> conv) whose input is a concat or an index-select,
//! so there is no conv right before it to fold into, and folding it into the conv after it
//! would have to pass through the activation, which is not exact.

use super::graph::GraphBuilder;
use super::onnx::{Attribute, TensorData};
use crate::config::{Activation, INPUT_SIDE};
use crate::kernels::ChannelIndex;
use crate::model::{
    Act, AvgPool2d, BatchNorm, Bottleneck, ChannelSelect, CondensedLinear, Conv2d, DenseLayer,
    Network, PreActivation, Spatial,
};

/// Why a network cannot be lowered.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

type Result<T> = std::result::Result<T, LowerError>;

/// Walks a deploy-form network; `side` tracks the feature maps' height and width.
pub struct Lowering<'g> {
    g: &'g mut GraphBuilder,
    side: usize,
    /// The Clip bounds of ReLU6, created on first use.
    relu6_bounds: Option<(String, String)>,
}

impl<'g> Lowering<'g> {
    pub fn new(g: &'g mut GraphBuilder) -> Self {
        Self {
            g,
            side: INPUT_SIDE,
            relu6_bounds: None,
        }
    }

    /// `net`'s forward from the value `x` (`[N, 3, 32, 32]`, normalised) to the value named
    /// `output` (`[N, classes]`).
    pub fn network(&mut self, net: &Network, x: &str, output: &str) -> Result<()> {
        let head = net.condensed_head().ok_or_else(|| {
            LowerError::Unsupported("only the deploy form can be exported".into())
        })?;
        let mut x = self.conv(net.stem(), x)?;
        let plans = net.spec().layers();
        let mut plans = plans.iter();
        for (b, block) in net.blocks().iter().enumerate() {
            for layer in block {
                let plan = plans.next().ok_or_else(|| {
                    LowerError::Unsupported("the network has more layers than its spec".into())
                })?;
                x = self.dense_layer(&plan.name(), layer, &x)?;
            }
            if let Some(pool) = net.transition(b) {
                x = self.pool(pool, &x);
            }
        }
        let (norm, act, pool) = net.head_parts();
        x = self.batch_norm(norm, &x)?;
        x = self.act(act, &x);
        x = self.pool(pool, &x);
        let flat = self.g.node(
            "Flatten",
            "head.flatten",
            &[&x],
            vec![Attribute::int("axis", 1)],
        );
        self.classifier(head, &flat, output)
    }

    /// `concat([x, spatial(bottleneck(x))])`.
    fn dense_layer(&mut self, name: &str, layer: &DenseLayer, x: &str) -> Result<String> {
        let y = match layer.bottleneck() {
            Bottleneck::CondensedGroup(c) => {
                let s = self.select(&format!("{}.index", c.name()), c.select(), x);
                let s = self.pre(c.pre(), &s)?;
                let s = self.conv(c.conv(), &s)?;
                self.shuffle(c.name(), c.shuffle(), c.conv(), &s)?
            }
            Bottleneck::LearnedDsc(c) => {
                let (select, dw, pw) = c.separable().ok_or_else(|| {
                    LowerError::Unsupported(format!(
                        "{}: learned-dsc layer not converted; only the deploy form can be exported",
                        c.name()
                    ))
                })?;
                let a = self.pre(c.pre(), x)?;
                let a = self.select(&format!("{}.index", c.name()), select, &a);
                let a = self.conv(dw, &a)?;
                self.conv(pw, &a)?
            }
            Bottleneck::Dense(c) => {
                let a = self.pre(c.pre(), x)?;
                self.conv(c.conv(), &a)?
            }
            Bottleneck::LearnedGroup(_) => {
                return Err(LowerError::Unsupported(format!(
                "{name}: learned-group layer not condensed; only the deploy form can be exported"
            )))
            }
        };
        let y = match layer.spatial() {
            Spatial::Group(c) => {
                let a = self.pre(c.pre(), &y)?;
                self.conv(c.conv(), &a)?
            }
            Spatial::Dsc { dw, pw } => {
                let a = self.pre(dw.pre(), &y)?;
                let a = self.conv(dw.conv(), &a)?;
                let a = self.pre(pw.pre(), &a)?;
                self.conv(pw.conv(), &a)?
            }
        };
        Ok(self.g.node(
            "Concat",
            &format!("{name}.concat"),
            &[x, &y],
            vec![Attribute::int("axis", 1)],
        ))
    }

    /// BN -> act; a dropout after them is the identity in eval mode.
    fn pre(&mut self, pre: &PreActivation, x: &str) -> Result<String> {
        let x = self.batch_norm(pre.norm(), x)?;
        Ok(self.act(pre.act(), &x))
    }

    fn batch_norm(&mut self, bn: &BatchNorm, x: &str) -> Result<String> {
        let n = bn.name();
        let scale = self.g.tensor(&format!("{n}.weight"), bn.weight())?;
        let bias = self.g.tensor(&format!("{n}.bias"), bn.bias())?;
        let mean = self
            .g
            .tensor(&format!("{n}.running_mean"), bn.running_mean())?;
        let var = self
            .g
            .tensor(&format!("{n}.running_var"), bn.running_var())?;
        Ok(self.g.node(
            "BatchNormalization",
            n,
            &[x, &scale, &bias, &mean, &var],
            vec![Attribute::float("epsilon", bn.eps() as f32)],
        ))
    }

    fn act(&mut self, act: &Act, x: &str) -> String {
        match act.kind() {
            Activation::Relu => self.g.node("Relu", act.name(), &[x], vec![]),
            Activation::Relu6 => {
                let (lo, hi) = self.relu6_bounds.get_or_insert_with(|| {
                    (
                        self.g
                            .constant("relu6.min", &[], TensorData::F32(vec![0.0])),
                        self.g
                            .constant("relu6.max", &[], TensorData::F32(vec![6.0])),
                    )
                });
                let (lo, hi) = (lo.clone(), hi.clone());
                self.g.node("Clip", act.name(), &[x, &lo, &hi], vec![])
            }
        }
    }

    fn conv(&mut self, conv: &Conv2d, x: &str) -> Result<String> {
        let cfg = conv.config();
        if cfg.stride != 1 {
            return Err(LowerError::Unsupported(format!(
                "{}: stride {} (every conv of the family has stride 1)",
                conv.name(),
                cfg.stride
            )));
        }
        let w = self
            .g
            .tensor(&format!("{}.weight", conv.name()), conv.weight())?;
        let (k, p) = (cfg.kernel as i64, cfg.padding as i64);
        Ok(self.g.node(
            "Conv",
            conv.name(),
            &[x, &w],
            vec![
                Attribute::int("group", cfg.groups as i64),
                Attribute::ints("kernel_shape", &[k, k]),
                Attribute::ints("pads", &[p, p, p, p]),
                Attribute::ints("strides", &[1, 1]),
                Attribute::ints("dilations", &[1, 1]),
            ],
        ))
    }

    /// `y[:, j] = x[:, index[j]]`; the index constant is named `index_name` (its state name).
    fn select(&mut self, index_name: &str, select: &ChannelSelect, x: &str) -> String {
        let index = self.g.index(index_name, &select.values());
        let node = index_name.strip_suffix(".index").unwrap_or(index_name);
        self.g.node(
            "Gather",
            &format!("{node}.gather"),
            &[x, &index],
            vec![Attribute::int("axis", 1)],
        )
    }

    /// The channel shuffle after `conv` (its groups): view `[N, G, C/G, H, W]`, swap the two
    /// channel axes, flatten back. Fails unless `shuffle` is exactly that permutation.
    fn shuffle(
        &mut self,
        name: &str,
        shuffle: &ChannelSelect,
        conv: &Conv2d,
        x: &str,
    ) -> Result<String> {
        let (groups, channels) = (conv.config().groups, conv.weight().dim(0)?);
        if shuffle.values() != ChannelIndex::shuffle(channels, groups).to_vec() {
            return Err(LowerError::Unsupported(format!(
                "{name}: the channel permutation is not a shuffle of {channels} channels in \
                 {groups} groups"
            )));
        }
        let (g, c, s) = (groups as i64, channels as i64, self.side as i64);
        // 0 in a Reshape shape copies that input dimension: the batch stays dynamic.
        let split = self
            .g
            .shape(&format!("{name}.shuffle.split_shape"), &[0, g, c / g, s, s]);
        let merged = self
            .g
            .shape(&format!("{name}.shuffle.shape"), &[0, c, s, s]);
        let y = self.g.node(
            "Reshape",
            &format!("{name}.shuffle.split"),
            &[x, &split],
            vec![],
        );
        let y = self.g.node(
            "Transpose",
            &format!("{name}.shuffle.transpose"),
            &[&y],
            vec![Attribute::ints("perm", &[0, 2, 1, 3, 4])],
        );
        Ok(self.g.node(
            "Reshape",
            &format!("{name}.shuffle"),
            &[&y, &merged],
            vec![],
        ))
    }

    fn pool(&mut self, pool: &AvgPool2d, x: &str) -> String {
        let k = pool.kernel();
        self.side /= k;
        let k = k as i64;
        self.g.node(
            "AveragePool",
            pool.name(),
            &[x],
            vec![
                Attribute::ints("kernel_shape", &[k, k]),
                Attribute::ints("strides", &[k, k]),
            ],
        )
    }

    /// index-select of the kept features -> `x W^T + b`, into the value `output`.
    fn classifier(&mut self, head: &CondensedLinear, x: &str, output: &str) -> Result<()> {
        let linear = head.linear();
        let n = linear.name();
        let kept: Vec<u32> = head.index().to_vec1::<u32>()?;
        let index = self.g.index(&format!("{n}.index"), &kept);
        let x = self.g.node(
            "Gather",
            &format!("{n}.gather"),
            &[x, &index],
            vec![Attribute::int("axis", 1)],
        );
        let w = self.g.tensor(&format!("{n}.weight"), linear.weight())?;
        let b = self.g.tensor(&format!("{n}.bias"), linear.bias())?;
        let y = self.g.node(
            "Gemm",
            output,
            &[&x, &w, &b],
            vec![Attribute::int("transB", 1)],
        );
        if y != output {
            return Err(LowerError::Unsupported(format!(
                "the output name `{output}` is taken by another value"
            )));
        }
        Ok(())
    }
}
