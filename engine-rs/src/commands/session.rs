//! Orchestrator sessions with cancel on disconnect: `bridge.v1.session.open|close.<id>`,
//! heartbeats, and the grace timer. Skeleton: refused until implemented.

use crate::engine::Engine;
use crate::error::EngineError;
use crate::service::{Incoming, ServiceError};

impl Engine {
    /// A session opening.
    pub async fn on_session_open(&mut self, req: &Incoming) -> Result<(), EngineError> {
        req.fail(ServiceError::new(501, "sessions: not implemented yet"))
            .await;
        Ok(())
    }

    /// A session closing.
    pub async fn on_session_close(&mut self, req: &Incoming) -> Result<(), EngineError> {
        req.fail(ServiceError::new(501, "sessions: not implemented yet"))
            .await;
        Ok(())
    }

    /// A heartbeat (not a request: nothing to answer).
    pub fn on_session_heartbeat(&mut self, msg: &async_nats::Message) {
        let _ = msg;
    }

    /// When a session's grace next runs out (`None`: no session to watch). See
    /// [`Engine::next_timer`].
    pub fn session_timer(&self) -> Option<tokio::time::Instant> {
        None
    }

    /// Cancels the orders of every session whose grace ran out by now.
    pub async fn on_session_timer(&mut self) -> Result<(), EngineError> {
        Ok(())
    }
}
