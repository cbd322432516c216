//! Installs libtorch as the pip `torch` package into a private python virtualenv.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

use crate::paths::{self, Paths, LIBTORCH_MARKER, TORCH_VERSION};
use crate::util::{find_in_path, run_streamed, step};

/// Makes sure a libtorch is available and returns its directory (the value for `LIBTORCH`).
///
/// A usable `$LIBTORCH` is respected as is; otherwise `torch==TORCH_VERSION` is pip-installed
/// into the venv (once: a stamp file marks a verified install, a lock file keeps concurrent
/// setups from installing at the same time).
pub fn ensure_libtorch(paths: &Paths) -> Result<PathBuf> {
    if let Some(dir) = &paths.user_libtorch {
        step!(
            "libtorch: using LIBTORCH={} (from the environment)",
            dir.display()
        );
        return Ok(dir.clone());
    }
    if let Some(v) = paths::process_env("LIBTORCH") {
        step!("libtorch: ignoring LIBTORCH={v}: {v}/lib does not exist");
    }
    if let Some(dir) = paths::installed_torch_dir(paths) {
        step!("libtorch: ok ({})", dir.display());
        return Ok(dir);
    }
    check_python()?;
    let _lock = Lock::acquire(&paths.lock_path())?;
    // Another setup may have finished while we waited for the lock.
    if let Some(dir) = paths::installed_torch_dir(paths) {
        step!("libtorch: ok ({})", dir.display());
        return Ok(dir);
    }
    let venv = &paths.torch_venv;
    let python = venv.join("bin").join("python");
    if !python.exists() {
        step!("libtorch: creating python venv {}", venv.display());
        run_streamed(Command::new("python3").arg("-m").arg("venv").arg(venv)).context(
            "creating the python venv failed; python3 with the venv module (and ensurepip) \
             is required: apt-get install python3-venv",
        )?;
    }
    step!(
        "libtorch: pip install torch=={TORCH_VERSION} into {} (large download, this takes a while)",
        venv.display()
    );
    run_streamed(
        Command::new(&python)
            .args(["-m", "pip", "install", "--progress-bar", "on"])
            .arg(format!("torch=={TORCH_VERSION}")),
    )
    .context("installing torch with pip failed")?;
    let dir = paths::find_torch_dir(venv).with_context(|| {
        format!(
            "pip finished but no {}/lib/python3*/site-packages/torch was found",
            venv.display()
        )
    })?;
    let marker = dir.join("lib").join(LIBTORCH_MARKER);
    if !marker.is_file() {
        bail!("pip finished but {} is missing", marker.display());
    }
    write_stamp(&paths.stamp_path())?;
    step!("libtorch: installed ({})", dir.display());
    Ok(dir)
}

/// Checks that `python3` exists and has the `venv` module.
fn check_python() -> Result<()> {
    const HINT: &str = "python3 with the venv module is required: apt-get install python3-venv \
                        (or set LIBTORCH to an unpacked libtorch)";
    if find_in_path("python3").is_none() {
        bail!("python3 was not found on PATH; {HINT}");
    }
    let ok = Command::new("python3")
        .args(["-m", "venv", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!("`python3 -m venv --help` failed; {HINT}");
    }
    Ok(())
}

fn write_stamp(stamp: &Path) -> Result<()> {
    let tmp = stamp.with_extension("tmp");
    std::fs::write(&tmp, format!("{TORCH_VERSION}\n"))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, stamp).with_context(|| format!("writing {}", stamp.display()))
}

/// An exclusive lock file holding the owner's process id; removed when dropped.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

/// A lock file without a readable pid older than this is considered stale.
const UNREADABLE_LOCK_GRACE: Duration = Duration::from_secs(10);

impl Lock {
    /// Takes the lock at `path`, waiting while a live process holds it and removing stale
    /// locks (dead owner).
    pub fn acquire(path: &Path) -> Result<Lock> {
        Lock::acquire_with(path, Duration::from_secs(2), &mut || {})
    }

