//! The run store: one directory per run, named by its spec's hash.
//!
//! ```text
//! <runs>/<method>-<model>-<dataset>-s<seed>-<key>/
//!   spec.toml                 resolved spec (every default written out)
//!   provenance.json           git revision, versions, device, time (not part of the key)
//!   rounds.jsonl              one RoundRecord per finished round
//!   metrics.csv               the same, flattened, one row per round
//!   mask.safetensors          the mask of the last finished round (u8 0/1 per weight tensor)
//!   checkpoint-<r>.safetensors  model, mask and method state after round r (the last two
//!                             while running, the last one when done: the final network)
//!   checkpoint-<r>.json       its SHA-256 and a copy of rounds 0..=r (with their own SHA-256),
//!                             which repairs rounds.jsonl if that is damaged
//!   log.txt                   the run's log (tracing), appended by every process that ran it
//!   DONE                      written last, holds the SHA-256 of rounds.jsonl; a run with a
//!                             valid DONE is never run again
//!   FAILED                    training diverged: the reason; skipped until it is deleted
//!   LOCK                      held while a process runs it (contains the pid)
//! ```
//! Every file is written to a temporary name and renamed, so an interrupted run never
//! leaves a half-written file, and nothing finished is overwritten. A file that fails its
//! checksum or does not parse is reported with its path and set aside (`.corrupt`); the
//! run continues from its last checkpoint that verifies.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ap_prune::{Checkpoint, Resume, RoundRecord};
use ap_tensor::{load_safetensors, save_safetensors};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::spec::RunSpec;

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename:
/// [`ap_report::write_atomic`]), stopping at the test point `Writing` before the rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    fn name(p: Option<&Path>) -> &str {
        p.and_then(|p| p.file_name()?.to_str()).unwrap_or("")
    }
    ap_report::write_atomic_with(path, bytes, || {
        crate::testpoint::reached(
            name(path.parent()),
            crate::testpoint::Point::Writing(name(Some(path))),
        );
    })
}

