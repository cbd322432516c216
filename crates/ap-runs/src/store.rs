//! The run store: one directory per run, named by its spec's hash.
//!
//! ```text
//! <runs>/<method>-<model>-<dataset>-s<seed>-<key>/
//!   spec.toml          resolved spec (every default written out)
//!   provenance.json    git revision, versions, device, time (not part of the key)
//!   rounds.jsonl       one RoundRecord per finished round
//!   metrics.csv        the same, flattened, one row per round
//!   mask.safetensors   the mask of the last finished round (u8 0/1 per weight tensor)
//!   DONE               written last; a run with DONE is never run again
//!   FAILED             training diverged: the reason; the run is skipped until it is deleted
//!   LOCK               held while a process runs it (contains the pid)
//! ```
//! Every file is written to a temporary name and renamed, so an interrupted run never
//! leaves a half-written file, and nothing finished is overwritten.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ap_prune::RoundRecord;
use ap_tensor::tmp_path;

use crate::spec::RunSpec;

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let mut f =
        fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// State of a run in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Finished: DONE exists.
    Done,
    /// Started but not finished (directory exists, no DONE).
    Partial,
    /// Never started.
    Pending,
    /// Stopped for good (training diverged): FAILED holds the reason; delete it to retry.
    Failed,
}

/// A run's directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// The directory.
    pub path: PathBuf,
}

impl RunDir {
    /// The directory of `spec` under `runs`.
    pub fn of(runs: &Path, spec: &RunSpec) -> RunDir {
        RunDir {
            path: runs.join(spec.dir_name()),
        }
    }

    /// Done, partial or pending.
    pub fn state(&self) -> RunState {
        if self.path.join("DONE").exists() {
            RunState::Done
        } else if self.path.join("FAILED").exists() {
            RunState::Failed
        } else if self.path.exists() {
            RunState::Partial
        } else {
            RunState::Pending
        }
    }

    /// Creates the directory and writes the resolved spec. If a spec is already there it
    /// must be the same one (same key), otherwise the store is corrupt and we stop.
    pub fn init(&self, spec: &RunSpec) -> Result<()> {
        fs::create_dir_all(&self.path)
            .with_context(|| format!("cannot create {}", self.path.display()))?;
        let spec_path = self.path.join("spec.toml");
        let text = toml::to_string(spec).context("serialising the spec")?;
        if spec_path.exists() {
            let old: RunSpec = crate::spec::read_toml(&spec_path)?;
            if old.key() != spec.key() {
                bail!(
                    "{} holds a different spec (key {}, expected {}); move it away",
                    spec_path.display(),
                    old.key(),
                    spec.key()
                );
            }
            return Ok(());
        }
        write_atomic(&spec_path, text.as_bytes())
    }

    /// Takes the run's lock; fails if a live process holds it. A lock left by a dead
    /// process is taken over.
    pub fn lock(&self) -> Result<RunLock> {
        let path = self.path.join("LOCK");
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    write!(f, "{}", std::process::id()).ok();
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = fs::read_to_string(&path).unwrap_or_default();
                    let alive = pid
                        .trim()
                        .parse::<u32>()
                        .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
                    if alive {
                        bail!(
                            "{} is being run by process {} (lock {})",
                            self.path.display(),
                            pid.trim(),
                            path.display()
                        );
                    }
                    fs::remove_file(&path).ok();
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()))
                }
            }
        }
        bail!("could not take the lock {}", path.display())
    }

    /// Records of finished rounds (empty when none).
    pub fn rounds(&self) -> Result<Vec<RoundRecord>> {
        let path = self.path.join("rounds.jsonl");
        if !path.exists() {
            return Ok(vec![]);
        }
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        text.lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{}:{}: malformed record", path.display(), i + 1))
            })
            .collect()
    }

    /// Rewrites rounds.jsonl and metrics.csv with `records` (atomically).
    pub fn write_rounds(&self, records: &[RoundRecord]) -> Result<()> {
        let mut jsonl = String::new();
        for r in records {
            jsonl.push_str(&serde_json::to_string(r)?);
            jsonl.push('\n');
        }
        write_atomic(&self.path.join("rounds.jsonl"), jsonl.as_bytes())?;
        write_atomic(
            &self.path.join("metrics.csv"),
            metrics_csv(records).as_bytes(),
        )
    }

    /// Why the run failed, when it did.
    pub fn failure(&self) -> Option<String> {
        fs::read_to_string(self.path.join("FAILED")).ok()
    }

    /// Marks the run finished.
    pub fn mark_done(&self) -> Result<()> {
        write_atomic(&self.path.join("DONE"), b"")
    }
}

/// Holds a run's LOCK file until dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        fs::remove_file(&self.path).ok();
    }
}

/// The header of metrics.csv.
pub const METRICS_HEADER: &str = "round,density,kept,test_accuracy,test_loss,dynamic_dnr,static_dnr,train_dynamic_dnr,train_static_dnr,host_removed,ap_removed,ap_shortfall,regrown,final_train_loss,seconds";

fn metrics_csv(records: &[RoundRecord]) -> String {
    let mut s = String::from(METRICS_HEADER);
    s.push('\n');
    for r in records {
        let sum = |f: fn(&ap_prune::EventReport) -> i64| r.events.iter().map(f).sum::<i64>();
        let (host_removed, ap_removed, ap_shortfall, regrown) = (
            sum(|e| e.host_removed),
            sum(|e| e.ap_removed),
            sum(|e| e.ap_shortfall),
            sum(|e| e.regrown),
        );
        let loss = r.epochs.last().map_or(f64::NAN, |e| e.train_loss);
        s.push_str(&format!(
            "{},{:.6},{},{:.4},{:.5},{:.5},{:.5},{:.5},{:.5},{},{},{},{},{:.5},{:.2}\n",
            r.round,
            r.density.density(),
            r.density.kept,
            r.test.accuracy,
            r.test.loss,
            r.test.dnr.dynamic,
            r.test.dnr.static_,
            r.train_dnr.dynamic,
            r.train_dnr.static_,
            host_removed,
            ap_removed,
            ap_shortfall,
            regrown,
            loss,
            r.seconds
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn lock_is_exclusive_and_stale_locks_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir {
            path: dir.path().to_path_buf(),
        };
        let held = run.lock().unwrap();
        assert!(run
            .lock()
            .unwrap_err()
            .to_string()
            .contains("being run by process"));
        drop(held);
        fs::write(dir.path().join("LOCK"), "4294967").unwrap(); // no such pid
        run.lock().unwrap();
    }
}
