//! The endpoints against a real server on a free port, probed with the `--check-ready` client.

use std::sync::Arc;

use super::check::{status, CheckError};
use super::Server;
use crate::metrics::Metrics;

#[tokio::test]
async fn endpoints_answer_and_readyz_follows_the_conditions() {
    let metrics = Arc::new(Metrics::new(&["ACME".to_string()]));
    let server = Server::start("127.0.0.1:0", metrics.clone())
        .await
        .expect("binds a free port");
    let base = format!("http://{}", server.addr());
    assert_ne!(server.addr().port(), 0);
    assert_eq!(
        status(&format!("{base}/healthz")).await.expect("answer"),
        200
    );
    assert_eq!(
        status(&format!("{base}/metrics")).await.expect("answer"),
        200
    );
    assert_eq!(
        status(&format!("{base}/readyz")).await.expect("answer"),
        503
    );
    let h = &metrics.health;
    h.set_connected(true);
    h.set_consumer_bound(true);
    h.set_recovery_finished();
    h.set_intake_subscribed(true);
    assert_eq!(
        status(&format!("{base}/readyz")).await.expect("answer"),
        200
    );
    h.set_connected(false);
    assert_eq!(
        status(&format!("{base}/readyz")).await.expect("answer"),
        503
    );
    assert_eq!(status(&format!("{base}/nope")).await.expect("answer"), 404);
    server.stop().await;
    assert!(matches!(
        status(&format!("{base}/healthz")).await,
        Err(CheckError::Connect { .. })
    ));
}

#[tokio::test]
async fn a_taken_port_or_a_bad_url_is_a_typed_error() {
    let metrics = Arc::new(Metrics::new(&[]));
    let first = Server::start("127.0.0.1:0", metrics.clone())
        .await
        .expect("binds");
    let taken = first.addr().to_string();
    assert!(matches!(
        Server::start(&taken, metrics).await,
        Err(super::HttpError::Bind { .. })
    ));
    assert!(matches!(
        status("https://127.0.0.1:1/readyz").await,
        Err(CheckError::BadUrl(_))
    ));
    first.stop().await;
}
