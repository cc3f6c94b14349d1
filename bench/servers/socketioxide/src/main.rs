//! socketioxide (the Rust Socket.IO server a user would otherwise pick) as a benchmark peer,
//! with the behaviour every benchmark server shares (bench/servers/README.md), served by hyper
//! the way socketioxide's own hyper example does.
//!
//! `bench-socketioxide --port 3001`

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef};

const ROOM: &str = "bench";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::args().skip_while(|a| a != "--port").nth(1) {
        Some(port) => port.parse()?,
        None => 3001,
    };
    let (service, io) = SocketIo::new_svc();
    io.ns("/", async |socket: SocketRef, Data(auth): Data<Value>| {
        if auth.get("emitter").is_none() {
            socket.join(ROOM);
        }
        socket.on("echo", async |Data(data): Data<Value>, ack: AckSender| {
            let _ = ack.send(&data);
        });
        socket.on("fanout", async |socket: SocketRef, Data(data): Data<Value>| {
            let _ = socket.to(ROOM).emit("tick", &data).await;
        });
    });

    // The same listener settings as Tally's: backlog 1024, TCP_NODELAY.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], port).into())?;
    let listener = socket.listen(1024)?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
