//! `ap reproduce --backend slurm` against a real single-node Slurm that each test starts
//! on this machine (munged, slurmctld, slurmd in a temporary directory, reached through
//! `SLURM_CONF`), and stops again — also when the test panics.
//!
//! What is checked: the smoke grid run through a Slurm job array gives a summary.json
//! equal to a `--backend local` run's; a task killed mid-run shows up in `ap status` with
//! its log, and resubmitting completes the grid with nothing lost; a requeued task
//! (preemption) resumes by itself; a missing `sbatch` is a clear error.
//!
//! Nothing here depends on how fast the machine is: kills and pauses happen at named
//! points of the run (`AP_TEST_ABORT_AT`, `AP_TEST_PAUSE_AT`, see `ap_runs::testpoint`,
//! passed to the tasks through sbatch's environment), and the test waits for states
//! (task states in squeue, lines in the task logs), each wait with a generous limit that
//! fails naming what it waited for.
//!
//! Needs root and Debian's `slurmctld slurmd slurm-client munge` (`.ci/run` installs
//! them); where they are missing the Slurm tests print why they are skipped. With
//! `AP_REQUIRE_SLURM=1` (set by `.ci/run` when the install succeeded) a skip is a failure.

mod common;
use ap_runs::testpoint::{ABORT_VAR, PAUSE_VAR, RELEASE_VAR};
use common::data_dir;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One Slurm cluster at a time: the tests share the machine's CPUs and its hostname.
static SERIAL: Mutex<()> = Mutex::new(());

fn grid() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../grids/smoke.toml")
}

/// Writes past the test harness's capture, so a skip is visible in `cargo test` output.
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Why a real Slurm cannot be started here, if it cannot.
fn cannot_run() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root (slurmd and munged are started as root)".into());
    }
    let missing: Vec<&str> = [
        "munged",
        "slurmctld",
        "slurmd",
        "sbatch",
        "squeue",
        "scontrol",
        "scancel",
    ]
    .into_iter()
    .filter(|b| find(b).is_none())
    .collect();
    if !missing.is_empty() {
        return Some(format!(
            "{} not installed (apt-get install slurmctld slurmd slurm-client munge)",
            missing.join(", ")
        ));
    }
    None
}

