//! `floor`: the least a relay of driver pings to riders can do, as one process:
//! accept WebSockets, parse each ping a driver sends, render the rider's
//! `location_update` frame, write it to the rider's socket. No auth, no gRPC, no
//! database; the pairing comes in the URL (`pair=<trip>`, which the load adds for
//! every system). `location-fanout --floor` runs against it, so our figures can be
//! read against what a relay with nothing else to do reaches on the same box.
//!
//! Riders (`/regular_user/...`) get a bounded queue of 256 frames, written in
//! batches with one flush each, and a ping for a rider whose queue is full is
//! dropped (counted as lost by the load), as any relay must bound its queues.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Frames waiting for one rider at most.
const QUEUE: usize = 256;

#[derive(clap::Args)]
pub struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

type Riders = Arc<Mutex<HashMap<u64, mpsc::Sender<Utf8Bytes>>>>;

#[derive(Deserialize)]
struct Ping<'a> {
    current_latitude: &'a str,
    current_longitude: &'a str,
}

/// Serves until killed.
///
/// # Errors
/// When the address cannot be bound.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    // The line `logi bench` waits for, as it does for the servers'.
    eprintln!("floor ready addr={}", listener.local_addr()?);
    let riders: Riders = Arc::default();
    loop {
        let (tcp, _) = listener.accept().await?;
        let riders = riders.clone();
        tokio::spawn(async move {
            let _ = serve(tcp, riders).await;
        });
    }
}

fn pair(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("pair="))?
        .parse()
        .ok()
}

async fn serve(tcp: TcpStream, riders: Riders) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    let mut target = None;
    // The callback's error type is tungstenite's, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
        target = Some(req.uri().clone());
        Ok(resp)
    })
    .await?;
    let uri = target.ok_or_else(|| anyhow::anyhow!("no request"))?;
    let pair = pair(uri.query()).ok_or_else(|| anyhow::anyhow!("no pair= in the URL"))?;
    let (mut sink, mut stream) = ws.split();
    if uri.path().starts_with("/regular_user") {
        let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(QUEUE);
        riders.lock().expect("not poisoned").insert(pair, tx);
        loop {
            tokio::select! {
                frame = rx.recv() => {
                    let Some(frame) = frame else { break };
                    sink.feed(Message::Text(frame)).await?;
                    while let Ok(more) = rx.try_recv() {
                        sink.feed(Message::Text(more)).await?;
                    }
                    sink.flush().await?;
                }
                message = stream.next() => match message {
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        riders.lock().expect("not poisoned").remove(&pair);
        return Ok(());
    }
    while let Some(message) = stream.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        let Ok(ping) = serde_json::from_str::<Ping>(&text) else {
            continue;
        };
        let frame = format!(
            r#"{{"type":"location_update","driver_id":{pair},"current_latitude":"{}","current_longitude":"{}","status":"on_trip"}}"#,
            ping.current_latitude, ping.current_longitude
        );
        let rider = riders.lock().expect("not poisoned").get(&pair).cloned();
        if let Some(rider) = rider {
            let _ = rider.try_send(frame.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pair_comes_from_the_query() {
        assert_eq!(pair(Some("token=x.y.z&pair=17")), Some(17));
        assert_eq!(pair(Some("token=x")), None);
        assert_eq!(pair(None), None);
    }
}
