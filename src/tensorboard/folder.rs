//! A run's event folder ([`crate::run_dir::TENSORBOARD_DIR`] in its run dir): which `(tag, step)` values its files hold
//! already, and this process's own file, created on the first value it has to write. A value
//! the folder holds is never written again: an epoch written before an interruption is not
//! repeated by the resume, and one that was lost (checkpointed, then killed before its event
//! was written, or in a damaged file) is written into the new file. TensorBoard reads every
//! file of the folder, in name order.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::event::{Event, Value};
use super::record::{frame, records, RecordError};

/// What every event file's name holds, the mark TensorBoard recognises them by.
pub const EVENTS_MARK: &str = "tfevents";

/// Writing the folder failed: the caller warns, the run goes on.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The event files of one folder, seen by this process.
#[derive(Debug)]
pub struct EventFolder {
    dir: PathBuf,
    /// `(tag, step)` of every value the folder's files hold, as TensorBoard reads them.
    present: HashSet<(String, i64)>,
    file: Sink,
    /// Tags whose description this process's file holds already (the first value per tag
    /// carries it).
    described: HashSet<String>,
}

#[derive(Debug)]
enum Sink {
    /// Nothing written yet: no file of this process.
    None,
    Open {
        file: File,
        path: PathBuf,
    },
    /// A write failed: nothing more goes into this file (a record after a torn one could not
    /// be read), and no other file is started by this process.
    Failed,
}

/// The event files of `dir`, in the order TensorBoard reads them.
pub fn event_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(EVENTS_MARK))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    files.sort();
    Ok(files)
}

/// A new event file's name, `events.out.tfevents.<unix seconds>.<host>.<pid>` (TensorFlow's
/// pattern), with the seconds past those of `last` (the folder's last file by name), so that
/// it sorts after every file of the folder: TensorBoard reads a folder's files in name order,
/// and while it runs it only moves on to a file that sorts after the one it reads.
fn file_name(now: u64, last: Option<&Path>) -> String {
    let last_seconds = last.and_then(|p| p.file_name()).and_then(|n| {
        let n = n.to_string_lossy();
        n.strip_prefix(&format!("events.out.{EVENTS_MARK}."))?
            .split('.')
            .next()?
            .parse::<u64>()
            .ok()
    });
    let seconds = match last_seconds {
        Some(s) if s >= now => s + 1,
        _ => now,
    };
    let host: String = crate::provenance::hostname()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "events.out.{EVENTS_MARK}.{seconds:010}.{host}.{}",
        std::process::id()
    )
}

