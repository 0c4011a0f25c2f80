//! The system under test: core-svc and ws-edge started as child processes from the
//! release binaries beside this one, on loopback, with a temporary database (a
//! SQLite file, or a scratch PostgreSQL database that several replicas share over
//! NATS: see [`Layout`]) and a fresh secret.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use core_svc::store::postgres::scratch::ScratchDatabase;
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

/// What the servers of a run are: the database, how many core-svc replicas, and
/// which replica the edges attach to. One per run, set before the first
/// [`System::start`].
#[derive(Debug, Clone)]
pub struct Layout {
    /// A PostgreSQL server to make a scratch database on; SQLite when None.
    pub postgres: Option<String>,
    /// core-svc replicas (more than one needs PostgreSQL; they talk over NATS).
    pub replicas: usize,
    pub nats: String,
    /// The edges attach to the last replica only and the load's gRPC calls go to
    /// the first, so that every event crosses from one replica to another.
    pub cross: bool,
}

static LAYOUT: OnceLock<Layout> = OnceLock::new();

/// Sets the run's layout.
///
/// # Errors
/// When it makes no sense (replicas without PostgreSQL).
pub fn lay_out(layout: Layout) -> anyhow::Result<()> {
    if layout.replicas == 0 || (layout.replicas > 1 && layout.postgres.is_none()) {
        bail!("--replicas above 1 needs --store postgres (replicas share its database)");
    }
    if layout.cross && layout.replicas < 2 {
        bail!("--cross-replica needs --replicas 2 or more");
    }
    let _ = LAYOUT.set(layout);
    Ok(())
}

fn layout() -> Layout {
    LAYOUT.get().cloned().unwrap_or(Layout {
        postgres: None,
        replicas: 1,
        nats: String::new(),
        cross: false,
    })
}

/// Fields drop in order: the servers stop before their database is removed.
pub struct System {
    /// The first core-svc replica (the only one, unless the layout says more).
    pub core: Proc,
    /// The other replicas.
    pub replicas: Vec<Proc>,
    pub edges: Vec<Proc>,
    pub signer: Signer,
    /// The HS256 secret, for load processes that mint their own tokens.
    pub secret: String,
    _dir: tempfile::TempDir,
    _scratch: Option<ScratchDatabase>,
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
    pub async fn start(
        edges: usize,
        core_args: &[&str],
        edge_args: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_with(edges, core_args, edge_args, &[]).await
    }

    /// Like [`System::start`], with environment variables for core-svc: settings
    /// that older builds (benchmarked side by side) do not have are ignored there,
    /// where a flag would stop them from starting.
    ///
    /// # Errors
    /// When a binary is missing or does not become ready.
    pub async fn start_with(
        edges: usize,
        core_args: &[&str],
        edge_args: &[&str],
        core_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let layout = layout();
        let dir = tempfile::tempdir()?;
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let scratch = match &layout.postgres {
            Some(admin) => Some(ScratchDatabase::create(admin).await?),
            None => None,
        };
        let db = scratch.as_ref().map_or_else(
            || dir.path().join("bench.db").to_string_lossy().into_owned(),
            |s| s.url().to_owned(),
        );
        let mut cores: Vec<Proc> = Vec::new();
        for i in 0..layout.replicas {
            let mut args: Vec<String> = vec![
                "--grpc-addr".into(),
                "127.0.0.1:0".into(),
                // Metrics on, as in production, on a port of their own.
                "--metrics-addr".into(),
                "127.0.0.1:0".into(),
                "--database".into(),
                db.clone(),
            ];
            if layout.replicas > 1 {
                args.extend(["--nats-url".into(), layout.nats.clone()]);
            }
            args.extend(core_args.iter().map(|s| s.to_string()));
            let name = if layout.replicas > 1 {
                format!("core-svc-{i}")
            } else {
                "core-svc".into()
            };
            cores.push(spawn(name, &binary("core-svc")?, &args, &secret, core_env)?);
        }
        let attached: Vec<String> = if layout.cross {
            cores
                .last()
                .into_iter()
                .map(|c| format!("http://{}", c.addr))
                .collect()
        } else {
            cores.iter().map(|c| format!("http://{}", c.addr)).collect()
        };
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
                attached.join(","),
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
        let core = cores.remove(0);
        Ok(Self {
            _dir: dir,
            _scratch: scratch,
            core,
            replicas: cores,
            edges: started,
            signer: Signer::hs256(secret.as_bytes())?,
            secret,
        })
    }

    /// Where the load's gRPC calls of worker `i` go: spread over the replicas, or
    /// all to the first when the edges attach to the last.
    pub fn grpc(&self, i: usize) -> SocketAddr {
        if layout().cross || self.replicas.is_empty() {
            return self.core.addr;
        }
        let all: Vec<&Proc> = std::iter::once(&self.core).chain(&self.replicas).collect();
        all[i % all.len()].addr
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
            _scratch: None,
            core: floor,
            replicas: Vec::new(),
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

    /// Every server process as [`System::usage`] reports them: core-svc first (the
    /// first replica standing for all), then each edge.
    pub fn procs(&self) -> impl Iterator<Item = &Proc> {
        std::iter::once(&self.core).chain(&self.edges)
    }

    /// The usage of every server process: core-svc first (every replica's added
    /// up), then each edge.
    ///
    /// # Errors
    /// When one of them is gone.
    pub fn usage(&self) -> anyhow::Result<Vec<Usage>> {
        let mut core = self.core.usage()?;
        for replica in &self.replicas {
            let u = replica.usage()?;
            core.cpu_secs += u.cpu_secs;
            core.rss_bytes += u.rss_bytes;
        }
        let mut all = vec![core];
        for edge in &self.edges {
            all.push(edge.usage()?);
        }
        Ok(all)
    }

    /// The address of the edges (one port, however many share it), or the floor's.
    pub fn edge(&self) -> SocketAddr {
        self.edges.first().unwrap_or(&self.core).addr
    }
}
