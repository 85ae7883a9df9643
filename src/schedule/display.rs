//! What a scheduler shows: one line per event (start, finish, failure), and the state of the
//! experiment — done / failed / running, each running run's epoch and ETA — as an indicatif
//! bar on a TTY, or as a plain line every 30 s otherwise.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Set once a write to stdout failed (a closed pipe: `ablate run ... | head -2`).
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
/// Where [`say`] writes once stdout is gone.
static FALLBACK_LOG: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Makes [`say`] append to `path` once stdout is gone.
pub fn log_to(path: PathBuf) {
    if let Ok(mut log) = FALLBACK_LOG.lock() {
        *log = Some(path);
    }
}

/// Prints `line` on stdout; once stdout is gone (its reader closed the pipe), appends it to
/// the log set by [`log_to`] instead, so that the scheduler goes on with its runs.
pub fn say(line: &str) {
    if !STDOUT_GONE.load(Ordering::Relaxed) {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_ok() {
            return;
        }
        STDOUT_GONE.store(true, Ordering::Relaxed);
    }
    let path = FALLBACK_LOG.lock().ok().and_then(|p| p.clone());
    if let Some(path) = path {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            eprintln!(
                "warning: stdout is closed and {} cannot be written: {e}",
                path.display()
            );
        }
    }
}

/// Seconds between plain state lines when stdout is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(30);

/// The scheduler's console: event lines, and the experiment's state as a progress bar (on a
/// terminal) or a periodic plain line (otherwise).
pub struct Console {
    bar: Option<ProgressBar>,
    last_plain: Instant,
}

impl Console {
    /// `total` runs to do in this session.
    pub fn new(total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} runs {elapsed_precise} {msg}")
                    .expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(500));
            bar
        });
        Self {
            bar,
            last_plain: Instant::now(),
        }
    }

    /// An event line, with the wall-clock time.
    pub fn event(&self, line: &str) {
        let line = format!("[{}] {line}", clock());
        match &self.bar {
            Some(bar) => bar.println(line),
            None => say(&line),
        }
    }

    /// The experiment's state: `finished` runs of this session so far and `state` (counts and
    /// running runs).
    pub fn state(&mut self, finished: usize, state: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(finished as u64);
                bar.set_message(state.to_string());
            }
            None => {
                if self.last_plain.elapsed() >= PLAIN_EVERY {
                    self.last_plain = Instant::now();
                    say(&format!("[{}] {state}", clock()));
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `HH:MM:SS` UTC of now.
fn clock() -> String {
    let s = crate::clock::unix_now() % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// `1h02m`, `3m10s`, `42s`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}
