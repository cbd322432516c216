//! Reports of pruning experiments, from their summary records alone: `summary.json` and
//! `summary.csv` (one [`SummaryRecord`] per run × round), SVG plots per model × dataset
//! ([`plot`]) and `report.md` with one table per method next to the papers' numbers
//! ([`reference`](mod@reference)).
//!
//! The crate knows nothing of specs, run stores or libtorch: `ap-runs` turns finished runs
//! into [`SummaryRecord`]s (`ap_runs::summarise`) and hands them here.

pub mod plot;
pub mod reference;
pub mod report;
pub mod setting;

pub use report::{markdown, markdown_with_plots, write_report, SummaryRecord};

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically: to `<path>.tmp-<pid>` (the run store's naming of
/// temporaries, so `ap_runs::store::remove_stale_temporaries` clears what a killed writer
/// left), synced, then renamed over `path`. A reader sees the old file or the new one.
/// The one home of atomic writes: the run store writes its files through it too.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, || {})
}

/// [`write_atomic`], calling `before_rename` once the temporary is written and synced,
/// just before it is renamed over `path` (where the run store's crash tests stop a
/// writer).
pub fn write_atomic_with(path: &Path, bytes: &[u8], before_rename: impl FnOnce()) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    before_rename();
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.md");
        write_atomic(&p, b"first, longer text").unwrap();
        // Before the rename, the new bytes are complete in the temporary and `p` is old.
        let tmp = dir
            .path()
            .join(format!("report.md.tmp-{}", std::process::id()));
        let mut seen = None;
        write_atomic_with(&p, b"second", || {
            seen = Some((std::fs::read(&tmp).unwrap(), std::fs::read(&p).unwrap()));
        })
        .unwrap();
        assert_eq!(
            seen,
            Some((b"second".to_vec(), b"first, longer text".to_vec()))
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(write_atomic(&dir.path().join("no/such/dir/f"), b"x").is_err());
    }
}
