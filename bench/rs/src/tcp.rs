//! Baseline (d): length-prefixed frame echo over TCP (mutual TLS 1.3, or `--plain`).

use anyhow::{bail, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::args::Args;
use crate::{ready, tls};

/// Larger frames are a protocol error (orders are a few hundred bytes).
const MAX_FRAME: usize = 1 << 20;

pub async fn serve(a: &Args) -> Result<()> {
    let acceptor = if a.flag("plain") {
        None
    } else {
        Some(TlsAcceptor::from(tls::mutual_tls13(
            a.get("ca")?,
            a.get("cert")?,
            a.get("key")?,
        )?))
    };
    let listener = TcpListener::bind(a.get_or("listen", "127.0.0.1:0")).await?;
    ready(&listener.local_addr()?.to_string());
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let result = match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => echo_frames(tls).await,
                    Err(e) => Err(e.into()),
                },
                None => echo_frames(stream).await,
            };
            if let Err(e) = result {
                eprintln!("tcp-echo connection ended: {e}");
            }
        });
    }
}

/// Reads `u32` big-endian length + payload, writes the same frame back; until EOF.
async fn echo_frames<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Result<()> {
    let mut frame = Vec::with_capacity(1024);
    loop {
        let len = match s.read_u32().await {
            Ok(n) => n as usize,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if len > MAX_FRAME {
            bail!("frame of {len} bytes exceeds {MAX_FRAME}");
        }
        frame.clear();
        frame.extend_from_slice(&(len as u32).to_be_bytes());
        frame.resize(4 + len, 0);
        s.read_exact(&mut frame[4..]).await?;
        s.write_all(&frame).await?;
        s.flush().await?;
    }
}