/// Errors of the run store that callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another live process (here, or on another host sharing the store) holds the run's
    /// lock: the run is being run, and must not be run twice.
    #[error("{} is being run by process {holder} (lock {}; if that host is gone, delete the lock)", .dir.display(), .dir.join("LOCK").display())]
    Locked {
        /// The run directory.
        dir: PathBuf,
        /// The lock's content: `<pid> <host>` of its holder.
        holder: String,
    },
    /// The lock file could not be created (not because another process holds it).
    #[error("cannot create {}", .path.display())]
    LockFile {
        /// The LOCK file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Stale locks kept reappearing: other processes are taking this lock at this moment.
    #[error("could not take the lock {}", .path.display())]
    LockContended {
        /// The LOCK file.
        path: PathBuf,
    },
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
    /// The finished run in `path` and its spec, for a command that reads a run (`ap
    /// sweep`, `ap export`); the error names the directory and says what to do when it is
    /// not a run directory or the run is not finished. `verb` is the command's (`sweep`).
    pub fn finished(path: &Path, verb: &str) -> Result<(RunDir, RunSpec)> {
        let spec_path = path.join("spec.toml");
        if !spec_path.is_file() {
            bail!(
                "{} is not a run directory (no spec.toml): pass a directory of the run store, \
                 e.g. runs/<method>-<model>-<dataset>-s<seed>-<key>",
                path.display()
            );
        }
        let dir = RunDir {
            path: path.to_path_buf(),
        };
        if dir.state() != RunState::Done {
            bail!(
                "{} is not finished (no valid DONE): finish it with `ap run {}` and {verb} again",
                path.display(),
                spec_path.display()
            );
        }
        Ok((dir, RunSpec::read(&spec_path)?))
    }

    /// The directory of `spec` under `runs`.
    pub fn of(runs: &Path, spec: &RunSpec) -> RunDir {
        RunDir {
            path: runs.join(spec.dir_name()),
        }
    }

    /// Done, partial, pending or failed. A DONE whose checksum no longer matches
    /// rounds.jsonl does not count: [`RunDir::verify_done`] says why.
    pub fn state(&self) -> RunState {
        if self.path.join("DONE").exists() && self.verify_done().is_ok() {
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

    /// Takes the run's lock; fails with [`RunError::Locked`] if a live process holds it. A
    /// lock left by a dead process on this machine is taken over. LOCK holds
    /// `<pid> <host>`: a lock of another host is respected, since its process cannot be
    /// checked from here.
    pub fn lock(&self) -> Result<RunLock, RunError> {
        let path = self.path.join("LOCK");
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    write!(f, "{} {}", std::process::id(), hostname()).ok();
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    if lock_is_live(&holder) {
                        return Err(RunError::Locked {
                            dir: self.path.clone(),
                            holder: holder.trim().to_string(),
                        });
                    }
                    fs::remove_file(&path).ok();
                }
                Err(source) => return Err(RunError::LockFile { path, source }),
            }
        }
        Err(RunError::LockContended { path })
    }

    /// Removes LOCK when the process that wrote it is gone.
    pub fn remove_stale_lock(&self) {
        let path = self.path.join("LOCK");
        if let Ok(holder) = fs::read_to_string(&path) {
            if !lock_is_live(&holder) {
                fs::remove_file(&path).ok();
            }
        }
    }

    /// Records of finished rounds (empty when none); a malformed line is an error naming
    /// the file and line.
    pub fn rounds(&self) -> Result<Vec<RoundRecord>> {
        let (records, bad) = self.valid_rounds()?;
        match bad {
            Some(e) => Err(e),
            None => Ok(records),
        }
    }

    /// The longest prefix of rounds.jsonl that parses, and the error at the first line
    /// that does not (if any).
    fn valid_rounds(&self) -> Result<(Vec<RoundRecord>, Option<anyhow::Error>)> {
        let path = self.path.join("rounds.jsonl");
        if !path.exists() {
            return Ok((vec![], None));
        }
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        let mut out = vec![];
        for (i, l) in text.lines().enumerate() {
            match serde_json::from_str(l) {
                Ok(r) => out.push(r),
                Err(e) => {
                    let err = anyhow::anyhow!(
                        "{}:{}: malformed record ({e}); the run will continue from its last good checkpoint",
                        path.display(),
                        i + 1
                    );
                    return Ok((out, Some(err)));
                }
            }
        }
        Ok((out, None))
    }

    /// Rewrites rounds.jsonl and metrics.csv with `records` (atomically).
    pub fn write_rounds(&self, records: &[RoundRecord]) -> Result<()> {
        write_atomic(
            &self.path.join("rounds.jsonl"),
            records_jsonl(records)?.as_bytes(),
        )?;
        write_atomic(
            &self.path.join("metrics.csv"),
            metrics_csv(records).as_bytes(),
        )
    }

    /// Saves the checkpoint taken after the last of `records`, then its record (checksum
    /// and a copy of the records it was taken with), then drops all but the newest `keep`.
    pub fn write_checkpoint(
        &self,
        records: &[RoundRecord],
        ckpt: &Checkpoint,
        keep: usize,
    ) -> Result<()> {
        let round = records.len() - 1;
        let path = self.checkpoint_path(round);
        save_safetensors(&path, &ckpt.tensors)?;
        let jsonl = records_jsonl(records)?;
        let meta = CheckpointMeta {
            round,
            sha256: sha256_file(&path)?,
            records_sha256: sha256_hex(jsonl.as_bytes()),
            records: jsonl,
        };
        write_atomic(
            &path.with_extension("json"),
            serde_json::to_string(&meta)?.as_bytes(),
        )?;
        self.keep_checkpoints(keep);
        Ok(())
    }

    /// Deletes all but the newest `keep` checkpoints.
    pub fn keep_checkpoints(&self, keep: usize) {
        for old in self.checkpoint_rounds().into_iter().skip(keep) {
            fs::remove_file(self.checkpoint_path(old)).ok();
            fs::remove_file(self.checkpoint_path(old).with_extension("json")).ok();
        }
    }

    fn checkpoint_path(&self, round: usize) -> PathBuf {
        self.path.join(format!("checkpoint-{round}.safetensors"))
    }

    /// Rounds that have a checkpoint file, newest first.
    fn checkpoint_rounds(&self) -> Vec<usize> {
        let mut rounds: Vec<usize> = fs::read_dir(&self.path)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("checkpoint-")?
                    .strip_suffix(".safetensors")?
                    .parse()
                    .ok()
            })
            .collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        rounds
    }

    /// Where to continue this run: the newest checkpoint that verifies, with the records
    /// it was taken with (which also repair a damaged rounds.jsonl). Anything that fails
    /// verification is reported (a warning naming the file) and set aside as `.corrupt`;
    /// `None` means start from round 0.
    pub fn resume_point(&self) -> Result<Option<Resume>> {
        if let (_, Some(e)) = self.valid_rounds()? {
            warn(&e);
        }
        for round in self.checkpoint_rounds() {
            let path = self.checkpoint_path(round);
            match self.verify_checkpoint(round) {
                Ok(records) => {
                    let tensors = load_safetensors(&path, tch::Device::Cpu)?;
                    return Ok(Some(Resume {
                        records,
                        checkpoint: Checkpoint { tensors },
                    }));
                }
                Err(e) => {
                    warn(&e);
                    set_aside(&path);
                    set_aside(&path.with_extension("json"));
                }
            }
        }
        Ok(None)
    }

    /// The newest checkpoint (a finished run's final network and mask), verified against
    /// its checksum; read-only, unlike [`RunDir::resume_point`] nothing is set aside. The
    /// error names the file, or the directory when there is no checkpoint.
    pub fn final_checkpoint(&self) -> Result<Checkpoint> {
        let Some(&round) = self.checkpoint_rounds().first() else {
            bail!(
                "{} holds no checkpoint-<round>.safetensors",
                self.path.display()
            );
        };
        self.verify_checkpoint(round)?;
        let tensors = load_safetensors(&self.checkpoint_path(round), tch::Device::Cpu)?;
        Ok(Checkpoint { tensors })
    }

    /// Rounds a resumed run would not redo (0 when it would start over), for estimates:
    /// reads only the checkpoints' records, not their (possibly large) tensor files.
    pub fn resume_point_rounds(&self) -> Result<usize> {
        for round in self.checkpoint_rounds() {
            if self.checkpoint_records(round).is_ok() {
                return Ok(round + 1);
            }
        }
        Ok(0)
    }

    /// The round records of checkpoint `round` when its record file matches its checksum
    /// and the tensor file matches the checksum recorded there; otherwise an error naming
    /// the bad file.
    fn verify_checkpoint(&self, round: usize) -> Result<Vec<RoundRecord>> {
        let path = self.checkpoint_path(round);
        let (sha256, records) = self.checkpoint_records(round)?;
        if sha256_file(&path)? != sha256 {
            bail!("{}: checksum mismatch, the file is corrupt", path.display());
        }
        Ok(records)
    }

    /// From `checkpoint-<round>.json`: the tensor file's recorded SHA-256 and the round
    /// records, when the file parses and matches its own checksum.
    fn checkpoint_records(&self, round: usize) -> Result<(String, Vec<RoundRecord>)> {
        let meta_path = self.checkpoint_path(round).with_extension("json");
        let meta: CheckpointMeta = fs::read_to_string(&meta_path)
            .map_err(anyhow::Error::from)
            .and_then(|t| Ok(serde_json::from_str(&t)?))
            .with_context(|| {
                format!(
                    "{}: missing or malformed checkpoint record",
                    meta_path.display()
                )
            })?;
        let corrupt = || {
            anyhow::anyhow!(
                "{}: checksum mismatch, the file is corrupt",
                meta_path.display()
            )
        };
        if meta.round != round || sha256_hex(meta.records.as_bytes()) != meta.records_sha256 {
            return Err(corrupt());
        }
        let records: Vec<RoundRecord> = meta
            .records
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .map_err(|_| corrupt())?;
        if records.len() != round + 1 {
            return Err(corrupt());
        }
        Ok((meta.sha256, records))
    }

    /// Removes temporary files that killed processes left here.
    pub fn remove_temporaries(&self) {
        remove_stale_temporaries(&self.path);
    }

    /// Ok when DONE holds the SHA-256 of rounds.jsonl; the error names the file.
    pub fn verify_done(&self) -> Result<()> {
        let done = self.path.join("DONE");
        let want =
            fs::read_to_string(&done).with_context(|| format!("cannot read {}", done.display()))?;
        if want.trim().is_empty() {
            return Ok(()); // written before DONE carried a checksum: nothing to check
        }
        let rounds = self.path.join("rounds.jsonl");
        let have = sha256_file(&rounds)?;
        if want.trim() != have {
            bail!(
                "{}: checksum differs from the one in {}; the file is corrupt and the run will be continued from its last good checkpoint",
                rounds.display(),
                done.display()
            );
        }
        Ok(())
    }

    /// A DONE run whose records fail verification: report it and clear DONE so the run
    /// continues from its last good checkpoint.
    pub fn reopen_if_corrupt(&self) -> bool {
        if !self.path.join("DONE").exists() {
            return false;
        }
        match self.verify_done() {
            Ok(()) => false,
            Err(e) => {
                warn(&e);
                set_aside(&self.path.join("DONE"));
                true
            }
        }
    }

    /// Why the run failed, when it did.
    pub fn failure(&self) -> Option<String> {
        fs::read_to_string(self.path.join("FAILED")).ok()
    }

    /// Marks the run finished, recording the checksum of its records.
    pub fn mark_done(&self) -> Result<()> {
        let sum = sha256_file(&self.path.join("rounds.jsonl"))?;
        write_atomic(&self.path.join("DONE"), format!("{sum}\n").as_bytes())
    }
}

