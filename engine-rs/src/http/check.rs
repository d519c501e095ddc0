//! `bridge-engine --check-ready URL`: one HTTP/1 GET (hyper's client connection), exit 0 if
//! the answer is 200. The engine image has no curl or wget; this is its healthcheck.

use std::time::Duration;

use axum::body::Body;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a check could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("check-ready: {0:?} is not an http://host:port/path URL")]
    BadUrl(String),
    #[error("check-ready: {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("check-ready: {url}: {source}")]
    Http { url: String, source: hyper::Error },
    #[error("check-ready: {url}: no answer within {0:?}", CHECK_TIMEOUT)]
    Timeout { url: String },
}

/// How long one check waits in all.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The status code `url` answers a GET with.
pub async fn status(url: &str) -> Result<u16, CheckError> {
    match tokio::time::timeout(CHECK_TIMEOUT, get(url)).await {
        Ok(r) => r,
        Err(_) => Err(CheckError::Timeout { url: url.into() }),
    }
}

async fn get(url: &str) -> Result<u16, CheckError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| CheckError::BadUrl(url.to_string()))?;
    let (Some("http"), Some(authority)) = (uri.scheme_str(), uri.authority().cloned()) else {
        return Err(CheckError::BadUrl(url.to_string()));
    };
    let port = authority.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((authority.host(), port))
        .await
        .map_err(|source| CheckError::Connect {
            url: url.into(),
            source,
        })?;
    let http = |source| CheckError::Http {
        url: url.into(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(hyper::header::HOST, authority.as_str())
        .body(Body::empty())
        .map_err(|_| CheckError::BadUrl(url.to_string()))?;
    let answered = sender.send_request(request).await.map_err(http);
    driver.abort();
    Ok(answered?.status().as_u16())
}
