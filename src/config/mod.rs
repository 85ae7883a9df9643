//! Configuration: what a model is ([`ModelSpec`]), its presets and how a user overrides them,
//! and what one training run is ([`RunConfig`]).

mod error;
mod memory;
mod preset;
mod run;
mod source;
mod spec;

pub use error::ConfigError;
pub use memory::{available_memory, check_bytes, check_fits, MemoryFloor};
pub use preset::{preset, PRESET_NAMES};
pub use run::{DataConfig, DatasetKind, RunConfig, TrainConfig};
pub use source::{ModelSource, ResolvedModel};
pub use spec::{
    Activation, BottleneckConv, Cardinality, LayerPlan, Loss, ModelPatch, ModelSpec, SpatialConv,
    INPUT_CHANNELS, INPUT_SIDE, MODEL_KEYS,
};
