//! How much CPU other processes used while this one measured something: a measurement taken
//! while the machine was shared is slow for reasons of the moment, and is not kept.

/// The machine's and this process's CPU time at a start, read from /proc.
pub struct OtherLoad {
    start: std::time::Instant,
    machine: Option<u64>,
    own: Option<u64>,
}

impl OtherLoad {
    pub fn start() -> Self {
        Self {
            start: std::time::Instant::now(),
            machine: machine_busy_ticks(),
            own: own_ticks(),
        }
    }

    /// Cores other processes kept busy on average since [`OtherLoad::start`] (steal time of a
    /// virtual machine included); 0 where /proc cannot tell.
    pub fn cores(&self) -> f64 {
        let (Some(m0), Some(o0), Some(m1), Some(o1)) =
            (self.machine, self.own, machine_busy_ticks(), own_ticks())
        else {
            return 0.0;
        };
        let seconds = self.start.elapsed().as_secs_f64();
        if seconds <= 0.0 {
            return 0.0;
        }
        let other = m1.saturating_sub(m0).saturating_sub(o1.saturating_sub(o0));
        other as f64 / ticks_per_second() / seconds
    }
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// Busy ticks of every CPU (user, nice, system, irq, softirq, steal) from /proc/stat.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// This process's user and system ticks (all its threads) from /proc/self/stat.
fn own_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: the fields after it start behind the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are the 12th and 13th after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A busy child process counts as other load.
    #[test]
    fn a_busy_child_process_counts() {
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "end=$(($(date +%s) + 2)); while [ $(date +%s) -lt $end ]; do :; done",
            ])
            .spawn()
            .unwrap();
        let load = OtherLoad::start();
        child.wait().unwrap();
        assert!(load.cores() > 0.5, "{}", load.cores());
    }
}
