//! Configuration: every flag also reads the environment variable beside it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use logi::jwt_args::JwtArgs;

#[derive(Debug, Clone, Parser)]
#[command(name = "ws-edge", version, about = "Logi realtime WebSocket edge")]
pub struct Config {
    /// Address to serve WebSockets, /healthz and /readyz on.
    #[arg(long, env = "LOGI_WS_ADDR", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Bind with SO_REUSEPORT, so several ws-edge processes can share the port (the
    /// kernel spreads new connections over them).
    #[arg(long, env = "LOGI_WS_REUSE_PORT")]
    pub reuse_port: bool,

    /// core-svc's gRPC URL, or a comma-separated list of replicas that share one
    /// database: the attachments are spread over them, and a stream whose replica
    /// fails moves to the next one in the list, resuming from its cursors.
    #[arg(
        long,
        env = "LOGI_CORE_URL",
        default_value = "http://127.0.0.1:50051",
        value_delimiter = ','
    )]
    pub core_url: Vec<String>,

    #[command(flatten)]
    pub jwt: JwtArgs,

    /// A `service` token for core-svc. Needed with LOGI_JWT_PUBLIC_KEY; with
    /// LOGI_JWT_SECRET the edge mints its own.
    #[arg(long, env = "LOGI_CORE_TOKEN", hide_env_values = true)]
    pub core_token: Option<String>,

    /// A file holding the `service` token, read again when it changes (rotation
    /// without a restart). Instead of LOGI_CORE_TOKEN.
    #[arg(long, env = "LOGI_CORE_TOKEN_FILE")]
    pub core_token_file: Option<std::path::PathBuf>,

    /// How long a client may take to send a complete upgrade request; slower ones
    /// are disconnected.
    #[arg(long, env = "LOGI_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// Largest request head (request line and headers) in bytes; larger ones are
    /// answered 431.
    #[arg(long, env = "LOGI_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Open client connections at most; more are answered 503 with Retry-After.
    /// 0: nine tenths of the open-file limit.
    #[arg(long, env = "LOGI_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// WebSockets one principal may hold open at once on this edge; one more is
    /// answered 429.
    #[arg(long, env = "LOGI_MAX_CONNECTIONS_PER_PRINCIPAL", default_value_t = 8)]
    pub max_connections_per_principal: usize,

    /// Time between server pings; a client that answers none of two is closed.
    #[arg(long, env = "LOGI_PING_INTERVAL", default_value = "20s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// Largest inbound frame in bytes; larger ones close the connection with 1009.
    #[arg(long, env = "LOGI_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

    /// Kernel send buffer of each client socket in bytes (SO_SNDBUF; the kernel
    /// doubles it for its bookkeeping). It bounds what a client that stops reading
    /// holds in the kernel before its outbox fills and it is closed with 1013. 0:
    /// the kernel sizes it, up to 4 MiB on Linux.
    #[arg(long, env = "LOGI_WS_SEND_BUFFER", default_value_t = 64 * 1024)]
    pub send_buffer: u32,

    /// Frames queued per connection; a client that falls further behind is closed with 1013.
    #[arg(long, env = "LOGI_OUTBOUND_QUEUE", default_value_t = 256)]
    pub outbound_queue: usize,

    /// Attach streams to core-svc, each on a connection of its own (to each replica
    /// it uses; attachment i starts on replica i mod n); every topic the edge's
    /// apps read goes over one of them (1 to 64).
    #[arg(long, env = "LOGI_ATTACHMENTS", default_value_t = 2)]
    pub attachments: usize,

    /// How long a core-svc outage is bridged before clients are closed with 1012.
    #[arg(long, env = "LOGI_UPSTREAM_OUTAGE_LIMIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub upstream_outage_limit: Duration,

    /// How long shutdown waits for connections to close.
    #[arg(long, env = "LOGI_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl Config {
    /// The SO_SNDBUF to set on client sockets, if any.
    pub fn socket_send_buffer(&self) -> Option<u32> {
        (self.send_buffer != 0).then_some(self.send_buffer)
    }

    /// Checks what clap cannot; the message is one line naming the setting.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), String> {
        self.jwt.verifier()?;
        if self.core_token.is_some() && self.core_token_file.is_some() {
            return Err("set LOGI_CORE_TOKEN or LOGI_CORE_TOKEN_FILE, not both".into());
        }
        if self.jwt.jwt_secret.is_none()
            && self.core_token.is_none()
            && self.core_token_file.is_none()
        {
            return Err("LOGI_CORE_TOKEN or LOGI_CORE_TOKEN_FILE is required with LOGI_JWT_PUBLIC_KEY: a service token for core-svc".into());
        }
        if let Some(path) = &self.core_token_file {
            crate::upstream::read_token_file(path)?;
        }
        if self.handshake_timeout.is_zero() {
            return Err("LOGI_HANDSHAKE_TIMEOUT must be more than 0".into());
        }
        // hyper's own floor for its read buffer.
        if self.max_header_bytes < 8192 {
            return Err("LOGI_MAX_HEADER_BYTES must be at least 8192".into());
        }
        if self.max_connections_per_principal == 0 {
            return Err("LOGI_MAX_CONNECTIONS_PER_PRINCIPAL must be at least 1".into());
        }
        crate::upstream::endpoints(&self.core_url)?;
        if self.ping_interval.is_zero() {
            return Err("LOGI_PING_INTERVAL must be more than 0".into());
        }
        if self.max_frame_bytes < 1024 {
            return Err("LOGI_MAX_FRAME_BYTES must be at least 1024".into());
        }
        if self.send_buffer != 0 && self.send_buffer < 4096 {
            return Err(
                "LOGI_WS_SEND_BUFFER must be 0 (the kernel decides) or at least 4096 (bytes)"
                    .into(),
            );
        }
        if self.outbound_queue == 0 {
            return Err("LOGI_OUTBOUND_QUEUE must be at least 1".into());
        }
        if !(1..=64).contains(&self.attachments) {
            return Err(format!(
                "LOGI_ATTACHMENTS must be from 1 to 64, got {}",
                self.attachments
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("ws-edge").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_and_refusals() {
        let c = parse(&["--jwt-secret", "0123456789abcdef0123456789abcdef"]);
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.core_url, ["http://127.0.0.1:50051"]);
        assert_eq!(
            (c.ping_interval, c.max_frame_bytes, c.upstream_outage_limit),
            (Duration::from_secs(20), 65536, Duration::from_secs(30))
        );
        assert_eq!(c.validate(), Ok(()));
        assert!(
            parse(&[])
                .validate()
                .unwrap_err()
                .contains("LOGI_JWT_SECRET")
        );
        let core_url = |list: &str| {
            parse(&[
                "--jwt-secret",
                "0123456789abcdef0123456789abcdef",
                "--core-url",
                list,
            ])
        };
        assert_eq!(
            core_url("localhost:1").validate().unwrap_err(),
            r#"LOGI_CORE_URL "localhost:1" must start with http:// or https://"#
        );
        // A list of replicas: every entry is checked, the bad one named.
        let replicas = core_url("http://a:50051,http://b:50051");
        assert_eq!(replicas.core_url, ["http://a:50051", "http://b:50051"]);
        assert_eq!(replicas.validate(), Ok(()));
        assert_eq!(
            core_url("http://a:50051,b:50051").validate().unwrap_err(),
            r#"LOGI_CORE_URL "b:50051" must start with http:// or https://"#
        );
        assert_eq!(c.socket_send_buffer(), Some(65536));
        let kernel = parse(&[
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
            "--send-buffer",
            "0",
        ]);
        assert_eq!(kernel.socket_send_buffer(), None, "0: the kernel sizes it");
        let tiny = parse(&[
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
            "--send-buffer",
            "100",
        ]);
        assert!(tiny.validate().unwrap_err().contains("LOGI_WS_SEND_BUFFER"));
    }
}