/// Returns false (and says why) when the Slurm tests must be skipped here.
fn slurm_available(test: &str) -> bool {
    match cannot_run() {
        None => true,
        Some(why) => {
            ap_testkit::missing_prerequisite(
                test,
                &why,
                "AP_REQUIRE_SLURM",
                ap_testkit::WhenUnset::Skip,
            );
            false
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running single-node Slurm. Dropping it cancels its jobs, then stops the daemons it
/// started (by pid) and removes its directory.
struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    daemons: Vec<(&'static str, Child)>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        // munged insists that every directory above its socket is searchable by all.
        set_mode(&root, 0o755);
        for d in ["munge", "run", "state", "spool", "log"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        set_mode(&root.join("munge"), 0o700);
        let key = root.join("munge/munge.key");
        let mut random = vec![0u8; 1024];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").unwrap(),
            &mut random,
        )
        .unwrap();
        std::fs::write(&key, random).unwrap();
        set_mode(&key, 0o600);
        let mut cluster = Cluster {
            conf: root.join("slurm.conf"),
            dir,
            daemons: vec![],
        };
        let socket = root.join("run/munge.socket");
        cluster.spawn(
            "munged",
            Command::new(find("munged").unwrap())
                .arg("--foreground")
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--key-file={}", key.display()))
                .arg(format!(
                    "--pid-file={}",
                    root.join("run/munged.pid").display()
                ))
                .arg(format!("--seed-file={}", root.join("munge/seed").display()))
                .arg(format!(
                    "--log-file={}",
                    root.join("log/munged.log").display()
                )),
        );
        wait_for(Duration::from_secs(120), "munged's socket", || {
            socket.exists()
        });
        let host = String::from_utf8(Command::new("hostname").arg("-s").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let r = root.display();
        let conf = format!(
            "ClusterName=aptest\n\
             SlurmctldHost={host}(127.0.0.1)\n\
             SlurmctldPort={ctld}\n\
             SlurmdPort={d}\n\
             SlurmUser=root\n\
             SlurmdUser=root\n\
             AuthType=auth/munge\n\
             CredType=cred/munge\n\
             AuthInfo=socket={socket}\n\
             StateSaveLocation={r}/state\n\
             SlurmdSpoolDir={r}/spool\n\
             SlurmctldPidFile={r}/run/slurmctld.pid\n\
             SlurmdPidFile={r}/run/slurmd.pid\n\
             SlurmctldLogFile={r}/log/slurmctld.log\n\
             SlurmdLogFile={r}/log/slurmd.log\n\
             ProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\n\
             JobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\n\
             JobCompType=jobcomp/none\n\
             SelectType=select/cons_tres\n\
             SelectTypeParameters=CR_Core\n\
             MpiDefault=none\n\
             ReturnToService=2\n\
             NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN\n\
             PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
            ctld = free_port(),
            d = free_port(),
            socket = socket.display(),
        );
        std::fs::write(&cluster.conf, conf).unwrap();
        let ctld = find("slurmctld").unwrap();
        let slurmd = find("slurmd").unwrap();
        cluster.spawn("slurmctld", Command::new(ctld).args(["-D", "-i"]));
        let conf = cluster.conf.clone();
        wait_for(Duration::from_secs(120), "slurmctld to answer", || {
            Command::new("scontrol")
                .arg("ping")
                .env("SLURM_CONF", &conf)
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("is UP"))
        });
        cluster.spawn("slurmd", Command::new(slurmd).arg("-D"));
        wait_for(Duration::from_secs(120), "the node to be idle", || {
            Command::new("sinfo")
                .args(["-h", "-o", "%T"])
                .env("SLURM_CONF", &conf)
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
        });
        cluster
    }

    fn spawn(&mut self, name: &'static str, cmd: &mut Command) {
        let log = self.dir.path().join(format!("log/{name}.stderr"));
        let child = cmd
            .env("SLURM_CONF", &self.conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.daemons.push((name, child));
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// The daemons' logs, for failure messages.
    fn logs(&self) -> String {
        let mut s = String::new();
        for name in [
            "slurmctld.log",
            "slurmd.log",
            "slurmctld.stderr",
            "slurmd.stderr",
            "munged.stderr",
        ] {
            let text =
                std::fs::read_to_string(self.dir.path().join("log").join(name)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            s.push_str(&format!("--- {name} (last lines)\n"));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// `(task, state)` of every task of `job` Slurm still knows.
    fn tasks(&self, job: &str) -> Vec<(usize, String)> {
        let o = self
            .cmd("squeue")
            .args(["-h", "-r", "-t", "all", "-o", "%F|%K|%T"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.trim().split('|').collect();
                if f.len() != 3 || f[0] != job {
                    return None;
                }
                Some((f[1].parse().ok()?, f[2].to_string()))
            })
            .collect()
    }

    /// The state of task `task` of `job` (None once Slurm forgot it).
    fn task_state(&self, job: &str, task: usize) -> Option<String> {
        self.tasks(job)
            .into_iter()
            .find(|(t, _)| *t == task)
            .map(|(_, s)| s)
    }

    /// Waits until no task of `job` is pending or running.
    fn wait_job(&self, job: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let tasks = self.tasks(job);
            let active = tasks.iter().any(|(_, s)| {
                matches!(
                    s.as_str(),
                    "PENDING" | "RUNNING" | "COMPLETING" | "CONFIGURING" | "REQUEUED"
                )
            });
            if !tasks.is_empty() && !active {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "job {job} still has tasks after {timeout:?}: {tasks:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Cancel whatever this cluster still runs, so no job step outlives it.
        let _ = self.cmd("scancel").args(["--user", "root"]).output();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let o = self.cmd("squeue").args(["-h", "-o", "%i"]).output();
            if o.map_or(true, |o| {
                !o.status.success() || o.stdout.iter().all(|b| b.is_ascii_whitespace())
            }) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // Stop in reverse order of start: slurmd, slurmctld, munged; TERM first, KILL after 10 s.
        for (_, child) in self.daemons.iter_mut().rev() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn wait_for(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ap(args: &[&str], slurm_conf: Option<&Path>) -> Output {
    ap_env(args, slurm_conf, &[])
}

/// `ap` with these variables set (and no test point unless given here): sbatch passes
/// them on to the job's tasks.
fn ap_env(args: &[&str], slurm_conf: Option<&Path>, env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ap"));
    cmd.args(args)
        .env_remove(ABORT_VAR)
        .env_remove(PAUSE_VAR)
        .env_remove(RELEASE_VAR);
    if let Some(c) = slurm_conf {
        cmd.env("SLURM_CONF", c);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the ap binary runs")
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// `ap reproduce` of the smoke grid with the same thread count as the Slurm tasks.
fn reproduce(runs: &Path, out: &Path, extra: &[&str], conf: Option<&Path>) -> Output {
    reproduce_env(runs, out, extra, conf, &[])
}

fn reproduce_env(
    runs: &Path,
    out: &Path,
    extra: &[&str],
    conf: Option<&Path>,
    env: &[(&str, String)],
) -> Output {
    let (data, grid) = (data_dir(), grid());
    let mut args = common::reproduce_args(&grid, runs, out);
    args.extend(["--data-dir", data.to_str().unwrap(), "--device", "cpu"]);
    args.extend(["--threads", "1"]);
    args.extend_from_slice(extra);
    ap_env(&args, conf, env)
}

/// summary.json of the smoke grid run locally (computed once per test binary).
fn local_summary() -> String {
    static SUMMARY: OnceLock<String> = OnceLock::new();
    SUMMARY
        .get_or_init(|| {
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("out");
            let o = reproduce(&tmp.path().join("runs"), &out, &["--jobs", "2"], None);
            assert_ok(&o, "local ap reproduce");
            std::fs::read_to_string(out.join("summary.json")).unwrap()
        })
        .clone()
}

/// Submits the grid's remaining runs; returns the job id printed on stdout.
fn submit(cluster: &Cluster, runs: &Path, out: &Path) -> String {
    submit_env(cluster, runs, out, &[])
}

/// [`submit`] with these variables passed to the tasks (test points).
fn submit_env(cluster: &Cluster, runs: &Path, out: &Path, env: &[(&str, String)]) -> String {
    let o = reproduce_env(runs, out, &["--backend", "slurm"], Some(&cluster.conf), env);
    assert_ok(&o, "ap reproduce --backend slurm");
    let id = text(&o.stdout).trim().to_string();
    assert!(
        !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()),
        "expected a job id on stdout, got {id:?}; stderr: {}",
        text(&o.stderr)
    );
    id
}

fn job_record(runs: &Path, id: &str) -> serde_json::Value {
    let p = runs.join("slurm").join(format!("{id}.json"));
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

fn status(cluster: &Cluster, runs: &Path) -> String {
    let o = ap(
        &[
            "status",
            "--grid",
            grid().to_str().unwrap(),
            "--runs-dir",
            runs.to_str().unwrap(),
        ],
        Some(&cluster.conf),
    );
    assert_ok(&o, "ap status");
    text(&o.stdout)
}

/// Once every task has ended, `ap reproduce --backend slurm` submits nothing and writes
/// the report; it must equal the local backend's.
fn finish_and_compare(cluster: &Cluster, runs: &Path, out: &Path) {
    let jobs_before = std::fs::read_dir(runs.join("slurm")).unwrap().count();
    let o = reproduce(runs, out, &["--backend", "slurm"], Some(&cluster.conf));
    assert_ok(&o, "ap reproduce --backend slurm after the job");
    assert_eq!(
        std::fs::read_dir(runs.join("slurm")).unwrap().count(),
        jobs_before,
        "nothing should be submitted once every run is done; stderr: {}",
        text(&o.stderr)
    );
    let slurm = std::fs::read_to_string(out.join("summary.json")).unwrap();
    assert_eq!(
        slurm,
        local_summary(),
        "Slurm and local summary.json differ"
    );
    let st = status(cluster, runs);
    assert!(
        st.ends_with("2 runs: 2 done, 0 running, 0 queued, 0 partial, 0 pending, 0 failed\n"),
        "{st}"
    );
}

#[test]
fn smoke_grid_through_a_slurm_job_array_matches_the_local_backend() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !slurm_available("smoke_grid_through_a_slurm_job_array_matches_the_local_backend") {
        return;
    }
    let local = local_summary(); // before the cluster starts: the two would share 2 cores
    let cluster = Cluster::start();
    let tmp = tempfile::tempdir().unwrap();
    let (runs, out) = (tmp.path().join("runs"), tmp.path().join("out"));
    let started = Instant::now();
    // Every task stops at the end of its round 0 training until `release` exists, so the
    // second submission below surely finds them queued or running.
    let release = tmp.path().join("release");
    let id = submit_env(
        &cluster,
        &runs,
        &out,
        &[
            (PAUSE_VAR, "after-epoch:0:0".to_string()),
            (RELEASE_VAR, release.display().to_string()),
        ],
    );
    let record = job_record(&runs, &id);
    assert_eq!(record["runs"].as_array().unwrap().len(), 2, "{record}");
    let script = std::fs::read_to_string(record["script"].as_str().unwrap()).unwrap();
    assert!(
        script.contains("--threads 1") && script.contains("#SBATCH --array=0-1\n"),
        "{script}"
    );
    // Submitting again while the tasks are queued or running (held at their pause point)
    // submits nothing: the runs would otherwise run twice.
    let again = reproduce(&runs, &out, &["--backend", "slurm"], Some(&cluster.conf));
    assert_ok(&again, "second submission");
    let err = text(&again.stderr);
    assert!(
        err.contains(
            "nothing submitted: the remaining runs are already queued or running (2 in job"
        ),
        "{err}"
    );
    assert_eq!(text(&again.stdout), "", "a second job was submitted");
    assert_eq!(
        std::fs::read_dir(runs.join("slurm"))
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json"))
            .count(),
        1
    );
    std::fs::write(&release, "").unwrap();
    cluster.wait_job(&id, Duration::from_secs(600));
    for task in 0..2 {
        let log = std::fs::read_to_string(
            runs.join("slurm/logs")
                .join(format!("slurm-{id}_{task}.err")),
        )
        .unwrap();
        assert!(
            log.contains(&format!("{PAUSE_VAR}: paused at after-epoch:0:0 in "))
                && log.contains(&format!("{PAUSE_VAR}: released at after-epoch:0:0 in ")),
            "task {task} did not pause and go on: {log}"
        );
    }
    say(&format!(
        "slurm smoke grid: job {id} done in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let tasks = cluster.tasks(&id);
    assert!(
        tasks.iter().all(|(_, s)| s == "COMPLETED"),
        "{tasks:?}\n{}",
        cluster.logs()
    );
    finish_and_compare(&cluster, &runs, &out);
    assert_eq!(local, local_summary());
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, start to finish, on a real Slurm
fn a_killed_task_is_reported_and_resubmitting_completes_the_grid() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !slurm_available("a_killed_task_is_reported_and_resubmitting_completes_the_grid") {
        return;
    }
    local_summary();
    let cluster = Cluster::start();
    let tmp = tempfile::tempdir().unwrap();
    let (runs, out) = (tmp.path().join("runs"), tmp.path().join("out"));
    // The run without AP SIGKILLs itself right after its checkpoint of round 1 (no chance
    // to clean up, like a node crash). The run with AP stops right after its checkpoint of
    // round 1 and waits there until the test requeues its task, as preemption does.
    let id = submit_env(
        &cluster,
        &runs,
        &out,
        &[
            (ABORT_VAR, "after-checkpoint:1@imp-".to_string()),
            (PAUSE_VAR, "after-checkpoint:1@imp+ap-".to_string()),
        ],
    );
    let record = job_record(&runs, &id);
    let names: Vec<String> = record["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let task_of = |prefix: &str| names.iter().position(|n| n.starts_with(prefix)).unwrap();
    let (killed, preempted) = (task_of("imp-"), task_of("imp+ap-"));
    let victim = runs.join(&names[killed]);
    let paused = runs.join(&names[preempted]);
    let task_log = |job: &str, task: usize| {
        std::fs::read_to_string(
            runs.join("slurm/logs")
                .join(format!("slurm-{job}_{task}.err")),
        )
        .unwrap_or_default()
    };
    wait_for(
        Duration::from_secs(600),
        "the run with AP to pause after its checkpoint 1",
        || {
            task_log(&id, preempted).contains(&format!(
                "{PAUSE_VAR}: paused at after-checkpoint:1 in {}",
                names[preempted]
            ))
        },
    );
    let o = cluster
        .cmd("scontrol")
        .arg("requeue")
        .arg(format!("{id}_{preempted}"))
        .output()
        .unwrap();
    assert_ok(&o, "scontrol requeue");
    // A requeued task waits (BeginTime) before it may start again: let it start now. It
    // has started again when its log says so. Not within the second of the requeue:
    // slurmd revokes the old credential with second granularity, and a launch in that same
    // second is killed as "Job credential revoked" (seen in CI once in ~7 runs).
    let requeued = Instant::now();
    wait_for(
        Duration::from_secs(600),
        "the requeued task to start again",
        || {
            if requeued.elapsed() < Duration::from_secs(3) {
                return false;
            }
            // Unconditionally: the state squeue shows on the way (REQUEUED, COMPLETING,
            // PENDING) varies; the update fails harmlessly while the task is not pending.
            let _ = cluster
                .cmd("scontrol")
                .args([
                    "update",
                    &format!("JobId={id}_{preempted}"),
                    "StartTime=now",
                ])
                .output();
            task_log(&id, preempted).contains("(restart 1)")
        },
    );
    // Restarted, it must continue after round 1: pausing at checkpoint 1 a second time
    // would mean it started over.
    wait_for(Duration::from_secs(600), "the requeued task to end", || {
        let log = task_log(&id, preempted);
        assert_eq!(
            log.matches(&format!("{PAUSE_VAR}: paused at ")).count(),
            1,
            "the requeued task wrote its checkpoint 1 again instead of resuming:\n{log}"
        );
        !matches!(
            cluster.task_state(&id, preempted).as_deref(),
            Some("PENDING" | "RUNNING" | "COMPLETING" | "CONFIGURING" | "REQUEUED")
        )
    });
    cluster.wait_job(&id, Duration::from_secs(600));
    let tasks = cluster.tasks(&id);
    assert!(
        tasks.contains(&(killed, "FAILED".to_string())),
        "{tasks:?}\n{}",
        task_log(&id, killed)
    );
    assert!(
        tasks.contains(&(preempted, "COMPLETED".to_string())),
        "the requeued task did not finish: {tasks:?}\n{}",
        cluster.logs()
    );
    // The killed run died exactly after its checkpoint 1: rounds 0 and 1 saved, no DONE.
    assert!(
        task_log(&id, killed).contains(&format!("{ABORT_VAR}: killing this process (pid "))
            && task_log(&id, killed)
                .contains(&format!(") at after-checkpoint:1 in {}", names[killed])),
        "{}",
        task_log(&id, killed)
    );
    assert!(
        !victim.join("DONE").exists(),
        "the killed run finished anyway"
    );
    let lines = |p: PathBuf| std::fs::read_to_string(p).unwrap().lines().count();
    assert_eq!(lines(victim.join("rounds.jsonl")), 2);
    assert!(victim.join("checkpoint-1.json").exists());
    // The preempted run continued after its round 1 by itself.
    assert!(paused.join("DONE").exists());
    let resumed = |dir: &Path, name: &str| {
        std::fs::read_to_string(dir.join("log.txt"))
            .unwrap()
            .contains(&format!(
                "resuming {name} after round 1 from its checkpoint"
            ))
    };
    assert!(
        resumed(&paused, &names[preempted]),
        "{}",
        task_log(&id, preempted)
    );
    // Status names the failed task and its log.
    let st = status(&cluster, &runs);
    let line = st.lines().find(|l| l.contains(&names[killed])).unwrap();
    assert!(line.starts_with("failed"), "{st}");
    assert!(line.contains(&format!("slurm-{id}_{killed}.err")), "{st}");
    // Resubmitting runs only the killed run, which continues after its round 1.
    let id2 = submit(&cluster, &runs, &out);
    assert_ne!(id, id2);
    assert_eq!(
        job_record(&runs, &id2)["runs"],
        serde_json::json!([names[killed]])
    );
    cluster.wait_job(&id2, Duration::from_secs(600));
    assert_eq!(
        cluster.tasks(&id2),
        vec![(0, "COMPLETED".to_string())],
        "{}",
        cluster.logs()
    );
    assert!(resumed(&victim, &names[killed]), "{}", task_log(&id2, 0));
    finish_and_compare(&cluster, &runs, &out);
}

#[test]
fn missing_sbatch_is_a_clear_error_that_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let o = Command::new(env!("CARGO_BIN_EXE_ap"))
        .args([
            "reproduce",
            "--grid",
            grid().to_str().unwrap(),
            "--backend",
            "slurm",
            "--runs-dir",
        ])
        .arg(&runs)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .env("PATH", tmp.path()) // an empty directory: no sbatch
        .output()
        .unwrap();
    common::assert_clean_error(
        &o,
        &[
            "--backend slurm",
            "sbatch",
            "install Slurm's client",
            "--backend local",
        ],
    );
    assert!(
        !runs.join("slurm").exists(),
        "nothing should be written without sbatch"
    );
}

#[test]
fn slurm_options_need_the_slurm_backend() {
    let o = ap(
        &[
            "reproduce",
            "--grid",
            grid().to_str().unwrap(),
            "--partition",
            "gpu",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("--partition applies to --backend slurm only"),
        "{}",
        text(&o.stderr)
    );
}
