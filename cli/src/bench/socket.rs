//! WebSocket clients for the load: each connects from one of the loopback source
//! addresses 127.0.0.2–127.0.0.251, so tens of thousands of connections (and the
//! TIME_WAIT left by closed ones) do not exhaust one address's ~28k ports.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects client number `n` to `edge` at `path_and_query`.
///
/// # Errors
/// When the TCP connection or the handshake fails.
pub async fn connect(edge: SocketAddr, path_and_query: &str, n: usize) -> anyhow::Result<Ws> {
    let source = Ipv4Addr::new(127, 0, 0, 2 + (n % 250) as u8);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let tcp = socket.connect(edge).await?;
    tcp.set_nodelay(true)?;
    let url = format!("ws://{edge}{path_and_query}");
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)).await?;
    Ok(ws)
}

/// Raises this process's open-file limit to its hard limit (the servers it starts
/// inherit it); returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}
