//! What an op costs, recorded by the layer that runs it: the counting rules of both
//! conventions ([`Cost`], [`LayerCost`], spec section 5) and the per-thread recorder every
//! primitive layer reports to ([`trace`]). The layers in [`crate::model`] use this from below;
//! [`crate::analyze`] opens a capture around a forward pass and sums what was recorded.

mod rules;
pub mod trace;

pub use rules::{conv_flops, conv_op, Convention, Cost, LayerCost};
