//! The system under test: core-svc and ws-edge started as child processes from the
//! release binaries beside this one, on loopback, with a temporary database and a
//! fresh secret.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use logi::auth::{Role, Signer};

use super::procfs::{self, Usage};

/// How long a process may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A server process; dropping it stops it (SIGTERM, then SIGKILL after 10 s), so no
/// early return or error leaves one running.
pub struct Proc {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// # Errors
    /// When the process is gone: a crash must not pass for an idle server.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        procfs::usage(self.pid()).with_context(|| format!("{} is no longer running", self.name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fields drop in order: the servers stop before their folder is removed.
pub struct System {
    pub core: Proc,
    pub edges: Vec<Proc>,
    pub signer: Signer,
    /// The HS256 secret, for load processes that mint their own tokens.
    pub secret: String,
    _dir: tempfile::TempDir,
}

fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let here = std::env::current_exe()?;
    let path = here
        .parent()
        .map(|d| d.join(name))
        .unwrap_or_else(|| PathBuf::from(name));
    if !path.exists() {
        bail!(
            "{} not found: build the servers first with `cargo build --release --bins`",
            path.display()
        );
    }
    Ok(path)
}

/// Starts `bin` and waits for the log line `ready_marker`, whose `addr=` it returns.
fn spawn(
    name: String,
    bin: &Path,
    args: &[String],
    secret: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<Proc> {
    let child = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .env("LOGI_JWT_SECRET", secret)
        // Only the start-up lines: per-call logs would cost the servers CPU we measure.
        .env(
            "RUST_LOG",
            "warn,core_svc::server=info,ws_edge::server=info",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut proc = Proc {
        name,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        child,
    };
    let stderr = proc.child.stderr.take().context("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let label = proc.name.clone();
    std::thread::spawn(move || {
        // Keeps draining stderr for the life of the process, so it never blocks on it.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(" ready ") {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .map(str::to_owned);
                let _ = tx.send(addr);
            } else if line.contains("ERROR") || line.contains("WARN") {
                eprintln!("  [{label}] {line}");
            }
        }
    });
    // On any error below, `proc` is dropped and the process stopped.
    proc.addr = rx
        .recv_timeout(READY_TIMEOUT)
        .ok()
        .flatten()
        .with_context(|| format!("{} did not say it was ready", proc.name))?
        .parse()?;
    Ok(proc)
}

impl System {
    /// Starts core-svc and `edges` ws-edge processes with extra flags.
    ///
    /// # Errors
    /// When a binary is missing or does not become ready.
    pub fn start(edges: usize, core_args: &[&str], edge_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(edges, core_args, edge_args, &[])
    }

    /// Like [`System::start`], with environment variables for core-svc: settings
    /// that older builds (benchmarked side by side) do not have are ignored there,
    /// where a flag would stop them from starting.
    ///
    /// # Errors
    /// When a binary is missing or does not become ready.
    pub fn start_with(
        edges: usize,
        core_args: &[&str],
        edge_args: &[&str],
        core_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let db = dir.path().join("bench.db").to_string_lossy().into_owned();
        let mut args: Vec<String> = vec![
            "--grpc-addr".into(),
            "127.0.0.1:0".into(),
            "--database".into(),
            db,
        ];
        args.extend(core_args.iter().map(|s| s.to_string()));
        let core = spawn(
            "core-svc".into(),
            &binary("core-svc")?,
            &args,
            &secret,
            core_env,
        )?;
        let mut started: Vec<Proc> = Vec::new();
        for i in 0..edges.max(1) {
            // Several edges share one port (SO_REUSEPORT), the kernel spreading
            // connections over them, as they would be deployed on one box.
            let listen = started
                .first()
                .map_or_else(|| "127.0.0.1:0".to_owned(), |first| first.addr.to_string());
            let mut args: Vec<String> = vec![
                "--listen".into(),
                listen,
                "--core-url".into(),
                format!("http://{}", core.addr),
            ];
            if edges > 1 {
                args.push("--reuse-port".into());
            }
            args.extend(edge_args.iter().map(|s| s.to_string()));
            started.push(spawn(
                format!("ws-edge-{i}"),
                &binary("ws-edge")?,
                &args,
                &secret,
                &[],
            )?);
        }
        Ok(Self {
            _dir: dir,
            core,
            edges: started,
            signer: Signer::hs256(secret.as_bytes())?,
            secret,
        })
    }

    /// Starts the floor relay (see [`super::floor`]) in place of the system: one
    /// process, which [`System::usage`] reports alone.
    ///
    /// # Errors
    /// When it does not become ready.
    pub fn floor() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let secret = "floor-relay-checks-no-token-000000".to_owned();
        let args = ["bench".to_owned(), "floor".to_owned()];
        let floor = spawn(
            "floor".into(),
            &std::env::current_exe()?,
            &args,
            &secret,
            &[],
        )?;
        Ok(Self {
            _dir: dir,
            core: floor,
            edges: Vec::new(),
            signer: Signer::hs256(secret.as_bytes())?,
            secret,
        })
    }

    pub fn token(&self, role: Role, sub: &str) -> String {
        self.signer
            .mint(sub, role, Duration::from_secs(3 * 3600))
            .expect("HS256 signs")
    }

    /// Every server process, core first.
    pub fn procs(&self) -> impl Iterator<Item = &Proc> {
        std::iter::once(&self.core).chain(&self.edges)
    }

    /// The usage of every server process, core first.
    ///
    /// # Errors
    /// When one of them is gone.
    pub fn usage(&self) -> anyhow::Result<Vec<Usage>> {
        self.procs().map(Proc::usage).collect()
    }

    /// The address of the edges (one port, however many share it), or the floor's.
    pub fn edge(&self) -> SocketAddr {
        self.edges.first().unwrap_or(&self.core).addr
    }
}
