//! Small helpers: progress logging, tool lookup, child processes, scratch directories.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use anyhow::{bail, Context, Result};

/// Prints a progress line to stderr, prefixed with `[setup]`.
macro_rules! step {
    ($($arg:tt)*) => {
        eprintln!("[setup] {}", format_args!($($arg)*))
    };
}
pub(crate) use step;

/// Finds an executable named `name` on `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Describes a command for messages: program and arguments separated by spaces.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with its stdout and stderr both streamed to our stderr (so stdout stays
/// clean); fails when it cannot start or exits unsuccessfully.
pub fn run_streamed(cmd: &mut Command) -> Result<()> {
    let what = describe(cmd);
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("starting `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` capturing its output, then echoes the output to our stderr.
/// Fails only when the command cannot start; the caller inspects the status.
pub fn run_captured(cmd: &mut Command) -> Result<Output> {
    let what = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting `{what}`"))?;
    for stream in [&out.stdout, &out.stderr] {
        for line in String::from_utf8_lossy(stream).lines() {
            eprintln!("        {line}");
        }
    }
    Ok(out)
}

/// Whether we run as root (`id -u` prints 0).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The exit code to pass on for a child's status (128 + signal when it was killed).
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// A scratch directory `<cache root>/tmp-<pid>`, removed when dropped.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates a fresh `<parent>/tmp-<pid>` (clearing a leftover of the same name).
    pub fn new(parent: &Path) -> Result<ScratchDir> {
        let path = parent.join(format!("tmp-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_dir_is_removed_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let p = {
            let s = ScratchDir::new(tmp.path()).unwrap();
            std::fs::write(s.path().join("x"), b"1").unwrap();
            assert!(s.path().ends_with(format!("tmp-{}", std::process::id())));
            s.path().to_path_buf()
        };
        assert!(!p.exists());
    }

    #[test]
    fn finds_sh_on_path() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("definitely-not-a-real-tool-xyz").is_none());
    }

    #[test]
    fn exit_codes() {
        let ok = Command::new("sh").args(["-c", "exit 0"]).status().unwrap();
        let three = Command::new("sh").args(["-c", "exit 3"]).status().unwrap();
        assert_eq!(exit_code(ok), 0);
        assert_eq!(exit_code(three), 3);
    }
}
