//! What a user watching a run sees: an indicatif bar per epoch on a terminal, plain periodic
//! lines otherwise (logs, CI, a scheduler reading the output).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Seconds between plain progress lines within an epoch.
const PLAIN_EVERY: Duration = Duration::from_secs(30);

pub struct EpochMeter {
    bar: Option<ProgressBar>,
    epoch: usize,
    epochs: usize,
    iterations: usize,
    started: Instant,
    last_line: Instant,
}

impl EpochMeter {
    /// Progress of `epoch` (1-based) of `epochs`, `iterations` steps long; a bar when stderr is
    /// a terminal.
    pub fn start(epoch: usize, epochs: usize, iterations: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(iterations as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{epochs}"));
            bar
        });
        let now = Instant::now();
        Self {
            bar,
            epoch,
            epochs,
            iterations,
            started: now,
            last_line: now,
        }
    }

    /// After `done` steps with running mean loss `loss` and top-1 `top1` (percent).
    pub fn step(&mut self, done: usize, images: usize, loss: f64, top1: f64) {
        let rate = images as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let msg = format!("loss {loss:.4} top1 {top1:.2}% {rate:.0} img/s");
        match &self.bar {
            Some(bar) => {
                bar.set_position(done as u64);
                bar.set_message(msg);
            }
            None if self.last_line.elapsed() >= PLAIN_EVERY => {
                self.last_line = Instant::now();
                eprintln!(
                    "epoch {}/{} step {done}/{} {msg}",
                    self.epoch, self.epochs, self.iterations
                );
            }
            None => {}
        }
    }

    /// Clears the bar; the caller prints the epoch's summary line.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
