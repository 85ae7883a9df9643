//! Training pieces: losses, the optimiser and the learning-rate schedule (spec section 6).

mod loss;
mod optim;

pub use loss::{class_balanced_weights, cross_entropy, focal_loss, FocalConfig};
pub use optim::{cosine_lr, Sgd, SgdConfig};