/// True while process `pid` of this machine runs (a zombie — killed, not yet reaped —
/// does not count).
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: `pid (comm) S ...`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// This machine's host name (for locks on a store that several nodes share).
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Whether a LOCK's content (`<pid> [<host>]`) names a live holder: a live process here,
/// or any process of another host.
fn lock_is_live(holder: &str) -> bool {
    let mut parts = holder.split_whitespace();
    let Some(Ok(pid)) = parts.next().map(str::parse::<u32>) else {
        return false; // empty or garbled: the writer died before finishing it
    };
    match parts.next() {
        Some(host) if host != hostname() => true,
        _ => process_alive(pid),
    }
}

/// Removes the temporary files of atomic writes (`<name>.tmp-<pid>`) in `dir` whose
/// process is gone; those of live processes (a concurrent writer) stay.
pub fn remove_stale_temporaries(dir: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, pid)) = name.rsplit_once(".tmp-") else {
            continue;
        };
        if !pid.parse::<u32>().is_ok_and(process_alive) {
            fs::remove_file(e.path()).ok();
        }
    }
}

/// What `checkpoint-<r>.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointMeta {
    round: usize,
    /// Of the safetensors file.
    sha256: String,
    /// Of `records` (this file's own check).
    records_sha256: String,
    /// The records of rounds 0..=round, as the JSON lines of rounds.jsonl.
    records: String,
}

