//! The training loop of spec section 6: per-iteration progress `t` drives the cosine learning
//! rate and the pruning schedules; every epoch is evaluated, recorded and checkpointed; the end
//! converts to the deploy form and checks it against the training form.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::ModuleT;

use super::checkpoint::{self, TrainedSoFar};
use super::events::RunEvents;
use super::loss::{class_balanced_weights, class_weight_tensor, cross_entropy, focal_loss_with};
use super::meter::EpochMeter;
use super::model_file;
use super::structure::progress_at;

use super::optim::{cosine_lr, Sgd, SgdConfig};
use crate::analyze::{self, trace_costs, Convention};
use crate::clock::unix_seconds;
use crate::config::{Loss, RunConfig};
use crate::data::{epoch_order, prepare_batch, Crop, Dataset};
use crate::model::Network;
use crate::run_dir::{
    check_trained_config, median, write_metrics, write_summary, EpochRecord, FormCounts,
    PruningEvent, RunDir, RunDirError, RunStatus, Summary, CHECKPOINT_FILE, CONFIG_FILE,
    METRICS_FILE, MODEL_FILE, SCRATCH_FILE, SUMMARY_FILE,
};
use crate::tensorboard::hparams::SessionStatus;

/// Images per evaluation batch at most (evaluation is per-image in eval mode). A run
/// evaluates at its training batch below this: an evaluation forward (no graph kept) then
/// holds less than a training step does.
const EVAL_BATCH: usize = 200;

/// Where and how a run executes; none of it changes the result on a given device.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Folder with (or to receive) `cifar-10-batches-bin/`.
    pub data_dir: PathBuf,
    pub device: Device,
    /// Continue the run in the output dir from its checkpoint.
    pub resume: bool,
    /// Write TensorBoard event files into the run dir's `tensorboard/`.
    pub tensorboard: bool,
}

/// A training step's loss above this many times `ln(classes)` (the loss of a uniform guess,
/// about where both losses start) means the run has diverged: a healthy run stays within a
/// few times it, while an exploding one passes it within a few steps (ReLU6 keeps the outputs,
/// and so the loss, finite: 1e12 and more).
pub const DIVERGED_ABOVE: f64 = 1000.0;

/// A loss became NaN, infinite, or larger than [`DIVERGED_ABOVE`] times `ln(classes)`:
/// training stops instead of going on with garbage.
#[derive(Debug, thiserror::Error)]
#[error(
    "run diverged: the {what} is {loss} in epoch {epoch} (lr {lr:e}); stopped. {kept}; lower \
     train.lr and start a new run",
    kept = match last_good {
        0 => "No checkpoint was written".to_string(),
        n => format!("The run dir keeps the checkpoint of epoch {n}"),
    }
)]
pub struct Diverged {
    /// Which loss: `training loss at step N` or `test loss`.
    pub what: String,
    /// 1-based.
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    /// Epochs of the last checkpoint.
    pub last_good: usize,
}

/// The counts of `net` as the summary records them.
fn form_counts(net: &Network) -> candle_core::Result<FormCounts> {
    let layers = trace_costs(net)?;
    Ok(FormCounts {
        paper: analyze::total(&layers, Convention::Paper),
        executed: analyze::total(&layers, Convention::Executed),
    })
}

/// Stopped on request (SIGINT / SIGTERM); the run resumes from its last checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("stopped on request after {epochs_done} of {epochs} epochs; resume continues from the last checkpoint")]
pub struct Interrupted {
    pub epochs_done: usize,
    pub epochs: usize,
}

/// What [`train`] did in a run dir.
#[derive(Debug)]
pub enum Outcome {
    /// Trained the run (or its remaining epochs) to the end.
    Trained(Box<Summary>),
    /// The run was done already; nothing was trained or rewritten.
    AlreadyDone,
    /// The run was done but its deploy model was gone: rebuilt from the final checkpoint
    /// (`bytes` long), nothing else rewritten.
    Rebuilt { bytes: u64 },
}

