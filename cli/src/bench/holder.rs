//! Load processes that hold idle clients for `connections`.
//!
//! A process may have at most 20,000 open files here, so 100,000 clients take
//! several: the scenario starts `logi bench hold` children (hidden), each given a
//! range of client numbers, the edges' address and the secret to mint tokens with
//! (in `LOGI_JWT_SECRET`). A child connects its clients, reads whatever they are
//! sent (so none is closed as a slow reader), and speaks a line protocol:
//!
//! ```text
//! child → parent   ready <connected> <failed> <first failure, or ->
//! parent → child   count
//! child → parent   open <clients still connected> <why others ended, or ->
//! ```
//!
//! The child ends when its stdin closes; the parent kills it if dropped first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use logi::auth::{Role, Signer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::socket;

/// Handshakes in flight per load process.
const CONNECTING: usize = 128;

#[derive(clap::Args)]
pub struct Args {
    /// The edges' address.
    #[arg(long)]
    edge: SocketAddr,
    /// First client number.
    #[arg(long)]
    from: usize,
    /// One past the last client number.
    #[arg(long)]
    to: usize,
}

/// Client `n`'s route and token: a mix of every kind of app.
pub fn path_and_query(signer: &Signer, n: usize) -> String {
    let (path, role, sub) = match n % 20 {
        0..=7 => ("/regular_user/ws/bookings/", Role::User, format!("u{n}")),
        8..=11 => ("/ws", Role::User, format!("u{n}")),
        12..=15 => (
            "/driver/ws/available_bookings/",
            Role::Driver,
            format!("d{n}"),
        ),
        16..=18 => ("/ws", Role::Driver, format!("d{n}")),
        _ => ("/ws", Role::Admin, format!("a{n}")),
    };
    let token = signer
        .mint(&sub, role, Duration::from_secs(3 * 3600))
        .expect("HS256 signs");
    format!("{path}?token={token}")
}

/// The child's side: connects, holds, answers.
///
/// # Errors
/// When `LOGI_JWT_SECRET` is missing or stdout is gone.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let secret = std::env::var("LOGI_JWT_SECRET").context("LOGI_JWT_SECRET is not set")?;
    let signer = Signer::hs256(secret.as_bytes())?;
    let ends = Ends::default();
    // Each client is read from the moment it is connected: connecting the rest
    // takes long enough for the edge's pings to go unanswered otherwise.
    let connected: Vec<anyhow::Result<JoinHandle<()>>> = futures::stream::iter(args.from..args.to)
        .map(|n| {
            let path = path_and_query(&signer, n);
            let ends = ends.clone();
            async move {
                let ws = socket::connect(args.edge, &path, n).await?;
                Ok(tokio::spawn(read_until_closed(ws, ends)))
            }
        })
        .buffer_unordered(CONNECTING)
        .collect()
        .await;
    let failed = connected.iter().filter(|c| c.is_err()).count();
    let first_failure = connected
        .iter()
        .find_map(|c| c.as_ref().err())
        .map_or_else(|| "-".to_owned(), |e| format!("{e:#}").replace('\n', " "));
    let readers: Vec<JoinHandle<()>> = connected.into_iter().filter_map(Result::ok).collect();
    let mut stdout = tokio::io::stdout();
    let ready = format!("ready {} {failed} {first_failure}\n", readers.len());
    stdout.write_all(ready.as_bytes()).await?;
    stdout.flush().await?;
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = commands.next_line().await? {
        if line.trim() == "count" {
            let open = readers.iter().filter(|r| !r.is_finished()).count();
            let ended = ends.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let ended = if ended.is_empty() {
                "-".to_owned()
            } else {
                ended
                    .iter()
                    .map(|(why, n)| format!("{n} {why}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            stdout
                .write_all(format!("open {open} {ended}\n").as_bytes())
                .await?;
            stdout.flush().await?;
        }
    }
    Ok(())
}

/// How many clients ended, by why: `close 1013`, `error`, `end of stream`.
type Ends = Arc<Mutex<BTreeMap<String, usize>>>;

/// Reads a client's frames (answering pings) until it ends; records why.
async fn read_until_closed(mut ws: socket::Ws, ends: Ends) {
    let why = loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => {
                break frame.map_or_else(
                    || "close without code".to_owned(),
                    |f| format!("close {}", u16::from(f.code)),
                );
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => break "error".to_owned(),
            None => break "end of stream".to_owned(),
        }
    };
    *ends
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(why)
        .or_default() += 1;
}

/// The parent's handle on one child; dropping it kills the child.
pub struct Holder {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    pub clients: Range<usize>,
}

/// What a child reported once its clients were connected.
pub struct Ready {
    pub connected: usize,
    pub failed: usize,
    pub first_failure: Option<String>,
}

impl Holder {
    /// Starts a child for `clients`.
    ///
    /// # Errors
    /// When this executable cannot be started again.
    pub fn start(edge: SocketAddr, clients: Range<usize>, secret: &str) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["bench", "--timeout", "6h", "hold", "--edge"])
            .arg(edge.to_string())
            .args(["--from", &clients.start.to_string()])
            .args(["--to", &clients.end.to_string()])
            .env("LOGI_JWT_SECRET", secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a load process")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        Ok(Self {
            child,
            stdin,
            stdout,
            clients,
        })
    }

    async fn line(&mut self, prefix: &str) -> anyhow::Result<String> {
        let Some(line) = self.stdout.next_line().await? else {
            let status = self.child.wait().await?;
            bail!("a load process ended ({status}) before saying {prefix:?}");
        };
        line.strip_prefix(prefix)
            .map(str::to_owned)
            .with_context(|| format!("a load process said {line:?}, not {prefix:?}"))
    }

    /// Waits until the child's clients are connected.
    ///
    /// # Errors
    /// When the child ends or says something else.
    pub async fn ready(&mut self) -> anyhow::Result<Ready> {
        let line = self.line("ready ").await?;
        let mut words = line.splitn(3, ' ');
        let mut number =
            || -> anyhow::Result<usize> { Ok(words.next().context("short ready line")?.parse()?) };
        let (connected, failed) = (number()?, number()?);
        let first_failure = words.next().filter(|w| *w != "-").map(str::to_owned);
        Ok(Ready {
            connected,
            failed,
            first_failure,
        })
    }

    /// How many of the child's clients are still connected, and why the others ended
    /// (`-` when none did).
    ///
    /// # Errors
    /// When the child ends or says something else.
    pub async fn open(&mut self) -> anyhow::Result<(usize, String)> {
        self.stdin.write_all(b"count\n").await?;
        self.stdin.flush().await?;
        let line = self.line("open ").await?;
        let (open, ended) = line.split_once(' ').context("short open line")?;
        Ok((open.parse()?, ended.to_owned()))
    }
}
