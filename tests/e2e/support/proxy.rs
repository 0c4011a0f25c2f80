//! A TCP relay between ws-edge and core-svc (or core-svc and its database): it
//! counts the connections made through it, and can cut every one of them at once
//! (a broken network path, as the client sees it: its streams end with a
//! transport error), or stay down until told otherwise.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    cut: Arc<Mutex<CancellationToken>>,
    down: Arc<AtomicBool>,
    stop: CancellationToken,
}

/// Relays 127.0.0.1:0 to `target`.
pub async fn spawn_proxy(target: SocketAddr) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy {
        addr: listener.local_addr().unwrap(),
        accepted: Arc::default(),
        cut: Arc::default(),
        down: Arc::default(),
        stop: CancellationToken::new(),
    };
    let (accepted, cut, down, stop) = (
        proxy.accepted.clone(),
        proxy.cut.clone(),
        proxy.down.clone(),
        proxy.stop.clone(),
    );
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = tokio::select! {
                () = stop.cancelled() => return,
                conn = listener.accept() => conn.unwrap(),
            };
            accepted.fetch_add(1, Ordering::SeqCst);
            if down.load(Ordering::SeqCst) {
                continue;
            }
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

impl Proxy {
    /// Cuts every connection and refuses new ones (they are closed at once) until
    /// [`Proxy::up`].
    pub fn down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut();
    }

    pub fn up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut.lock().unwrap().cancel();
    }
}