/// Trains `cfg` into the run dir `out`. A run dir holding this run already done is left as
/// it is, except that a deploy model gone missing is rebuilt from the final checkpoint (or,
/// with no checkpoint either, refused with the command that trains the run again). A diverged
/// run returns a [`Diverged`] error, a stopped one [`Interrupted`], after recording it.
pub fn train(cfg: &RunConfig, out: &Path, opts: &TrainOptions) -> anyhow::Result<Outcome> {
    cfg.validate()?;
    crate::data::check_fits(cfg)?;
    if opts.device.is_cpu() {
        crate::config::check_fits(&cfg.model, crate::data::step_images(cfg))?;
    }
    let mut dir = RunDir::open(out, cfg, opts.resume)?;
    // Before the done check and the attempt: a run whose config.toml was edited after its
    // checkpoint was written is neither done nor resumable, and its status stays as it was.
    if let Some(trained) = checkpoint::config_of(&dir.path(CHECKPOINT_FILE)) {
        check_trained_config(
            &dir.path(CONFIG_FILE),
            cfg,
            &dir.path(CHECKPOINT_FILE),
            &trained,
        )?;
    }
    // How far the run got comes from its checkpoint, not from status.json (which a crash or a
    // hand may have emptied or edited): no checkpoint, no epoch done. A done run whose status
    // agrees with its checkpoint (or that no longer keeps one) is left as it is.
    let saved = checkpoint::progress_of(&dir.path(CHECKPOINT_FILE));
    let epochs_done = saved
        .as_ref()
        .map_or(0, |p| p.epochs_done.min(cfg.train.epochs));
    let status = dir.status();
    let done = status.status == RunStatus::Done && dir.path(SUMMARY_FILE).is_file();
    let agrees =
        saved.is_none() || (epochs_done == cfg.train.epochs && status.epochs_done == epochs_done);
    if done && agrees {
        if dir.path(MODEL_FILE).is_file() {
            return Ok(Outcome::AlreadyDone);
        }
        if !dir.path(CHECKPOINT_FILE).is_file() {
            return Err(RunDirError::DeployModelLost {
                dir: out.to_path_buf(),
            }
            .into());
        }
        let bytes = rebuild_deploy_model(cfg, &mut dir, &opts.device)?;
        return Ok(Outcome::Rebuilt { bytes });
    }
    dir.begin_attempt(&device_name(&opts.device), epochs_done)?;
    let result = Trainer::new(cfg, &mut dir, opts).and_then(|mut t| t.run());
    if let Err(e) = &result {
        let status = if e.downcast_ref::<Diverged>().is_some() {
            RunStatus::Diverged
        } else if e.downcast_ref::<Interrupted>().is_some() {
            RunStatus::Interrupted
        } else {
            RunStatus::Failed
        };
        dir.log(&format!("{status}: {e:#}"));
        let _ = dir.update(status, Some(format!("{e:#}")));
    }
    result.map(|summary| Outcome::Trained(Box::new(summary)))
}

/// Writes the deploy model of the done run in `dir` again from its final checkpoint, exactly
/// as training ended: the network restored at its last step, every schedule run to its end,
/// the head pruned, converted. Training is deterministic from there, so the file is the one
/// training wrote. The checkpoint must hold the run's config (the truth about the weights).
fn rebuild_deploy_model(cfg: &RunConfig, dir: &mut RunDir, device: &Device) -> anyhow::Result<u64> {
    let ckpt = dir.path(CHECKPOINT_FILE);
    let loaded = checkpoint::load(&ckpt, device)?;
    check_trained_config(&dir.path(CONFIG_FILE), cfg, &ckpt, &loaded.config_toml)?;
    let last = loaded.progress.iterations_done;
    if last == 0 {
        anyhow::bail!("{}: records no training step", ckpt.display());
    }
    let mut net = Network::seeded(&cfg.model, cfg.train.seed, device)?;
    net.restore(progress_at(last - 1, last), &loaded.tensors)
        .with_context(|| format!("restoring {}", ckpt.display()))?;
    net.finish_pruning()?;
    let deploy = net.condense().context("converting to the deploy form")?;
    let bytes = model_file::save(&dir.path(MODEL_FILE), &deploy, &cfg.to_toml())?;
    dir.log(&format!(
        "done run: {MODEL_FILE} was missing; rebuilt from {CHECKPOINT_FILE} ({bytes} bytes)"
    ));
    Ok(bytes)
}

pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

struct Trainer<'a> {
    cfg: &'a RunConfig,
    dir: &'a mut RunDir,
    device: Device,
    train: std::sync::Arc<Dataset>,
    test: Dataset,
    net: Network,
    sgd: Sgd,
    progress: TrainedSoFar,
    /// Class weights of the focal loss (unused for CE), `[C]` on the device.
    class_weights: Tensor,
    iterations_per_epoch: usize,
    /// The run's TensorBoard events; `None` when turned off.
    events: Option<RunEvents>,
}

/// Loss, top-1 and predicted classes of a pass over a dataset.
struct Evaluation {
    loss: f64,
    top1: f64,
    predictions: Vec<u32>,
}

impl<'a> Trainer<'a> {
    fn new(cfg: &'a RunConfig, dir: &'a mut RunDir, opts: &TrainOptions) -> anyhow::Result<Self> {
        let (train, test) = crate::data::load(&cfg.data, &opts.data_dir)?;
        let device = opts.device.clone();
        let mut net =
            Network::seeded(&cfg.model, cfg.train.seed, &device).context("building the model")?;
        let sgd_cfg = sgd_config(cfg);
        let mut progress = TrainedSoFar::default();
        let ckpt = dir.path(CHECKPOINT_FILE);
        let mut sgd = Sgd::new(net.trainable(), sgd_cfg);
        let iterations_per_epoch = train.len().div_ceil(cfg.train.batch);
        let total = (cfg.train.epochs * iterations_per_epoch) as u64;
        if ckpt.is_file() {
            let loaded = checkpoint::load(&ckpt, &device)?;
            check_trained_config(
                &dir.path(CONFIG_FILE),
                cfg,
                &dir.path(CHECKPOINT_FILE),
                &loaded.config_toml,
            )?;
            progress = loaded.progress;
            if progress.iterations_done > 0 {
                let t = progress_at(progress.iterations_done - 1, total);
                net.restore(t, &loaded.tensors)
                    .with_context(|| format!("restoring {}", ckpt.display()))?;
            }
            sgd = Sgd::new(net.trainable(), sgd_cfg);
            checkpoint::restore_momentum(&mut sgd, &net, &loaded.tensors);
            dir.log(&format!(
                "resuming after epoch {} of {}",
                progress.epochs_done, cfg.train.epochs
            ));
        } else {
            dir.log(&format!(
                "starting {} on {}: {} epochs, batch {}, {} train / {} test images",
                cfg.model_name,
                device_name(&device),
                cfg.train.epochs,
                cfg.train.batch,
                train.len(),
                test.len()
            ));
        }
        // metrics.csv always agrees with the checkpoint (a kill between the two writes is
        // repaired here).
        write_metrics(&dir.path(METRICS_FILE), &progress.records)?;
        // The events of the checkpointed epochs that the event folder lacks come first.
        let events = opts.tensorboard.then(|| {
            let mut events = RunEvents::open(dir.root(), cfg, Some(iterations_per_epoch));
            let start = dir.status().started.unwrap_or_else(unix_seconds);
            events.session_start(start);
            events.epochs(&progress.records, start);
            warn(dir, &mut events);
            events
        });
        let class_weights = class_weight_tensor(
            &class_balanced_weights(&train.class_counts(), cfg.train.focal_beta),
            &device,
        )?;
        Ok(Self {
            cfg,
            dir,
            device,
            train: std::sync::Arc::new(train),
            test,
            net,
            sgd,
            progress,
            class_weights,
            iterations_per_epoch,
            events,
        })
    }

    /// Does `write` to the run's events, if they are on, and reports its warnings.
    fn events(&mut self, write: impl FnOnce(&mut RunEvents)) {
        if let Some(events) = &mut self.events {
            write(events);
            warn(self.dir, events);
        }
    }

    /// Records the epochs done and the median epoch time so far.
    fn record_progress(&mut self) -> anyhow::Result<()> {
        let records = &self.progress.records;
        let seconds = median(records.iter().map(|r| r.epoch_seconds));
        self.dir.progress(self.progress.epochs_done, seconds)
    }

