//! ablate: reproduce, count and ablate CondenseNet and CondenseNeXt on CIFAR-10.
//!
//! - [`config`]: what a model is ([`config::ModelSpec`]), presets, overrides.
//! - [`model`]: the networks in candle, training and deploy forms.
//! - [`analyze`]: FLOPs and parameters from the layers a forward pass runs; model sizes.
//! - [`data`], [`train`]: CIFAR-10 and synthetic data; the training loop and its run dirs.
//! - [`experiment`]: experiment files expanded to runs with stable ids.
//! - [`export`]: the deploy form as an ONNX file (hand-written protobuf, [`proto`], no `protoc`).
//! - [`tensorboard`]: TensorBoard event files of every run and the HParams grid of each
//!   experiment.
//! - [`schedule`]: running an experiment's runs locally (GPUs, CPU slots) or through Slurm.
//! - [`report`]: tables and figures from the results; [`table`]: the one table type every
//!   command renders (text, Markdown, CSV, LaTeX).
//! - [`kernels`]: CPU kernels (custom candle ops) for the slow ops; [`bench`]: speed and memory.
//! - [`cli`]: the `ablate` command line.

pub mod alloc;
pub mod analyze;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cost;
pub mod data;
pub mod experiment;
pub mod export;
pub mod io;
pub mod kernels;
pub mod lock;
pub mod model;
pub mod proto;
pub mod provenance;
pub mod report;
pub mod rng;
pub mod run_dir;
pub mod schedule;
pub mod signal;
pub mod table;
pub mod tensorboard;
pub mod train;
