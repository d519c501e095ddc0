//! `bridge.v1.orders.replace.<account>`: amend a resting order (FIX OrderCancelReplaceRequest). Skeleton: refused until implemented.

use crate::engine::Engine;
use crate::error::EngineError;
use crate::service::{Incoming, ServiceError};

impl Engine {
    /// A replace request.
    pub async fn on_replace(&mut self, req: &Incoming) -> Result<(), EngineError> {
        req.fail(ServiceError::new(501, "replace: not implemented yet"))
            .await;
        Ok(())
    }
}
