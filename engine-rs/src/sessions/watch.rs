//! Every engine watches the sessions bucket, so that a session opened, closed or declared lost
//! through any engine is known to all: the watch of the config bucket
//! ([`crate::runtime_config::watch::start_bucket`]: an ordered consumer that resumes after the
//! last revision it delivered, also across reconnects) on `bridge_sessions`, its entries
//! decoded here. The run loop applies each [`Change`] between commands.

use async_nats::jetstream::kv::Operation;
use async_nats::Client;
use prost::Message as _;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::contract;
use crate::proto::state::SessionRecord;
use crate::runtime_config::watch::{self, Event};

/// One revision of the bucket, as the engine acts on it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A record was written at `revision`.
    Put(SessionRecord, u64),
    /// The key of this session id was deleted or purged (an operator).
    Removed(String),
    /// Every revision the bucket held when the watch started has been delivered.
    CaughtUp,
    /// A key or value that is no session record (logged, skipped).
    Foreign { key: String, revision: u64 },
}

/// Starts the watch task.
pub fn start(client: Client, cfg: &Config) -> mpsc::Receiver<Event> {
    watch::start_bucket(client, cfg, contract::SESSIONS_KV_BUCKET)
}

/// What a watch event means.
pub fn change(event: Event) -> Change {
    let entry = match event {
        Event::CaughtUp => return Change::CaughtUp,
        Event::Entry(entry) => entry,
    };
    let foreign = || Change::Foreign {
        key: entry.key.clone(),
        revision: entry.revision,
    };
    let Some(id) = entry.key.strip_prefix(contract::SESSION_KEY_PREFIX) else {
        return foreign();
    };
    match entry.operation {
        Operation::Delete | Operation::Purge => Change::Removed(id.to_string()),
        Operation::Put => match SessionRecord::decode(entry.payload.clone()) {
            Ok(record) if record.session_id == id => Change::Put(record, entry.revision),
            _ => foreign(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_config::watch::Entry;

    fn entry(key: &str, operation: Operation, payload: Vec<u8>) -> Event {
        Event::Entry(Entry {
            key: key.into(),
            revision: 3,
            operation,
            subject: String::new(),
            payload: payload.into(),
            headers: None,
        })
    }

    #[test]
    fn entries_become_changes() {
        let record = SessionRecord {
            session_id: "s1".into(),
            grace_ms: 1000,
            ..Default::default()
        };
        let key = contract::session_key("s1");
        assert_eq!(
            change(entry(&key, Operation::Put, record.encode_to_vec())),
            Change::Put(record.clone(), 3)
        );
        assert_eq!(
            change(entry(&key, Operation::Delete, vec![])),
            Change::Removed("s1".into())
        );
        assert_eq!(
            change(entry(&key, Operation::Purge, vec![])),
            Change::Removed("s1".into())
        );
        // A record under another session's key, garbage, a key outside the scheme: skipped.
        let other = contract::session_key("s2");
        for (k, payload) in [
            (other.as_str(), record.encode_to_vec()),
            (key.as_str(), vec![0xff, 0xff]),
            ("s1", record.encode_to_vec()),
        ] {
            assert!(matches!(
                change(entry(k, Operation::Put, payload)),
                Change::Foreign { .. }
            ));
        }
        assert_eq!(change(Event::CaughtUp), Change::CaughtUp);
    }
}
