//! Expiry that happens on time: resting GTD orders at their deadline and DAY orders at the
//! session end, even if no other order arrives; and the engine's one timer ([`Engine::next_timer`],
//! [`Engine::on_timer`]) that drives every timed duty (expiry, session grace). Skeleton.

use crate::engine::Engine;
use crate::error::EngineError;

impl Engine {
    /// When the engine next has timed work to do: the earliest of its duties' instants
    /// (`None`: none). The run loop sleeps until then and calls [`Engine::on_timer`].
    pub fn next_timer(&self) -> Option<tokio::time::Instant> {
        [self.expiry_timer(), self.session_timer()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Does every timed duty that is due now.
    pub async fn on_timer(&mut self) -> Result<(), EngineError> {
        self.on_expiry_timer().await?;
        self.on_session_timer().await
    }

    /// When the next resting order expires (`None`: none has a deadline).
    pub fn expiry_timer(&self) -> Option<tokio::time::Instant> {
        None
    }

    /// Expires every resting order due by now.
    pub async fn on_expiry_timer(&mut self) -> Result<(), EngineError> {
        Ok(())
    }
}