    fn total_iterations(&self) -> u64 {
        (self.cfg.train.epochs * self.iterations_per_epoch) as u64
    }

    fn run(&mut self) -> anyhow::Result<Summary> {
        let epochs = self.cfg.train.epochs;
        while self.progress.epochs_done < epochs {
            let record = match self.epoch() {
                Ok(record) => record,
                Err(e) => {
                    if e.is::<Diverged>() {
                        self.events(|ev| ev.end(SessionStatus::Failure, unix_seconds()));
                    }
                    return Err(e);
                }
            };
            let line = format!(
                "epoch {}/{epochs}: train loss {:.4} top1 {:.2}% | test loss {:.4} top1 {:.2}% | lr {:.5} | {:.1}s ({:.1}s data) {:.0} img/s",
                record.epoch,
                record.train_loss,
                record.train_top1,
                record.test_loss,
                record.test_top1,
                record.lr,
                record.epoch_seconds,
                record.data_seconds,
                record.images_per_second
            );
            eprintln!("{line}");
            self.dir.log(&line);
            self.progress.records.push(record.clone());
            self.progress.epochs_done += 1;
            write_metrics(&self.dir.path(METRICS_FILE), &self.progress.records)?;
            checkpoint::save(
                &self.dir.path(CHECKPOINT_FILE),
                &self.net,
                &self.sgd,
                &self.progress,
                &self.cfg.to_toml(),
            )?;
            self.record_progress()?;
            // Only now is the epoch durable: a kill before this line trains it again.
            self.events(|ev| ev.epoch(&record, unix_seconds()));
        }
        let summary = self.finish()?;
        write_summary(self.dir.root(), &summary)?;
        self.dir.update(RunStatus::Done, None)?;
        let json = serde_json::to_value(&summary)?;
        self.events(|ev| ev.finish(&json, epochs, unix_seconds()));
        self.dir.log(&format!(
            "done: deploy test top1 {:.2}%, agreement with the training form {:.4}",
            summary.deploy_test_top1, summary.deploy_agreement
        ));
        Ok(summary)
    }

    /// The loss of `logits` against `targets` for the model's loss.
    fn loss(&self, logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
        match self.cfg.model.loss {
            Loss::Ce => cross_entropy(logits, targets),
            Loss::Focal => focal_loss_with(
                logits,
                targets,
                &self.class_weights,
                self.cfg.train.focal_gamma,
            ),
        }
    }

