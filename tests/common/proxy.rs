//! A TCP proxy the test controls, standing in for the network between a client and the
//! server: `cut` resets every connection through it at once (both ends see a reset, as when
//! Wi-Fi drops), and `refuse` turns new connections away until told otherwise.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    links: Mutex<Vec<AbortHandle>>,
    refusing: AtomicBool,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                // A zero linger makes every close a reset: what a vanished network looks like.
                let _ = client.set_zero_linger();
                if state.refusing.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                let _ = server.set_zero_linger();
                let link = tokio::spawn(async move {
                    let (mut client, mut server) = (client, server);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                let mut links = state.links.lock().unwrap();
                links.retain(|l| !l.is_finished());
                links.push(link.abort_handle());
            }
        });
        Proxy { addr, shared, accept }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resets every connection through the proxy.
    pub fn cut(&self) {
        for link in self.shared.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// While on, new connections are reset as soon as they arrive.
    pub fn refuse(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
