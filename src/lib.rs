//! ablate: reproduce, count and ablate CondenseNet and CondenseNeXt on CIFAR-10.
//!
//! - [`config`]: what a model is ([`config::ModelSpec`]), presets, overrides.
//! - [`model`]: the networks in candle, training and deploy forms.
//! - [`analyze`]: FLOPs and parameters from the layers a forward pass runs; model sizes.
//! - [`cli`]: the `ablate` command line.

pub mod analyze;
pub mod cli;
pub mod config;
pub mod data;
pub mod experiment;
pub mod io;
pub mod lock;
pub mod model;
pub mod provenance;
pub mod report;
pub mod rng;
pub mod schedule;
pub mod signal;
pub mod train;
