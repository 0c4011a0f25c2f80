//! A TCP relay between ws-edge and core-svc: it counts the connections the edge
//! makes, and can cut every one of them at once (a broken network path, as the
//! edge sees it: its streams end with a transport error).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    cut: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

/// Relays 127.0.0.1:0 to `target`.
pub async fn spawn_proxy(target: SocketAddr) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy {
        addr: listener.local_addr().unwrap(),
        accepted: Arc::default(),
        cut: Arc::default(),
        stop: CancellationToken::new(),
    };
    let (accepted, cut, stop) = (
        proxy.accepted.clone(),
        proxy.cut.clone(),
        proxy.stop.clone(),
    );
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = tokio::select! {
                () = stop.cancelled() => return,
                conn = listener.accept() => conn.unwrap(),
            };
            accepted.fetch_add(1, Ordering::SeqCst);
            let cut = cut.lock().unwrap().clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(target).await else {
                    return;
                };
                tokio::select! {
                    () = cut.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                }
            });
        }
    });
    proxy
}

impl Proxy {
    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Drops every connection open now; later ones are relayed as before.
    pub fn cut(&self) {
        let mut cut = self.cut.lock().unwrap();
        cut.cancel();
        *cut = CancellationToken::new();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut.lock().unwrap().cancel();
    }
}
