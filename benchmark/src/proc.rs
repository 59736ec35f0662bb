//! Server processes under test: started as children, read for their addresses, measured through
//! /proc (resident memory, CPU time), optionally pinned to one CPU, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// One server process.
pub struct ServerProcess {
    child: Child,
    /// The address it printed on its `listening on ADDR` line.
    pub addr: String,
    debug: Arc<DebugAddr>,
}

/// The debug listener's address, once the server has printed it.
#[derive(Default)]
struct DebugAddr {
    addr: Mutex<Option<String>>,
    seen: Condvar,
}

impl DebugAddr {
    /// Records `line` if it is `debug listening on ADDR`.
    fn note(&self, line: &str) {
        if let Some(a) = line.strip_prefix("debug listening on ") {
            *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = Some(a.trim().to_string());
            self.seen.notify_all();
        }
    }
}

/// Which CPU to pin a process (or this process) to, if any.
pub fn pin_current_process(cpu: usize) -> anyhow::Result<()> {
    set_affinity(0, cpu).context("pinning the load generator")
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // With pid 0, sched_setaffinity applies to the calling thread only.
    set_affinity(0, cpu)
}

/// Makes the process `cmd` starts run on `cpu` only, with every thread it starts.
pub fn pin_command(cmd: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    // In the child before exec, so that every thread it starts inherits the CPU.
    // SAFETY: sched_setaffinity is async-signal-safe and touches no shared state.
    unsafe {
        cmd.pre_exec(move || set_affinity(0, cpu));
    }
}

fn set_affinity(pid: libc::pid_t, cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl ServerProcess {
    /// Starts `bin` with `args` and `env` added to its environment (which has `RUST_LOG=warn`
    /// unless `env` sets it), its stderr inherited; waits for its `listening on ADDR` line.
    pub fn start(
        bin: &Path,
        args: &[String],
        env: &[(&str, &str)],
        pin: Option<usize>,
    ) -> anyhow::Result<ServerProcess> {
        Self::start_with_stderr(bin, args, env, pin, Stdio::inherit())
    }

    /// [`ServerProcess::start`] with the server's stderr (its log) sent to `stderr`.
    ///
    /// The server's stdout is read line by line up to its `listening on ADDR` line; a
    /// `debug listening on ADDR` line before it (or, read in the background, after it) gives
    /// [`ServerProcess::debug_addr`]. The rest of its stdout is read and dropped in the
    /// background, so that the server never writes to a closed pipe.
    pub fn start_with_stderr(
        bin: &Path,
        args: &[String],
        env: &[(&str, &str)],
        pin: Option<usize>,
        stderr: Stdio,
    ) -> anyhow::Result<ServerProcess> {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(cpu) = pin {
            pin_command(&mut cmd, cpu);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut stdout = BufReader::new(stdout);
        let debug = Arc::new(DebugAddr::default());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            let n = match stdout.read_line(&mut line) {
                Ok(n) => n,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e).context("reading the server's stdout");
                }
            };
            if n == 0 {
                let _ = child.kill();
                let status = child.wait()?;
                bail!(
                    "{} ended ({status}) without printing `listening on ADDR` \
                     (started with {args:?})",
                    bin.display()
                );
            }
            let text = line.trim();
            if let Some(addr) = text.strip_prefix("listening on ") {
                break addr.to_string();
            }
            debug.note(text);
        };
        let background = debug.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            loop {
                line.clear();
                match stdout.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => background.note(line.trim()),
                }
            }
        });
        Ok(ServerProcess { addr, child, debug })
    }

    /// The address of the server's debug listener, from its `debug listening on ADDR` line:
    /// at once when the line came before `listening on`, otherwise waiting at most `wait` for
    /// it. `None` if the server printed no such line.
    pub fn debug_addr(&self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        let mut addr = self.debug.addr.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if addr.is_some() {
                return addr.clone();
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            addr = self
                .debug
                .seen
                .wait_timeout(addr, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The server's process and its children (the workers in process mode).
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn family(&self) -> Vec<u32> {
        let me = self.child.id();
        let mut pids = vec![me];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if stat_fields(pid).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()))
                    == Some(me)
                {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// Resident memory in bytes, of the server and its worker processes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        self.family_status_bytes("VmRSS:")
    }

    /// Resident anonymous memory in bytes (`RssAnon`: heap, stacks; not the pages of the
    /// binary and libraries), of the server and its worker processes. Resident memory minus
    /// this is file pages, such as code first run by the measured work: a fixed cost.
    pub fn rss_anon(&self) -> anyhow::Result<u64> {
        self.family_status_bytes("RssAnon:")
    }

    /// The sum over the server and its workers of a kB figure of `/proc/PID/status`, in bytes.
    /// A worker that just exited counts as nothing; the server itself must answer.
    fn family_status_bytes(&self, key: &str) -> anyhow::Result<u64> {
        let mut total = 0;
        for (i, pid) in self.family().into_iter().enumerate() {
            match status_kb(pid, key) {
                Ok(kb) => total += kb * 1024,
                Err(e) if i == 0 => return Err(e),
                Err(_) => {} // a worker that just exited
            }
        }
        Ok(total)
    }

    /// A reader of the server process's own resident memory (not its workers'), for a thread
    /// that samples it.
    pub fn rss_reader(&self) -> impl Fn() -> anyhow::Result<u64> + Send + 'static {
        let pid = self.child.id();
        move || rss_of(pid)
    }

    /// CPU time used so far (user + system), in seconds, by the server and its worker
    /// processes.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let mut total = 0.0;
        for (i, pid) in self.family().into_iter().enumerate() {
            match cpu_of(pid) {
                Ok(s) => total += s,
                Err(e) if i == 0 => return Err(e),
                Err(_) => {} // a worker that just exited
            }
        }
        Ok(total)
    }
}

/// CPU time used so far (user + system) by process `pid`, in seconds.
pub fn cpu_of(pid: u32) -> anyhow::Result<f64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let fields = stat_fields(pid).with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / ticks)
}

/// The fields of /proc/PID/stat after the command name (which is in parentheses and may
/// contain spaces): state, ppid, ...
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn rss_of(pid: u32) -> anyhow::Result<u64> {
    Ok(status_kb(pid, "VmRSS:")? * 1024)
}

/// The figure of `/proc/PID/status` on the line starting with `key`, in kB.
fn status_kb(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .with_context(|| format!("no {key} line"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb)
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary built next to this one (`cargo build --release -p kim-examples -p kim-benchmark`).
pub fn sibling_bin(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p kim-examples -p kim-benchmark`",
            path.display()
        );
    }
    Ok(path)
}
