//! The load generator's Socket.IO client over a websocket: just enough of Engine.IO v4 and
//! Socket.IO v5 to connect to namespace `/`, answer pings, emit, and read events and acks,
//! with small buffers so one process holds tens of thousands of them.

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A Socket.IO packet from the server that the scenarios care about.
#[derive(Debug)]
pub enum Incoming {
    /// `42[...]`: the text after the packet type.
    Event(String),
    /// `43<id>[...]`: the id and the answer after it.
    Ack(u64, String),
}

pub struct Client {
    ws: WebSocketStream<TcpStream>,
}

impl Client {
    /// Opens a websocket session and connects to namespace `/` with `auth` (JSON) if given.
    pub async fn connect(port: u16, auth: Option<&str>) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.context("TCP connect")?;
        stream.set_nodelay(true)?;
        let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
        // tungstenite reserves 128 KiB per reader by default; the events here are tiny.
        let config = WebSocketConfig::default().read_buffer_size(4096);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .context("websocket handshake")?;
        let mut client = Client { ws };
        let open = client.text().await?;
        if !open.starts_with('0') {
            bail!("expected the open packet, got {open:?}");
        }
        client.send(format!("40{}", auth.unwrap_or(""))).await?;
        loop {
            let text = client.text().await?;
            if text.starts_with("40") {
                return Ok(client);
            }
            if text.starts_with("44") {
                bail!("connect refused: {text}");
            }
        }
    }

    pub async fn send(&mut self, text: String) -> anyhow::Result<()> {
        self.ws.send(Message::text(text)).await.context("websocket send")
    }

    /// The next event or ack; pings are answered on the way.
    pub async fn next(&mut self) -> anyhow::Result<Incoming> {
        loop {
            let text = self.text().await?;
            if let Some(event) = text.strip_prefix("42") {
                return Ok(Incoming::Event(event.to_owned()));
            }
            if let Some(ack) = text.strip_prefix("43") {
                let digits = ack.bytes().take_while(u8::is_ascii_digit).count();
                let id = ack[..digits].parse().context("ack without id")?;
                return Ok(Incoming::Ack(id, ack[digits..].to_owned()));
            }
        }
    }

    /// The next text frame, answering pings.
    async fn text(&mut self) -> anyhow::Result<String> {
        loop {
            match self.ws.next().await.context("the server closed the websocket")?? {
                Message::Text(text) if text.as_str() == "2" => self.send("3".into()).await?,
                Message::Text(text) => return Ok(text.as_str().to_owned()),
                Message::Close(_) => bail!("the server closed the websocket"),
                _ => {}
            }
        }
    }
}

/// A client that emits on request and meanwhile keeps reading, so the server's pings are
/// answered: a scenario longer than a ping interval plus timeout must not lose its emitter.
pub struct Emitter {
    tx: tokio::sync::mpsc::Sender<String>,
}

impl Emitter {
    pub async fn connect(port: u16, auth: Option<&str>) -> anyhow::Result<Emitter> {
        let mut client = Client::connect(port, auth).await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    text = rx.recv() => match text {
                        Some(text) => client.send(text).await?,
                        None => return anyhow::Ok(()),
                    },
                    incoming = client.next() => {
                        incoming?;
                    }
                }
            }
        });
        Ok(Emitter { tx })
    }

    pub async fn send(&self, text: String) -> anyhow::Result<()> {
        self.tx.send(text).await.map_err(|_| anyhow::anyhow!("the emitter's connection ended"))
    }
}

/// The `seq` field of an event's first argument (`["tick",{"seq":7,...}]`), found without
/// parsing the JSON: the clients must stay cheaper than the servers they measure.
pub fn seq(event: &str) -> Option<usize> {
    let at = event.find("\"seq\":")? + 6;
    let digits = event[at..].bytes().take_while(u8::is_ascii_digit).count();
    event[at..at + digits].parse().ok()
}