impl EventFolder {
    /// The folder `dir` (it may not exist yet) and what its files hold, with a warning for
    /// each file that cannot be read or holds a damaged record (TensorBoard reads such a file
    /// up to the damage, and so does this scan: the values after it count as missing). A
    /// record cut short at a file's end (a writer killed mid-write) is no warning.
    pub fn scan(dir: &Path) -> (Self, Vec<String>) {
        let mut folder = Self {
            dir: dir.to_path_buf(),
            present: HashSet::new(),
            file: Sink::None,
            described: HashSet::new(),
        };
        let mut warnings = Vec::new();
        let files = match event_files(dir) {
            Ok(files) => files,
            // Something else in the folder's place: the first write says so.
            Err(_) if dir.exists() && !dir.is_dir() => Vec::new(),
            Err(e) => {
                warnings.push(format!("{}: cannot list the folder: {e}", dir.display()));
                Vec::new()
            }
        };
        for path in files {
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    warnings.push(format!("{}: cannot read it: {e}", path.display()));
                    continue;
                }
            };
            for record in records(&bytes) {
                let data = match record {
                    Ok(data) => data,
                    Err(RecordError::Truncated { .. }) => break,
                    Err(e) => {
                        warnings.push(format!(
                            "{}: {e}; TensorBoard reads the file up to there, so the steps \
                             after it are written again into a new file",
                            path.display()
                        ));
                        break;
                    }
                };
                match Event::decode(data) {
                    Ok(event) => folder
                        .present
                        .extend(event.values.into_iter().map(|v| (v.tag, event.step))),
                    Err(e) => warnings.push(format!(
                        "{}: a record is not an event ({e}); skipped",
                        path.display()
                    )),
                }
            }
        }
        (folder, warnings)
    }

    /// Whether the folder holds a value of `tag` at `step`.
    pub fn has(&self, tag: &str, step: i64) -> bool {
        self.present.contains(&(tag.to_string(), step))
    }

    /// This process's file, once it has written one.
    pub fn file(&self) -> Option<&Path> {
        match &self.file {
            Sink::Open { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Appends one event at `step` with those of `values` the folder does not hold yet (none:
    /// nothing is written); returns how many it wrote. The first write creates the folder and
    /// this process's file (its first event the file version). After a failed write this
    /// process writes nothing more.
    pub fn write(
        &mut self,
        wall_time: f64,
        step: i64,
        values: Vec<Value>,
    ) -> Result<usize, WriteError> {
        let mut values: Vec<Value> = values
            .into_iter()
            .filter(|v| !self.has(&v.tag, step))
            .collect();
        if values.is_empty() || matches!(self.file, Sink::Failed) {
            return Ok(0);
        }
        for v in &mut values {
            if v.description.is_some() && !self.described.insert(v.tag.clone()) {
                v.description = None;
            }
        }
        let tags: Vec<String> = values.iter().map(|v| v.tag.clone()).collect();
        let record = frame(&Event::summary(wall_time, step, values).encode());
        let written = self.append(wall_time, &record);
        if let Err(e) = written {
            self.file = Sink::Failed;
            return Err(e);
        }
        let n = tags.len();
        self.present.extend(tags.into_iter().map(|t| (t, step)));
        Ok(n)
    }

    fn append(&mut self, wall_time: f64, record: &[u8]) -> Result<(), WriteError> {
        if matches!(self.file, Sink::None) {
            self.file = self.create(wall_time)?;
        }
        let Sink::Open { file, path } = &mut self.file else {
            return Ok(());
        };
        file.write_all(record).map_err(|source| WriteError {
            path: path.clone(),
            source,
        })
    }

    /// A new file of this process in the folder, its file-version event written.
    fn create(&self, wall_time: f64) -> Result<Sink, WriteError> {
        let failed = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WriteError { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(failed(&self.dir))?;
        let files = event_files(&self.dir).map_err(failed(&self.dir))?;
        let path = self.dir.join(file_name(
            crate::clock::unix_now(),
            files.last().map(PathBuf::as_path),
        ));
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(failed(&path))?;
        file.write_all(&frame(&Event::file_version(wall_time).encode()))
            .map_err(failed(&path))?;
        Ok(Sink::Open { file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::super::event::ReadData;
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ablate-tb-folder-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Every `(tag, step, value)` of the folder's files, in file order.
    fn read_all(dir: &Path) -> Vec<(String, i64, ReadData)> {
        let mut out = Vec::new();
        for path in event_files(dir).unwrap() {
            let bytes = std::fs::read(path).unwrap();
            let events: Vec<_> = records(&bytes)
                .map(|r| Event::decode(r.unwrap()).unwrap())
                .collect();
            assert_eq!(
                events[0].file_version.as_deref(),
                Some(super::super::event::FILE_VERSION)
            );
            for e in events {
                out.extend(e.values.into_iter().map(|v| (v.tag, e.step, v.data)));
            }
        }
        out
    }

    fn epoch(step: i64) -> Vec<Value> {
        vec![
            Value::scalar("test/top1", step as f32).described("percent"),
            Value::scalar("train/loss", -(step as f32)),
        ]
    }

    #[test]
    fn new_files_sort_after_the_folders_last() {
        let now = 1_700_000_000;
        let name = file_name(now, None);
        assert!(
            name.starts_with("events.out.tfevents.1700000000."),
            "{name}"
        );
        assert!(name.ends_with(&format!(".{}", std::process::id())));
        let later = format!("events.out.tfevents.{}.zzz.99999999", now + 5);
        let next = file_name(now, Some(Path::new(&later)));
        assert!(
            next.starts_with("events.out.tfevents.1700000006."),
            "{next}"
        );
        assert!(next.as_str() > later.as_str());
        // A foreign file name says nothing: the clock decides.
        assert_eq!(file_name(now, Some(Path::new("my.tfevents"))), name);
    }

    #[test]
    fn nothing_written_twice_across_processes() {
        let dir = scratch("twice");
        let (mut a, warnings) = EventFolder::scan(&dir);
        assert!(warnings.is_empty());
        assert!(a.file().is_none(), "no file before the first write");
        assert_eq!(a.write(1.0, 1, epoch(1)).unwrap(), 2);
        assert_eq!(a.write(2.0, 2, epoch(2)).unwrap(), 2);
        assert_eq!(a.write(2.0, 2, epoch(2)).unwrap(), 0, "held already");
        let first = a.file().unwrap().to_path_buf();
        drop(a);
        // A second "process": a new file, with only what the folder lacks.
        let (mut b, _) = EventFolder::scan(&dir);
        assert!(b.has("test/top1", 2) && !b.has("test/top1", 3));
        assert_eq!(b.write(3.0, 2, epoch(2)).unwrap(), 0);
        assert!(b.file().is_none(), "nothing new: no new file");
        let mut partial = epoch(3);
        partial.truncate(1);
        b.write(3.0, 3, partial).unwrap();
        assert_eq!(
            b.write(4.0, 3, epoch(3)).unwrap(),
            1,
            "only train/loss was missing"
        );
        // The second file sorts after the first, even within one second.
        let second = b.file().unwrap().to_path_buf();
        assert!(second > first, "{second:?} sorts after {first:?}");
        let got = read_all(&dir);
        let steps: Vec<(String, i64)> = got.iter().map(|(t, s, _)| (t.clone(), *s)).collect();
        assert_eq!(
            steps,
            [
                ("test/top1".into(), 1),
                ("train/loss".into(), 1),
                ("test/top1".into(), 2),
                ("train/loss".into(), 2),
                ("test/top1".into(), 3),
                ("train/loss".into(), 3),
            ]
        );
        assert_eq!(got[5].2, ReadData::Scalar(-3.0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file cut short mid-record (a kill) and one with a flipped byte: the scan reads each up
    /// to the damage, the lost steps are written again, and only the flipped byte warns.
    #[test]
    fn damaged_files_are_read_up_to_the_damage() {
        let dir = scratch("damaged");
        let (mut a, _) = EventFolder::scan(&dir);
        for step in 1..=3 {
            a.write(step as f64, step, epoch(step)).unwrap();
        }
        let path = a.file().unwrap().to_path_buf();
        drop(a);
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        let (folder, warnings) = EventFolder::scan(&dir);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(folder.has("test/top1", 2) && !folder.has("test/top1", 3));
        let mut flipped = whole.clone();
        let at = whole.len() - 20;
        flipped[at] ^= 0x10;
        std::fs::write(&path, &flipped).unwrap();
        let (mut folder, warnings) = EventFolder::scan(&dir);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("CRC"), "{warnings:?}");
        assert!(!folder.has("test/top1", 3));
        assert_eq!(folder.write(9.0, 3, epoch(3)).unwrap(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A folder that cannot be created (a file in its place) and a full disk are errors of
    /// the write, after which nothing more is tried.
    #[test]
    fn write_failures_are_errors_then_silence() {
        let dir = scratch("blocked");
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        std::fs::write(&dir, b"not a folder").unwrap();
        let (mut folder, warnings) = EventFolder::scan(&dir);
        assert!(warnings.is_empty(), "the write says it: {warnings:?}");
        let e = folder.write(1.0, 1, epoch(1)).unwrap_err();
        assert!(e.to_string().contains(&dir.display().to_string()), "{e}");
        assert_eq!(folder.write(2.0, 2, epoch(2)).unwrap(), 0);
        std::fs::remove_file(&dir).unwrap();

        if Path::new("/dev/full").exists() {
            let mut full = EventFolder {
                dir: PathBuf::from("/dev"),
                present: HashSet::new(),
                file: Sink::Open {
                    file: std::fs::OpenOptions::new()
                        .append(true)
                        .open("/dev/full")
                        .unwrap(),
                    path: PathBuf::from("/dev/full"),
                },
                described: HashSet::new(),
            };
            let e = full.write(1.0, 1, epoch(1)).unwrap_err();
            assert_eq!(e.source.raw_os_error(), Some(libc::ENOSPC), "{e}");
            assert!(!full.has("test/top1", 1), "a failed value is not held");
            assert_eq!(full.write(2.0, 2, epoch(2)).unwrap(), 0);
        }
    }
}
