//! Baseline (c): gRPC unary echo of a `bridge.v1.NewOrder` with tonic, mutual TLS.

use anyhow::{Context, Result};
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::args::Args;
use crate::proto::bridge::bench::v1::order_echo_server::{OrderEcho, OrderEchoServer};
use crate::proto::bridge::v1::NewOrder;
use crate::ready;

#[derive(Debug, Default)]
struct Echo;

#[tonic::async_trait]
impl OrderEcho for Echo {
    async fn submit(&self, request: Request<NewOrder>) -> Result<Response<NewOrder>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

fn read(path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {path}"))
}

pub async fn serve(a: &Args) -> Result<()> {
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(a.get("cert")?)?,
            read(a.get("key")?)?,
        ))
        .client_ca_root(Certificate::from_pem(read(a.get("ca")?)?));
    let listener = TcpListener::bind(a.get_or("listen", "127.0.0.1:0")).await?;
    let addr = listener.local_addr()?;
    // Nagle off, like the NATS connections: a request/response protocol must not wait for ACKs.
    let incoming = TcpListenerStream::new(listener).map(|s| {
        let s = s?;
        s.set_nodelay(true)?;
        Ok::<_, std::io::Error>(s)
    });
    let server = Server::builder()
        .tls_config(tls)?
        .add_service(OrderEchoServer::new(Echo));
    ready(&addr.to_string());
    server.serve_with_incoming(incoming).await?;
    Ok(())
}
