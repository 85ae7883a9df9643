//! A run's pruning schedule epoch by epoch, replayed on a fresh network of its model: the live
//! fraction of each pruned layer family after each epoch, and the structure changes made in
//! it, at the iterations where the trainer makes them. How many connections or kernels a layer
//! keeps depends only on how far its schedule is, never on which ones the weights pick, so the
//! replay gives a trained run's numbers (a test checks it against training), also for epochs
//! recorded before event files existed or lost between a checkpoint and its events.

use candle_core::Device;

use crate::config::RunConfig;
use crate::model::Network;
use crate::tensorboard::EpochStructure;

/// Progress t in [0, 1) of iteration `i` (0-based) of `total`: what drives the learning rate
/// and the pruning schedules.
pub fn progress_at(i: u64, total: u64) -> f64 {
    i as f64 / total as f64
}

/// Epoch `e` (1-based) of `cfg` at `iterations_per_epoch` is entry `e - 1`.
pub fn replay(
    cfg: &RunConfig,
    iterations_per_epoch: usize,
) -> candle_core::Result<Vec<EpochStructure>> {
    let mut net = Network::seeded(&cfg.model, cfg.train.seed, &Device::Cpu)?;
    let per_epoch = iterations_per_epoch as u64;
    let total = cfg.train.epochs as u64 * per_epoch;
    let mut epochs = Vec::with_capacity(cfg.train.epochs);
    let mut changes = Vec::new();
    for i in 0..total {
        // As the trainer does at the start of iteration i.
        let t = progress_at(i, total);
        let report = net.advance_schedule(t)?;
        if report.drops + report.conversions > 0 {
            changes.push(format!(
                "iteration {i} (progress {t:.4}): {}",
                net.schedule_state()
            ));
        }
        if (i + 1) % per_epoch == 0 {
            let live = net.live_fractions();
            epochs.push(EpochStructure {
                learned_group_live: live.learned_group,
                learned_dsc_live: live.learned_dsc,
                changes: std::mem::take(&mut changes),
            });
        }
    }
    Ok(epochs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DataConfig, ModelSource, TrainConfig};

    fn config(preset: &str, set: &[&str], epochs: usize) -> RunConfig {
        let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        let model = ModelSource::parse(preset).resolve(&set).unwrap();
        RunConfig {
            model_name: model.name,
            model: model.spec,
            train: TrainConfig {
                epochs,
                ..TrainConfig::default()
            },
            data: DataConfig::default(),
        }
    }

    /// CondenseNet: the learned group convs drop a quarter of their inputs at t = 1/6, 2/6,
    /// 3/6 (condense factor 4) and end at 1/4 live; another seed (other weights, so other
    /// inputs dropped) gives the same fractions.
    #[test]
    fn condensenet_condenses_to_a_quarter() {
        let cfg = config("condensenet-86", &["stages=[1,1,1]"], 12);
        let epochs = replay(&cfg, 3).unwrap();
        assert_eq!(epochs.len(), 12);
        let live: Vec<f64> = epochs
            .iter()
            .map(|e| e.learned_group_live.unwrap())
            .collect();
        assert_eq!(
            live,
            [1.0, 1.0, 0.75, 0.75, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25]
        );
        assert!(epochs.iter().all(|e| e.learned_dsc_live.is_none()));
        // Drops at iterations 6, 12, 18 of 36: epochs 3, 5 and 7 (1-based).
        let changed: Vec<usize> = (0..12).filter(|&e| !epochs[e].changes.is_empty()).collect();
        assert_eq!(changed, [2, 4, 6]);
        assert_eq!(
            epochs[2].changes,
            ["iteration 6 (progress 0.1667): learned-group 3/4 live"]
        );
        let mut other = cfg.clone();
        other.train.seed = 99;
        assert_eq!(replay(&other, 3).unwrap(), epochs);
    }

    /// CondenseNeXt: learned-dsc kernels drop in steps and the layers convert after the last.
    #[test]
    fn condensenext_drops_kernels_and_converts() {
        let cfg = config("condensenext", &["stages=[1,1,1]"], 4);
        let epochs = replay(&cfg, 6).unwrap();
        let live: Vec<f64> = epochs.iter().map(|e| e.learned_dsc_live.unwrap()).collect();
        assert!(live.windows(2).all(|w| w[1] <= w[0]), "{live:?}");
        assert!(live[3] < 1.0, "{live:?}");
        let text = epochs
            .iter()
            .flat_map(|e| &e.changes)
            .cloned()
            .collect::<Vec<_>>();
        assert!(
            text.last().unwrap().ends_with("learned-dsc converted"),
            "{text:?}"
        );
    }
}
