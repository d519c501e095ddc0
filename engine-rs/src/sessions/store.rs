//! The session store: the KV bucket `bridge_sessions` (provisioned; the engine role may write
//! its keys but not create it), one [`SessionRecord`] per key
//! [`contract::session_key`]. Writes and reads are retried for at most
//! `jetstream_request_timeout_ms` (not the order store's long deadline): a session write that
//! cannot be made is answered (an open or close is refused, ENGINE_UNAVAILABLE, and the
//! orchestrator retries it) or logged (a loss: the orders were canceled already and every other
//! engine declares the loss on its own timer); it never stops the engine.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use backon::Retryable;
use bytes::Bytes;
use prost::Message as _;
use tracing::warn;

use crate::config::Config;
use crate::contract;
use crate::error::SetupError;
use crate::jetstream_errors;
use crate::proto::state::SessionRecord;
use crate::retry;

/// What a conditional write found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Stored at this revision.
    At(u64),
    /// The key moved on since the revision given (another engine, or a renewal, wrote it).
    Conflict,
}

/// The bucket and the retry policy of its operations.
pub struct SessionStore {
    kv: kv::Store,
    cfg: Config,
}

impl SessionStore {
    /// Binds to the provisioned bucket.
    pub async fn bind(js: &jetstream::Context, cfg: &Config) -> Result<SessionStore, SetupError> {
        let kv = js
            .get_key_value(contract::SESSIONS_KV_BUCKET)
            .await
            .map_err(|e| SetupError::new("KV bucket bridge_sessions", e))?;
        Ok(SessionStore {
            kv,
            cfg: cfg.clone(),
        })
    }

    fn backoff(&self) -> retry::Backoff {
        retry::Backoff::new(
            retry::Policy::from_config(&self.cfg),
            self.cfg.jetstream_retry_max_attempts,
            Duration::from_millis(self.cfg.jetstream_request_timeout_ms),
        )
    }

    /// Writes `record` unconditionally (an open or renewal: the orchestrator's word is the
    /// latest). Err: why it could not be stored.
    pub async fn put(&self, record: &SessionRecord) -> Result<u64, String> {
        let key = contract::session_key(&record.session_id);
        let value = Bytes::from(record.encode_to_vec());
        let subject = contract::kv_key_subject(contract::SESSIONS_KV_BUCKET, &key);
        let started = Instant::now();
        (|| self.kv.put(&key, value.clone()))
            .retry(self.backoff())
            .when(|e: &kv::PutError| jetstream_errors::permanent_on(e, &subject, started).is_none())
            .notify(|e, delay| warn!(key = %key, error = %e, retry_in_ms = millis(delay), "session store: put failed; retrying"))
            .await
            .map_err(|e| e.to_string())
    }

    /// Writes `record` if the key is still at `revision` (0: if it does not exist).
    pub async fn update(&self, record: &SessionRecord, revision: u64) -> Result<Written, String> {
        let key = contract::session_key(&record.session_id);
        let value = Bytes::from(record.encode_to_vec());
        let subject = contract::kv_key_subject(contract::SESSIONS_KV_BUCKET, &key);
        let started = Instant::now();
        let conflict = |e: &kv::UpdateError| e.kind() == kv::UpdateErrorKind::WrongLastRevision;
        let written = (|| self.kv.update(&key, value.clone(), revision))
            .retry(self.backoff())
            .when(|e: &kv::UpdateError| {
                !conflict(e) && jetstream_errors::permanent_on(e, &subject, started).is_none()
            })
            .notify(|e, delay| warn!(key = %key, error = %e, retry_in_ms = millis(delay), "session store: update failed; retrying"))
            .await;
        match written {
            Ok(rev) => Ok(Written::At(rev)),
            Err(e) if conflict(&e) => {
                // A retry whose earlier attempt was stored finds exactly our bytes.
                match self.load(&record.session_id).await? {
                    Some((stored, rev)) if stored.encode_to_vec() == value => Ok(Written::At(rev)),
                    _ => Ok(Written::Conflict),
                }
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The record of `session_id` and its revision (None: no key, or deleted).
    pub async fn load(&self, session_id: &str) -> Result<Option<(SessionRecord, u64)>, String> {
        let key = contract::session_key(session_id);
        let entry = (|| self.kv.entry(key.clone()))
            .retry(self.backoff())
            .when(|e: &kv::EntryError| jetstream_errors::permanent(e).is_none())
            .await
            .map_err(|e| e.to_string())?;
        Ok(entry.and_then(|e| match e.operation {
            kv::Operation::Put => SessionRecord::decode(e.value).ok().map(|r| (r, e.revision)),
            _ => None,
        }))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