    /// One training epoch (the next one), then its evaluation.
    fn epoch(&mut self) -> anyhow::Result<EpochRecord> {
        let epoch = self.progress.epochs_done; // 0-based
        let (seed, batch) = (self.cfg.train.seed, self.cfg.train.batch);
        let total = self.total_iterations();
        let order = epoch_order(self.train.len(), seed, epoch);
        let mut bar =
            EpochMeter::start(epoch + 1, self.cfg.train.epochs, self.iterations_per_epoch);
        let (mut data_time, mut compute_time) = (Duration::ZERO, Duration::ZERO);
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let mut lr = self.cfg.train.lr;
        let started = Instant::now();
        let train = std::sync::Arc::clone(&self.train);
        let mirrors = self.cfg.data.dataset.mirrors();
        std::thread::scope(|scope| -> anyhow::Result<()> {
            // Batches are prepared one step ahead on the rayon pool while the step runs.
            let (tx, rx) = std::sync::mpsc::sync_channel(2);
            let order = &order;
            scope.spawn(move || {
                for (b, indices) in order.chunks(batch).enumerate() {
                    let prepared = prepare_batch(&train, indices, |k| {
                        let crop = Crop::random(seed, epoch, b * batch + k);
                        Crop {
                            flip: crop.flip && mirrors,
                            ..crop
                        }
                    });
                    if tx.send(prepared).is_err() {
                        return;
                    }
                }
            });
            for step in 0..self.iterations_per_epoch {
                if crate::signal::stop_requested() {
                    return Err(Interrupted {
                        epochs_done: epoch,
                        epochs: self.cfg.train.epochs,
                    }
                    .into());
                }
                let waited = Instant::now();
                let (pixels, labels) = rx.recv().context("the batch loader stopped")?;
                data_time += waited.elapsed();
                let computing = Instant::now();
                let n = labels.len();
                let iteration = self.progress.iterations_done;
                let t = progress_at(iteration, total);
                let report = self.net.advance_schedule(t)?;
                if report.conversions > 0 {
                    self.rebuild_optimizer();
                    self.dir.log(&format!(
                        "step {iteration}: {} learned-dsc layers converted to separable form",
                        report.conversions
                    ));
                }
                lr = cosine_lr(self.cfg.train.lr, t);
                self.net.set_noise_step(iteration);
                let x = Tensor::from_vec(pixels, (n, 3, 32, 32), &self.device)?;
                let y = Tensor::from_vec(labels.clone(), n, &self.device)?;
                let logits = self.net.forward_t(&x, true)?;
                let loss = self.loss(&logits, &y)?;
                let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
                let bound = DIVERGED_ABOVE * (self.cfg.model.classes as f64).ln();
                if !value.is_finite() || value as f64 > bound {
                    return Err(Diverged {
                        what: format!("training loss at step {}", step + 1),
                        epoch: epoch + 1,
                        loss: value as f64,
                        lr,
                        last_good: epoch,
                    }
                    .into());
                }
                let grads = loss.backward()?;
                self.sgd.step(&grads, lr)?;
                correct += predict(&logits, &labels)?.1;
                loss_sum += value as f64 * n as f64;
                seen += n;
                self.progress.iterations_done += 1;
                compute_time += computing.elapsed();
                bar.step(
                    step + 1,
                    seen,
                    loss_sum / seen as f64,
                    100.0 * correct as f64 / seen as f64,
                );
            }
            Ok(())
        })?;
        let epoch_seconds = started.elapsed().as_secs_f64();
        bar.finish();
        let evaluating = Instant::now();
        let test = self.evaluate(&self.net, &self.test)?;
        // Huge but finite training losses can still leave the weights non-finite: the eval
        // pass shows it.
        if !test.loss.is_finite() {
            return Err(Diverged {
                what: "test loss".into(),
                epoch: epoch + 1,
                loss: test.loss,
                lr,
                last_good: epoch,
            }
            .into());
        }
        Ok(EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / seen as f64,
            train_top1: 100.0 * correct as f64 / seen as f64,
            test_loss: test.loss,
            test_top1: test.top1,
            lr,
            epoch_seconds,
            data_seconds: data_time.as_secs_f64(),
            compute_seconds: compute_time.as_secs_f64(),
            eval_seconds: evaluating.elapsed().as_secs_f64(),
            images_per_second: seen as f64 / epoch_seconds,
        })
    }

    /// A fresh optimiser over the parameters the network has now, keeping the momentum of
    /// every parameter that still exists (a conversion replaces some).
    fn rebuild_optimizer(&mut self) {
        let mut sgd = Sgd::new(self.net.trainable(), sgd_config(self.cfg));
        for (name, _) in self.net.trainable() {
            if let Some(m) = self.sgd.momentum(&name) {
                sgd.set_momentum(&name, m);
            }
        }
        self.sgd = sgd;
    }

    /// `net` in eval mode over `data` (normalisation only).
    fn evaluate(&self, net: &Network, data: &Dataset) -> anyhow::Result<Evaluation> {
        let (mut loss_sum, mut correct) = (0f64, 0usize);
        let mut predictions = Vec::with_capacity(data.len());
        let indices: Vec<usize> = (0..data.len()).collect();
        for chunk in indices.chunks(self.cfg.train.batch.clamp(1, EVAL_BATCH)) {
            let (pixels, labels) = prepare_batch(data, chunk, |_| Crop::CENTER);
            let n = labels.len();
            let x = Tensor::from_vec(pixels, (n, 3, 32, 32), &self.device)?;
            let y = Tensor::from_vec(labels.clone(), n, &self.device)?;
            let logits = net.forward_t(&x, false)?;
            let loss = self
                .loss(&logits, &y)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            loss_sum += loss * n as f64;
            let (predicted, right) = predict(&logits, &labels)?;
            correct += right;
            predictions.extend(predicted);
        }
        Ok(Evaluation {
            loss: loss_sum / data.len() as f64,
            top1: 100.0 * correct as f64 / data.len() as f64,
            predictions,
        })
    }

    /// End of training: run every schedule to its end and prune the head, convert to the
    /// deploy form, check that both make the same predictions, write the model.
    fn finish(&mut self) -> anyhow::Result<Summary> {
        let peak_rss_training_bytes = crate::alloc::peak_rss();
        let mut pruned = self.net.clone();
        pruned.finish_pruning()?;
        let before = self.evaluate(&pruned, &self.test)?;
        let deploy = pruned.condense().context("converting to the deploy form")?;
        let after = self.evaluate(&deploy, &self.test)?;
        let agree = before
            .predictions
            .iter()
            .zip(&after.predictions)
            .filter(|(a, b)| a == b)
            .count();
        let deploy_agreement = agree as f64 / self.test.len() as f64;
        let deploy_bytes =
            model_file::save(&self.dir.path(MODEL_FILE), &deploy, &self.cfg.to_toml())?;
        let mut fresh = Network::seeded(&self.cfg.model, self.cfg.train.seed, &self.device)?;
        let scratch = self.dir.path(SCRATCH_FILE);
        let checkpoint_bytes = analyze::write_checkpoint(&fresh, &scratch)?;
        let _ = std::fs::remove_file(&scratch);
        let training = form_counts(&fresh)?;
        let epochs = self.cfg.train.epochs as f64;
        let schedule = fresh
            .walk_schedule()?
            .into_iter()
            .map(|(progress, structure)| PruningEvent {
                progress,
                epoch: progress * epochs,
                structure,
            })
            .collect();
        let records = &self.progress.records;
        let last = records.last().context("no epoch was recorded")?.clone();
        let best = records
            .iter()
            .max_by(|a, b| {
                a.test_top1
                    .total_cmp(&b.test_top1)
                    .then(b.epoch.cmp(&a.epoch))
            })
            .expect("records are not empty");
        self.dir.log(&format!(
            "deploy form: test top1 {:.2}% (training form before conversion {:.2}%), {} of {} predictions agree",
            after.top1,
            before.top1,
            agree,
            self.test.len()
        ));
        Ok(Summary {
            model: self.cfg.model_name.clone(),
            status: RunStatus::Done,
            device: device_name(&self.device),
            epochs: self.cfg.train.epochs,
            best_test_top1: best.test_top1,
            best_epoch: best.epoch,
            deploy_test_top1: after.top1,
            deploy_test_loss: after.loss,
            deploy_agreement,
            training_form_test_top1: last.test_top1,
            train_seconds: records.iter().map(|r| r.epoch_seconds).sum(),
            median_epoch_seconds: median(records.iter().map(|r| r.epoch_seconds))
                .expect("records are not empty"),
            median_images_per_second: median(records.iter().map(|r| r.images_per_second))
                .expect("records are not empty"),
            deploy: form_counts(&deploy)?,
            training,
            deploy_bytes,
            checkpoint_bytes,
            train_images: self.train.len(),
            test_images: self.test.len(),
            last,
            schedule,
            peak_rss_training_bytes,
            peak_rss_bytes: crate::alloc::peak_rss(),
        })
    }
}

/// Prints each warning of `events` (TensorBoard files are never worth stopping a run for) and
/// logs it in the run dir.
fn warn(dir: &mut RunDir, events: &mut RunEvents) {
    for w in events.warnings() {
        eprintln!("warning: tensorboard: {w}");
        dir.log(&format!("warning: tensorboard: {w}"));
    }
}

/// The predicted class of each row of `logits` and how many equal `labels`.
fn predict(logits: &Tensor, labels: &[u32]) -> candle_core::Result<(Vec<u32>, usize)> {
    let predicted = logits.argmax(1)?.to_vec1::<u32>()?;
    let right = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    Ok((predicted, right))
}

fn sgd_config(cfg: &RunConfig) -> SgdConfig {
    SgdConfig {
        momentum: cfg.train.momentum,
        weight_decay: cfg.train.weight_decay,
        nesterov: cfg.train.nesterov,
    }
}