/// Reports damage found in the store (through `tracing`: the `ap` program shows warnings
/// on stderr and in the run's log).
fn warn(e: &anyhow::Error) {
    tracing::warn!("{e:#}");
}

fn records_jsonl(records: &[RoundRecord]) -> Result<String> {
    let mut jsonl = String::new();
    for r in records {
        jsonl.push_str(&serde_json::to_string(r)?);
        jsonl.push('\n');
    }
    Ok(jsonl)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(sha256_hex(&bytes))
}

/// Renames a bad file to `<name>.corrupt` (kept for inspection, never read again).
fn set_aside(path: &Path) {
    if path.exists() {
        let mut s = path.as_os_str().to_owned();
        s.push(".corrupt");
        fs::rename(path, PathBuf::from(s)).ok();
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
    fn lock_is_exclusive_and_stale_locks_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir {
            path: dir.path().to_path_buf(),
        };
        let held = run.lock().unwrap();
        let err = run.lock().unwrap_err();
        assert!(err.to_string().contains("being run by process"), "{err}");
        match err {
            RunError::Locked { dir, holder } => {
                assert_eq!(dir, run.path);
                assert_eq!(holder, format!("{} {}", std::process::id(), hostname()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(held);
        fs::write(dir.path().join("LOCK"), "4294967").unwrap(); // no such pid
        drop(run.lock().unwrap());
        // Another host's lock cannot be checked from here, so it holds.
        fs::write(dir.path().join("LOCK"), "4294967 some-other-node").unwrap();
        assert!(
            matches!(run.lock(), Err(RunError::Locked { holder, .. }) if holder == "4294967 some-other-node")
        );
        run.remove_stale_lock();
        assert!(dir.path().join("LOCK").exists());
        fs::write(dir.path().join("LOCK"), format!("4294967 {}", hostname())).unwrap();
        run.remove_stale_lock();
        assert!(!dir.path().join("LOCK").exists());
        assert!(process_alive(std::process::id()));
    }
}
