//! Listener: the OpenSVC notification port (`listener_addr`:`listener_port`); only the bytes
//! [`NOTIFICATION`] are accepted, and they only ask for a dequeue.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::Event;
use crate::config::NodeConfig;

/// The OpenSVC notification.
pub const NOTIFICATION: &[u8] = b"dequeue_actions";

/// Reads one notification: only the exact bytes `dequeue_actions` (then EOF) are accepted.
async fn read_notification(sock: &mut tokio::net::TcpStream) -> Result<(), String> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 64];
    let read = async {
        loop {
            let n = sock.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok::<(), String>(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > NOTIFICATION.len() {
                return Err("longer than a notification".to_string());
            }
            if buf.ends_with(b"\0") {
                return Ok(());
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(2), read).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("{e}: {:?}", String::from_utf8_lossy(&buf))),
        // A client that keeps the connection open after the message is fine.
        Err(_) if buf == NOTIFICATION => {}
        Err(_) => {
            return Err(format!(
                "timed out after {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
    }
    if buf == NOTIFICATION {
        Ok(())
    } else {
        Err(format!(
            "unexpected message {:?}",
            String::from_utf8_lossy(&buf)
        ))
    }
}

pub(super) async fn listen(listener: tokio::net::TcpListener, tx: mpsc::UnboundedSender<Event>) {
    loop {
        let (mut sock, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            match read_notification(&mut sock).await {
                Ok(()) => {
                    tracing::info!(peer = %peer, "listener: dequeue_actions notification");
                    let _ = tx.send(Event::Notified);
                }
                Err(e) => {
                    tracing::warn!(peer = %peer, "listener: rejected a malformed notification: {e}")
                }
            }
        });
    }
}

pub(super) fn listener_addr(cfg: &NodeConfig) -> anyhow::Result<Option<SocketAddr>> {
    let listen = cfg
        .table
        .get("daemon")
        .and_then(|t| t.get("listen"))
        .map(|v| v.as_bool().unwrap_or(true))
        .unwrap_or(true);
    if !listen {
        return Ok(None);
    }
    let addr = cfg
        .table
        .get("listener_addr")
        .and_then(|v| v.as_str())
        .unwrap_or("127.0.0.1");
    let ip: std::net::IpAddr = addr.parse().with_context(|| {
        format!(
            "{}: listener_addr: {addr:?} is not an IP address",
            cfg.path.display()
        )
    })?;
    Ok(Some(SocketAddr::new(ip, cfg.listener_port())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `bytes` to a fresh loopback listener, closes, and returns what the reader says.
    fn notify(bytes: &'static [u8]) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let client = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(bytes).await.unwrap();
                s.shutdown().await.unwrap();
            });
            let (mut sock, _) = l.accept().await.unwrap();
            let r = read_notification(&mut sock).await;
            client.await.unwrap();
            r
        })
    }

    #[test]
    fn only_the_exact_notification_is_accepted() {
        assert_eq!(notify(b"dequeue_actions"), Ok(()));
        let e = notify(b"dequeue_actionsX").unwrap_err();
        assert!(e.contains("longer than a notification"), "{e}");
        let e = notify(b"hello").unwrap_err();
        assert!(
            e.contains("unexpected message") && e.contains("hello"),
            "{e}"
        );
        let e = notify(b"").unwrap_err();
        assert!(e.contains("unexpected message"), "{e}");
    }

    #[test]
    fn listener_address_defaults_can_be_disabled_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let cfg = NodeConfig::load(&path).unwrap();
        assert_eq!(
            listener_addr(&cfg).unwrap(),
            Some(SocketAddr::from((
                [127, 0, 0, 1],
                tenet_rulesets::api::DEFAULT_LISTENER_PORT
            )))
        );
        std::fs::write(&path, "[daemon]\nlisten = false\n").unwrap();
        assert_eq!(
            listener_addr(&NodeConfig::load(&path).unwrap()).unwrap(),
            None
        );
        std::fs::write(&path, "listener_addr = \"nowhere\"\n").unwrap();
        let e = format!(
            "{:#}",
            listener_addr(&NodeConfig::load(&path).unwrap()).unwrap_err()
        );
        assert!(
            e.contains("node.toml") && e.contains("listener_addr") && e.contains("nowhere"),
            "{e}"
        );
    }
}
