//! The README's "A whole trip with grpcurl", run with the real `grpcurl` against a
//! core-svc of its own on a fresh database, so the README cannot drift from the
//! server.
//!
//! Each `grpcurl` command of the section runs as `sh` runs it pasted, with two
//! changes: `localhost:50051` is this test's server, and the token variables are
//! in its environment, minted with the test's secret as the section's `export`
//! lines say. `<the 6 digits>` is the OTP, which the reader copies, as the section
//! says, from the `otp` of the `GetBooking` answer before it. The `Subscribe`
//! command runs beside the others, as in another terminal: the next command waits
//! until it printed its `streamHead`, and at the end the rider's events on it are
//! checked. Every other command must exit 0 within [`PATIENCE`], and print what
//! the section shows after it, if anything, field by field but for [`PER_RUN`].

use std::path::Path;
use std::process::Stdio;

use logi::auth::{Role, Signer};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::support::readme::{self, Output, Step};
use crate::support::*;

const SECTION: &str = "A whole trip with grpcurl";
/// The server address the README's commands use.
const README_ADDR: &str = "localhost:50051";
const OTP_PLACEHOLDER: &str = "<the 6 digits>";
/// Values that differ in every run: the README shows an example, the test checks
/// only that the field is there (and, for `otp`, that it is six digits).
const PER_RUN: &[&str] = &["createdAt", "updatedAt", "pickupTime", "dropoffTime", "otp"];

#[tokio::test]
async fn the_readme_walkthrough_runs_as_written() {
    let Some(grpcurl) = tools::find("grpcurl", "the README grpcurl walkthrough test") else {
        return;
    };
    let markdown = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme::section(&markdown, SECTION)
        .unwrap_or_else(|| panic!("README.md has no \"## {SECTION}\""));
    let walkthrough = readme::walkthrough(section).unwrap_or_else(|e| panic!("README.md: {e}"));
    for shown in [
        "list",
        "grpc.health.v1.Health/Check",
        "BookingService/GetBooking",
    ] {
        assert!(
            walkthrough
                .steps
                .iter()
                .any(|s| s.command.ends_with(shown) && s.output.is_some()),
            "the section shows what `grpcurl … {shown}` prints: {walkthrough:#?}"
        );
    }

    let db = Db::sqlite();
    let core = spawn_core(&db, &[]).await;
    let signer = Signer::hs256(SECRET.as_bytes()).unwrap();
    let mut env: Vec<(String, String)> = walkthrough
        .tokens
        .iter()
        .map(|t| {
            let role = Role::parse(&t.role).unwrap_or_else(|e| panic!("{t:?}: {e}"));
            let ttl = humantime::parse_duration(&t.ttl).unwrap_or_else(|e| panic!("{t:?}: {e}"));
            (t.var.clone(), signer.mint(&t.sub, role, ttl).unwrap())
        })
        .collect();
    let mut path =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect::<Vec<_>>();
    path.insert(0, grpcurl.parent().unwrap().to_owned());
    env.push((
        "PATH".into(),
        std::env::join_paths(path).unwrap().into_string().unwrap(),
    ));
    let shell = |command: &str| {
        let mut child = Command::new("sh");
        child
            .arg("-c")
            .arg(command)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        child
    };

    let mut otp: Option<String> = None;
    let mut rider_stream: Option<Stream> = None;
    for Step { command, output } in &walkthrough.steps {
        assert!(
            command.contains(README_ADDR),
            "`{command}` is not for {README_ADDR}"
        );
        let mut run = command.replace(README_ADDR, &core.addr.to_string());
        if run.contains(OTP_PLACEHOLDER) {
            let otp = otp.as_deref().unwrap_or_else(|| {
                panic!("`{command}` needs the OTP, and no GetBooking before it showed one")
            });
            run = run.replace(OTP_PLACEHOLDER, otp);
        }

        if command.ends_with("EventService/Subscribe") {
            let mut stream = Stream::spawn(shell(&run), command);
            // As a reader waits for the other terminal to show it is listening.
            let head = stream.next().await;
            assert_eq!(
                kind(&head),
                "streamHead",
                "`{command}` starts with its head: {head:#}"
            );
            rider_stream = Some(stream);
            continue;
        }

        let done = tokio::time::timeout(PATIENCE, shell(&run).output())
            .await
            .unwrap_or_else(|_| panic!("`{command}` did not finish within {PATIENCE:?}"))
            .unwrap();
        let stdout = String::from_utf8(done.stdout).unwrap();
        assert!(
            done.status.success(),
            "`{command}` failed ({}):\n{stdout}{}",
            done.status,
            String::from_utf8_lossy(&done.stderr)
        );
        match output {
            Some(Output::Text(shown)) => {
                assert_eq!(stdout.trim(), shown, "what `{command}` printed");
            }
            Some(Output::Json(shown)) => {
                let real = json(&stdout, command);
                let mut wrong = Vec::new();
                differences(shown, &real, "", &mut wrong);
                assert!(
                    wrong.is_empty(),
                    "`{command}` printed\n{real:#}\nnot what README.md shows:\n{}",
                    wrong.join("\n")
                );
            }
            None => {
                json(&stdout, command);
            }
        }
        if command.ends_with("BookingService/GetBooking") {
            otp = json(&stdout, command)["otp"].as_str().map(str::to_owned);
        }
    }

    // What the rider's terminal showed meanwhile.
    let mut stream = rider_stream.expect("the section has the rider's Subscribe");
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("bookingChanged BOOKING_STATUS_COMPLETED") {
        let event = stream.next().await;
        if kind(&event) == "otpIssued" {
            assert_eq!(
                event["otpIssued"]["otp"].as_str(),
                otp.as_deref(),
                "the OTP on the topic is GetBooking's: {event:#}"
            );
        }
        seen.push(summary(&event));
    }
    assert_eq!(
        seen,
        [
            "bookingChanged BOOKING_STATUS_PENDING",
            "bookingChanged BOOKING_STATUS_ACCEPTED",
            "otpIssued",
            "bookingChanged BOOKING_STATUS_ON_TRIP",
            "bookingChanged BOOKING_STATUS_COMPLETED",
        ]
    );
    drop(stream);
    core.stop().await;
}

