//! Running external commands and describing what they did.

use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::{Error, IoContext, Result};

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The output, or an error carrying stderr when the command failed.
    pub fn ok(self) -> Result<Self> {
        if self.success() {
            Ok(self)
        } else {
            Err(Error::CommandFailed {
                command: self.command,
                status: self.status,
                stderr: self.stderr,
            })
        }
    }
}

/// Runs `command` to completion, feeding it `stdin` (or nothing), and captures its output.
pub async fn run(mut command: Command, stdin: Option<&[u8]>) -> Result<CommandOutput> {
    let description = describe(&command);
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .context(|| format!("cannot start `{description}`"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .await
            .context(|| format!("cannot write to stdin of `{description}`"))?;
        // Dropping the pipe closes it, so the command sees end of input.
        drop(pipe);
    }
    let output = child
        .wait_with_output()
        .await
        .context(|| format!("cannot wait for `{description}`"))?;
    Ok(CommandOutput {
        command: description,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// `program arg arg ...`, for messages.
fn describe(command: &Command) -> String {
    let std = command.as_std();
    std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `lines` lines of a log file, for error messages (empty when unreadable).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Where [`free_port`] picks: below Linux's default ephemeral range (32768–60999), from which
/// every outgoing connection takes its local port.
const FREE_PORTS: std::ops::Range<u16> = 20000..32768;

/// A TCP port on 127.0.0.1 that nothing listens on right now, never the same twice in one process.
///
/// The port is released before the caller's server binds it. Picked at random below the
/// ephemeral range, so that no outgoing connection (the tests make thousands) takes it in
/// between, as one did with ports the kernel picked.
pub fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const SPAN: usize = (FREE_PORTS.end - FREE_PORTS.start) as usize;
    static HANDED_OUT: [AtomicBool; SPAN] = [const { AtomicBool::new(false) }; SPAN];
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    for _ in 0..1000 {
        let draw = DRAWS.fetch_add(1, Ordering::Relaxed);
        let random =
            std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), (draw, std::process::id()));
        let offset = (random % SPAN as u64) as usize;
        if HANDED_OUT[offset].swap(true, Ordering::Relaxed) {
            continue;
        }
        let port = FREE_PORTS.start + offset as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Io {
        context: format!("no free port on 127.0.0.1 in {FREE_PORTS:?} after 1000 tries"),
        source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
    })
}

/// A command for `program` that the kernel kills (SIGKILL) when the thread that started it dies,
/// through `setpriv --pdeathsig` where it is installed: a test stopped without running destructors
/// (a signal, a timeout) then leaves no process behind.
pub fn command_dying_with_parent(program: &Path) -> Command {
    let mut argv = dying_with_parent(program).into_iter();
    let mut command = Command::new(argv.next().unwrap_or_else(|| program.as_os_str().to_owned()));
    command.args(argv);
    command
}

/// Like [`command_dying_with_parent`], with `resolv_conf` in place of `/etc/resolv.conf` for the
/// program, as a container has its own: it runs in a mount namespace of its own where that file
/// is bind-mounted over the host's (`unshare`, which needs CAP_SYS_ADMIN).
pub fn command_dying_with_parent_resolving(program: &Path, resolv_conf: &Path) -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
        .arg(resolv_conf)
        .args(dying_with_parent(program));
    command
}

/// `setpriv --pdeathsig SIGKILL -- program` where `setpriv` is installed, else `program`.
fn dying_with_parent(program: &Path) -> Vec<std::ffi::OsString> {
    static SETPRIV: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let mut argv = Vec::new();
    if let Some(setpriv) = SETPRIV.get_or_init(|| find_in_path("setpriv")) {
        argv.push(setpriv.clone().into_os_string());
        argv.extend(["--pdeathsig", "SIGKILL", "--"].map(Into::into));
    }
    argv.push(program.as_os_str().to_owned());
    argv
}

/// The first `program` on `PATH`.
fn find_in_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