    /// [`Lock::acquire`], checking every `poll`; `on_wait` runs each time a live owner
    /// makes it wait (tests observe the waiting through it).
    fn acquire_with(path: &Path, poll: Duration, on_wait: &mut dyn FnMut()) -> Result<Lock> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut last_msg: Option<Instant> = None;
        loop {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut f) => {
                    let lock = Lock {
                        path: path.to_path_buf(),
                    };
                    writeln!(f, "{}", std::process::id())
                        .with_context(|| format!("writing {}", path.display()))?;
                    return Ok(lock);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("creating lock {}", path.display()))
                }
            }
            let owner = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            let stale = match owner {
                Some(pid) => pid == std::process::id() || !pid_alive(pid),
                None => age(path).is_some_and(|a| a > UNREADABLE_LOCK_GRACE),
            };
            if stale {
                step!("removing stale lock {}", path.display());
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("removing stale lock {}", path.display()))
                    }
                }
                continue;
            }
            if last_msg.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                step!(
                    "waiting for another setup (pid {}) to finish installing torch (lock {})",
                    owner.map_or_else(|| "?".to_string(), |p| p.to_string()),
                    path.display()
                );
                last_msg = Some(Instant::now());
            }
            on_wait();
            std::thread::sleep(poll);
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn age(path: &Path) -> Option<Duration> {
    let m = std::fs::metadata(path).ok()?.modified().ok()?;
    SystemTime::now().duration_since(m).ok()
}

/// Whether a process with this id exists.
fn pid_alive(pid: u32) -> bool {
    if Path::new("/proc/self").exists() {
        return Path::new(&format!("/proc/{pid}")).exists();
    }
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_released() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("venv.lock");
        {
            let _l = Lock::acquire(&path).unwrap();
            let pid: u32 = std::fs::read_to_string(&path)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert_eq!(pid, std::process::id());
        }
        assert!(!path.exists());
    }

    #[test]
    fn stale_lock_of_dead_process_is_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("venv.lock");
        let mut child = Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        std::fs::write(&path, format!("{dead}\n")).unwrap();
        let _l = Lock::acquire_with(&path, Duration::from_millis(10), &mut || {
            panic!("a dead owner's lock is taken over, not waited for")
        })
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
    }

    /// A live owner's lock is waited for, and taken only once the owner is gone. Proven
    /// by order, not by time: the waiter reports that it waits while the owner lives, and
    /// takes the lock only after the test has ended the owner.
    #[test]
    fn live_lock_is_waited_for() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{mpsc, Arc};
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("venv.lock");
        let mut owner = Command::new("sleep").arg("1000").spawn().unwrap();
        std::fs::write(&path, format!("{}\n", owner.id())).unwrap();
        let owner_gone = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (p2, gone) = (path.clone(), owner_gone.clone());
        let t = std::thread::spawn(move || {
            let waiting = tx.clone();
            let mut told = false;
            let _l = Lock::acquire_with(&p2, Duration::from_millis(10), &mut || {
                if !told {
                    waiting.send("waiting").unwrap();
                    told = true;
                }
            })
            .unwrap();
            tx.send(if gone.load(Ordering::SeqCst) {
                "taken after the owner ended"
            } else {
                "taken while the owner lived"
            })
            .unwrap();
        });
        // Generous limits: reached only when the waiter is stuck, never on a slow machine.
        let next = || {
            rx.recv_timeout(Duration::from_secs(120))
                .expect("the waiter is stuck")
        };
        assert_eq!(next(), "waiting");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            owner.id().to_string(),
            "the owner's lock file is untouched while it lives"
        );
        // The owner ends, leaving its lock file behind: it becomes stale and is taken over.
        owner_gone.store(true, Ordering::SeqCst);
        owner.kill().unwrap();
        owner.wait().unwrap();
        assert_eq!(next(), "taken after the owner ended");
        t.join().unwrap();
        assert!(!path.exists(), "released when dropped");
    }

    #[test]
    fn stamp_written_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let stamp = tmp.path().join(crate::paths::STAMP_FILE);
        write_stamp(&stamp).unwrap();
        assert_eq!(
            std::fs::read_to_string(&stamp).unwrap().trim(),
            TORCH_VERSION
        );
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