/// A command that streams until it is stopped, its printed JSON objects read as
/// they come.
struct Stream {
    /// As the README has it.
    command: String,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Stream {
    fn spawn(mut shell: Command, command: &str) -> Self {
        let mut child = shell.spawn().unwrap_or_else(|e| panic!("`{command}`: {e}"));
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            command: command.to_owned(),
            child,
            stdout,
        }
    }

    /// The next object printed (grpcurl closes each with a `}` line of its own).
    async fn next(&mut self) -> Value {
        let command = &self.command;
        let mut text = String::new();
        loop {
            let line = tokio::time::timeout(PATIENCE, self.stdout.next_line())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "`{command}` printed nothing more within {PATIENCE:?} (without \
                         `\"heads\": true` it prints nothing before the first event); \
                         so far: {text}"
                    )
                })
                .unwrap();
            let Some(line) = line else {
                let mut stderr = String::new();
                let _ = self
                    .child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .await;
                panic!("`{command}` ended: {stderr}");
            };
            text.push_str(&line);
            text.push('\n');
            if line == "}" {
                return json(&text, command);
            }
        }
    }
}

fn json(printed: &str, command: &str) -> Value {
    serde_json::from_str(printed)
        .unwrap_or_else(|e| panic!("`{command}` printed no JSON ({e}):\n{printed}"))
}

/// The event's kind: its one field besides topic, cursor and time.
fn kind(event: &Value) -> &str {
    event
        .as_object()
        .and_then(|o| {
            o.keys()
                .find(|k| !["topic", "cursor", "occurredAt"].contains(&k.as_str()))
        })
        .map_or("", String::as_str)
}

fn summary(event: &Value) -> String {
    match event["bookingChanged"]["booking"]["status"].as_str() {
        Some(status) => format!("{} {status}", kind(event)),
        None => kind(event).to_owned(),
    }
}

/// Where `real` differs from what the README `shown`, one line each.
fn differences(shown: &Value, real: &Value, path: &str, out: &mut Vec<String>) {
    let (Value::Object(shown), Value::Object(real)) = (shown, real) else {
        if shown != real {
            out.push(format!(
                "{path}: README shows {shown}, grpcurl printed {real}"
            ));
        }
        return;
    };
    for (key, value) in shown {
        let at = format!("{path}.{key}");
        match real.get(key) {
            None => out.push(format!(
                "{at}: README shows {value}, grpcurl printed nothing"
            )),
            Some(real) if PER_RUN.contains(&key.as_str()) => {
                if !real.is_string() || (key == "otp" && !real.as_str().is_some_and(is_otp)) {
                    out.push(format!("{at}: grpcurl printed {real}"));
                }
            }
            Some(real) => differences(value, real, &at, out),
        }
    }
    for (key, value) in real {
        if !shown.contains_key(key) {
            out.push(format!(
                "{path}.{key}: README shows nothing, grpcurl printed {value}"
            ));
        }
    }
}

fn is_otp(s: &str) -> bool {
    s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit())
}

#[test]
fn differences_name_each_field_but_per_run_values() {
    let shown = serde_json::json!({"id": "1", "otp": "321184", "createdAt": "x", "pickup": {"latitude": 1.0}, "gone": 1});
    let real = serde_json::json!({"id": "2", "otp": "12345", "createdAt": "y", "pickup": {"latitude": 1.5}, "extra": true});
    let mut out = Vec::new();
    differences(&shown, &real, "", &mut out);
    assert_eq!(
        out,
        [
            ".id: README shows \"1\", grpcurl printed \"2\"",
            ".otp: grpcurl printed \"12345\"",
            ".pickup.latitude: README shows 1.0, grpcurl printed 1.5",
            ".gone: README shows 1, grpcurl printed nothing",
            ".extra: README shows nothing, grpcurl printed true",
        ]
    );
}
