//! A small HTTP/1.1 client on hyper: one connection per [`Conn`], requests in turn, as a
//! browser's connection carries them.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type Body = BoxBody<Bytes, std::io::Error>;

pub struct Conn {
    sender: SendRequest<Body>,
}

impl Conn {
    pub async fn open(port: u16) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Conn { sender })
    }

    /// Sends one request; `Host` is filled in.
    pub async fn send(&mut self, mut request: Request<Body>) -> anyhow::Result<Response<hyper::body::Incoming>> {
        request.headers_mut().entry(header::HOST).or_insert(header::HeaderValue::from_static("127.0.0.1"));
        self.sender.ready().await?;
        Ok(self.sender.send_request(request).await?)
    }

    /// Sends one request and reads the whole answer.
    pub async fn fetch(&mut self, request: Request<Body>) -> anyhow::Result<(u16, Bytes)> {
        let response = self.send(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

pub fn body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

pub fn get(path: &str) -> Request<Body> {
    Request::get(path).body(body(Bytes::new())).expect("a static request is valid")
}

/// The status of a GET on a fresh connection; used to tell that a server is up.
pub async fn get_status(port: u16, path: &str) -> anyhow::Result<u16> {
    let mut conn = Conn::open(port).await?;
    Ok(conn.fetch(get(path)).await?.0)
}
