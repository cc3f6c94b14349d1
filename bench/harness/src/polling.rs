//! The load generator's Socket.IO client over HTTP long-polling only (no upgrade), as a
//! browser behind a proxy that blocks websockets would run: one connection for the parked GET,
//! one for POSTs.

use anyhow::{Context, bail};
use hyper::Request;

use crate::http::{Conn, body, get};

pub struct PollingClient {
    get: Conn,
    post: Conn,
    path: String,
}

impl PollingClient {
    pub async fn connect(port: u16) -> anyhow::Result<PollingClient> {
        let mut get_conn = Conn::open(port).await?;
        let (status, open) = get_conn.fetch(get("/socket.io/?EIO=4&transport=polling")).await?;
        let open = String::from_utf8_lossy(&open).into_owned();
        if status != 200 || !open.starts_with('0') {
            bail!("polling handshake: {status} {open:?}");
        }
        let handshake: serde_json::Value = serde_json::from_str(&open[1..]).context("open packet")?;
        let sid = handshake["sid"].as_str().context("open packet without sid")?;
        let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
        let mut client = PollingClient { get: get_conn, post: Conn::open(port).await?, path };
        client.post("40").await?;
        Ok(client)
    }

    async fn post(&mut self, payload: &'static str) -> anyhow::Result<()> {
        let request = Request::post(&self.path).body(body(payload)).context("POST request")?;
        let (status, answer) = self.post.fetch(request).await?;
        if status != 200 {
            bail!("POST answered {status}: {}", String::from_utf8_lossy(&answer));
        }
        Ok(())
    }

    /// Parks a GET until the server has packets; answers pings; returns the Socket.IO events
    /// (the text after `42`). An empty list means the wait ended with nothing for us.
    pub async fn poll(&mut self) -> anyhow::Result<Vec<String>> {
        let (status, payload) = self.get.fetch(get(&self.path)).await?;
        if status != 200 {
            bail!("GET answered {status}: {}", String::from_utf8_lossy(&payload));
        }
        let payload = String::from_utf8_lossy(&payload).into_owned();
        let mut events = Vec::new();
        let mut pinged = false;
        for packet in payload.split('\u{1e}') {
            match packet {
                "2" => pinged = true,
                "1" => bail!("the server closed the session"),
                _ => {
                    if let Some(event) = packet.strip_prefix("42") {
                        events.push(event.to_owned());
                    }
                }
            }
        }
        if pinged {
            self.post("3").await?;
        }
        Ok(events)
    }
}
