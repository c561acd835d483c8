//! Processes that outlive `moor`: pid files, liveness, signals, and finding the binaries.
//!
//! Every member runs detached from the process that started it (Redis and HAProxy daemonize themselves; an
//! app is started through `setsid -f`), so `moor lab up` can exit and a later `moor lab down` (another
//! process) can stop them. The pid file is the truth about which process a member is; a pid counts as this
//! member only while `/proc/<pid>/comm` still names the expected binary (pids are reused) and the process is
//! not a zombie (an orphan whose parent never reaps it, as on machines whose PID 1 is not an init, stays a
//! zombie after it dies).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// The install command for the system packages the lab runs.
pub(crate) const APT_HINT: &str = "apt-get install -y redis-server haproxy";
/// The build command for the app.
pub(crate) const INVENTORY_HINT: &str = "cargo build --release -p inventory";
/// How often a wait polls.
pub(crate) const POLL: Duration = Duration::from_millis(25);

/// A signal the fault-injection primitives send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGKILL: the process dies at once, with no cleanup (a crash, `kill -9`, an OOM kill).
    Kill,
    /// SIGTERM: a graceful stop (what Kubernetes sends a pod it deletes).
    Term,
    /// SIGSTOP: the process freezes (a stalled VM, a long GC pause); it keeps its sockets open.
    Stop,
    /// SIGCONT: a frozen process resumes.
    Cont,
}

impl Signal {
    /// The name `kill -s` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Signal::Kill => "KILL",
            Signal::Term => "TERM",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
        }
    }

    /// Whether the process is expected to exit after this signal.
    pub(crate) fn ends_process(self) -> bool {
        matches!(self, Signal::Kill | Signal::Term)
    }
}

/// The pid in `pidfile`, if the file holds one.
pub(crate) fn read_pid(pidfile: &Path) -> Option<u32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live (not zombie) process whose `comm` is `comm`.
pub(crate) fn alive(pid: u32, comm: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')', since comm may hold parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, None | Some("Z") | Some("X") | Some("x")) {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
}

/// The pid in `pidfile` if that process is alive and runs `comm`.
pub(crate) fn running_pid(pidfile: &Path, comm: &str) -> Option<u32> {
    read_pid(pidfile).filter(|pid| alive(*pid, comm))
}

/// Sends `signal` to `pid` (with `kill -s`, which keeps this crate free of unsafe code).
pub(crate) async fn send(pid: u32, signal: Signal) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("kill")
        .args(["-s", signal.name(), &pid.to_string()])
        .output()
        .await
        .context("running kill")?;
    if !output.status.success() {
        anyhow::bail!(
            "kill -s {} {pid}: {}",
            signal.name(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Waits until `pid` is no longer a live `comm` process; `false` on timeout.
pub(crate) async fn wait_exit(pid: u32, comm: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid, comm) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

/// Stops the `comm` process in `pidfile`, if it runs: SIGTERM, then SIGKILL after `grace`. Returns whether
/// it had to be killed.
pub(crate) async fn stop(pidfile: &Path, comm: &str, grace: Duration) -> anyhow::Result<bool> {
    let Some(pid) = running_pid(pidfile, comm) else {
        return Ok(false);
    };
    // It may exit between the check and the signal: only a process still there is an error.
    if let Err(e) = send(pid, Signal::Term).await
        && alive(pid, comm)
    {
        return Err(e);
    }
    if wait_exit(pid, comm, grace).await {
        return Ok(false);
    }
    send(pid, Signal::Kill).await.ok();
    if !wait_exit(pid, comm, Duration::from_secs(5)).await {
        anyhow::bail!("{comm} (pid {pid}) survived SIGKILL");
    }
    Ok(true)
}

/// Waits until `pidfile` names a live `comm` process (a daemon writes it after forking); on timeout the
/// error carries the tail of `log`.
pub(crate) async fn wait_pidfile(
    pidfile: &Path,
    comm: &str,
    timeout: Duration,
    what: &str,
    log: &Path,
) -> anyhow::Result<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(pid) = running_pid(pidfile, comm) {
            return Ok(pid);
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{what} did not start: no live {comm} in {} after {timeout:?}\n{}",
                pidfile.display(),
                log_tail(log, 20)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The last `lines` lines of `path`, framed for an error message.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    format!(
        "--- last lines of {} ---\n{}",
        path.display(),
        all[all.len().saturating_sub(lines)..].join("\n")
    )
}

/// The first executable file called `name` on `PATH`.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a file with an execute bit.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A system binary the lab needs, or an error naming the install command.
pub(crate) fn system_binary(name: &str) -> anyhow::Result<PathBuf> {
    on_path(name).with_context(|| format!("{name} is not installed (not on PATH): run `{APT_HINT}`"))
}

/// The `inventory` binary: `configured` if given, else next to the current executable (or one directory up,
/// for a test binary in `target/<profile>/deps/`), else on `PATH`.
pub(crate) fn inventory_binary(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = configured {
        if is_executable(path) {
            return std::path::absolute(path).context("resolving the inventory path");
        }
        anyhow::bail!(
            "the inventory binary {} does not exist or is not executable: run `{INVENTORY_HINT}`",
            path.display()
        );
    }
    let exe = std::env::current_exe().ok();
    let beside = exe
        .as_deref()
        .and_then(Path::parent)
        .into_iter()
        .flat_map(|dir| [dir.join("inventory"), dir.join("..").join("inventory")]);
    beside
        .into_iter()
        .find(|p| is_executable(p))
        .map(|p| p.canonicalize().unwrap_or(p))
        .or_else(|| on_path("inventory"))
        .with_context(|| {
            format!(
                "the inventory binary is neither next to {} nor on PATH: run `{INVENTORY_HINT}` (or pass --inventory-bin)",
                exe.as_deref().map_or("moor".into(), |e| e.display().to_string())
            )
        })
}

/// The name `/proc/<pid>/comm` shows for a process running `binary`: its file name, cut to the kernel's 15
/// bytes.
pub(crate) fn comm_of(binary: &Path) -> String {
    let name = binary
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// Whether this process runs with an effective uid of 0 (`tc` on `lo` needs it).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_named() {
        let pid = std::process::id();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert!(alive(pid, comm.trim_end()));
        assert!(!alive(pid, "surely-not-this"));
        assert!(!alive(u32::MAX - 1, "anything"));
    }

    #[test]
    fn comm_is_the_file_name_cut_to_15_bytes() {
        assert_eq!(comm_of(Path::new("/target/debug/inventory")), "inventory");
        assert_eq!(
            comm_of(Path::new("/x/inventory-with-a-long-name")),
            "inventory-with-"
        );
    }

    #[test]
    fn missing_binaries_name_the_fix() {
        let err = inventory_binary(Some(Path::new("/nonexistent/inventory"))).unwrap_err();
        assert!(err.to_string().contains(INVENTORY_HINT), "{err}");
        let err = system_binary("surely-not-a-binary-here").unwrap_err();
        assert!(err.to_string().contains(APT_HINT), "{err}");
        assert!(on_path("sh").is_some());
    }
}
