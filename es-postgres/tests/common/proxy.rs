//! A TCP proxy to PostgreSQL for tests of answers that never arrive.

use std::sync::{Arc, Mutex};

/// A TCP proxy to PostgreSQL that can hold back what the server sends and
/// cut every connection: an answer lost on its way back.
pub(crate) struct Proxy {
    /// The port it listens on, on 127.0.0.1.
    pub(crate) port: u16,
    hold: tokio::sync::watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1, forwarding to `host:port`.
    pub(crate) async fn start(host: String, port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (hold, held) = tokio::sync::watch::channel(false);
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let local = listener.local_addr().unwrap().port();
        let accept = tokio::spawn({
            let conns = Arc::clone(&conns);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = tokio::net::TcpStream::connect((host.as_str(), port)).await else {
                        continue;
                    };
                    let conn = tokio::spawn(pipe(client, server, held.clone()));
                    conns.lock().unwrap().push(conn);
                }
            }
        });
        Self {
            port: local,
            hold,
            accept,
            conns,
        }
    }

    /// While `on`, what the server sends waits in the proxy.
    pub(crate) fn hold(&self, on: bool) {
        self.hold.send_replace(on);
    }

    /// Breaks every proxied connection (what was held is dropped); new
    /// connections are still accepted.
    pub(crate) fn cut(&self) {
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn pipe(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    mut held: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let up = tokio::io::copy(&mut from_client, &mut to_server);
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = from_server.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            while *held.borrow_and_update() {
                if held.changed().await.is_err() {
                    return Ok(());
                }
            }
            to_client.write_all(&buf[..n]).await?;
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
