//! Crash-test failpoints: the configured `failpoint` aborts the process at the named point
//! (`after_ack`, `after_store`, `mid_publish`, `mid_mass_cancel`; see `config.rs`; a
//! replace's `replace_after_alias`, `replace_after_publish`, see `commands/replace.rs`; a
//! commit group's `after_journal`, `mid_journal`, see `commit.rs`). Tests of recovery only.

use async_nats::Client;
use tracing::error;

/// The one failpoint this process stops at, if any.
#[derive(Clone)]
pub struct Failpoint {
    armed: Option<String>,
    client: Client,
}

impl Failpoint {
    pub fn new(armed: Option<String>, client: Client) -> Failpoint {
        Failpoint { armed, client }
    }

    /// Aborts here if the configured failpoint is `name` (after flushing what was sent).
    pub async fn reached(&self, name: &str) {
        if self.armed.as_deref() == Some(name) {
            let _ = self.client.flush().await;
            error!(failpoint = name, "failpoint reached: aborting");
            std::process::abort();
        }
    }
}
