//! Per-op counting rules (spec section 5), in both conventions.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which counting rules to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Convention {
    /// CondenseNet's `measure_model` rules, which the paper tables use.
    Paper,
    /// What the forward pass really runs, and every stored parameter element.
    Executed,
}

impl fmt::Display for Convention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Paper => "paper",
            Self::Executed => "executed",
        })
    }
}

/// Cost of one op or one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    /// Multiply-adds (or counted element ops), batch 1.
    pub flops: u64,
    /// Parameter elements.
    pub params: u64,
}

impl Cost {
    pub const ZERO: Cost = Cost {
        flops: 0,
        params: 0,
    };

    pub fn new(flops: u64, params: u64) -> Self {
        Self { flops, params }
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            flops: self.flops + o.flops,
            params: self.params + o.params,
        }
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::ZERO, |a, b| a + b)
    }
}

/// What one executed op cost, as recorded by the layer that ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerCost {
    /// Full name of the layer object (`block0.layer3.bottleneck.conv`).
    pub name: String,
    /// Short op description (`conv1x1`, `conv3x3/g4`, `bn`, `relu6`, `avgpool2`, `linear`, ...).
    pub op: String,
    pub paper: Cost,
    pub executed: Cost,
}

impl LayerCost {
    /// An op that costs the same in both conventions.
    pub fn same(name: &str, op: impl Into<String>, cost: Cost) -> Self {
        Self {
            name: name.to_string(),
            op: op.into(),
            paper: cost,
            executed: cost,
        }
    }

    pub fn get(&self, convention: Convention) -> Cost {
        match convention {
            Convention::Paper => self.paper,
            Convention::Executed => self.executed,
        }
    }
}

/// Multiply-adds of a conv, batch 1: `Cin*Cout*kh*kw*Hout*Wout/groups`.
pub fn conv_flops(
    cin: usize,
    cout: usize,
    kernel: usize,
    groups: usize,
    out_side: (usize, usize),
) -> u64 {
    (cin * cout * kernel * kernel * out_side.0 * out_side.1 / groups) as u64
}

/// `conv3x3/g4`, `conv1x1`, `dwconv3x3`.
pub fn conv_op(kernel: usize, groups: usize, cin: usize) -> String {
    match groups {
        1 => format!("conv{kernel}x{kernel}"),
        g if g == cin => format!("dwconv{kernel}x{kernel}"),
        g => format!("conv{kernel}x{kernel}/g{g}"),
    }
}
