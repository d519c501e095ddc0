//! `bridge.v1.orders.mass_cancel.<account>` and its relay between engines: cancel an account's open orders. Skeleton: refused until implemented.

use crate::engine::Engine;
use crate::error::EngineError;
use crate::service::{Incoming, ServiceError};

impl Engine {
    /// A mass cancel (`forwarded`: relayed by a peer engine; cancel here only).
    pub async fn on_mass_cancel(
        &mut self,
        req: &Incoming,
        forwarded: bool,
    ) -> Result<(), EngineError> {
        let _ = forwarded;
        req.fail(ServiceError::new(501, "mass cancel: not implemented yet"))
            .await;
        Ok(())
    }
}
