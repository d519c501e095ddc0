//! What intake could not attribute, counted (pure): messages refused before they were decoded
//! (every authorization refusal), not decodable, over the size limit, without a reply subject
//! to answer, or naming another message type in `Bridge-Schema`. The engine logs the counts as
//! one `intake refusals` line when it shuts down (the hostile-input fuzz test reads it).

use crate::auth::RefusalKind;

/// Counts per category (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntakeCounters {
    pub unsigned: u64,
    pub bad_signature: u64,
    pub signature_expired: u64,
    pub replayed: u64,
    pub account_mismatch: u64,
    pub not_entitled: u64,
    /// Not the protobuf message its subject takes.
    pub malformed: u64,
    /// Over `MAX_NEW_ORDER_BYTES` (orders) or the request limit (cancel, status).
    pub oversize: u64,
    /// A request without a reply subject: nobody can be answered.
    pub no_reply: u64,
    /// `Bridge-Schema` names another message type than the subject takes.
    pub wrong_type: u64,
}

impl IntakeCounters {
    /// One authorization refusal.
    pub fn refused(&mut self, kind: RefusalKind) {
        let n = match kind {
            RefusalKind::Unsigned => &mut self.unsigned,
            RefusalKind::BadSignature => &mut self.bad_signature,
            RefusalKind::SignatureExpired => &mut self.signature_expired,
            RefusalKind::Replayed => &mut self.replayed,
            RefusalKind::AccountMismatch => &mut self.account_mismatch,
            RefusalKind::NotEntitled => &mut self.not_entitled,
        };
        *n += 1;
    }

    /// Every category and its count, in a fixed order.
    pub fn counts(&self) -> [(&'static str, u64); 10] {
        [
            ("unsigned", self.unsigned),
            ("bad_signature", self.bad_signature),
            ("signature_expired", self.signature_expired),
            ("replayed", self.replayed),
            ("account_mismatch", self.account_mismatch),
            ("not_entitled", self.not_entitled),
            ("malformed", self.malformed),
            ("oversize", self.oversize),
            ("no_reply", self.no_reply),
            ("wrong_type", self.wrong_type),
        ]
    }

    pub fn total(&self) -> u64 {
        self.counts().iter().map(|(_, n)| n).sum()
    }

    /// The summary line: `intake refusals`, one field per category.
    pub fn log(&self) {
        tracing::info!(
            unsigned = self.unsigned,
            bad_signature = self.bad_signature,
            signature_expired = self.signature_expired,
            replayed = self.replayed,
            account_mismatch = self.account_mismatch,
            not_entitled = self.not_entitled,
            malformed = self.malformed,
            oversize = self.oversize,
            no_reply = self.no_reply,
            wrong_type = self.wrong_type,
            total = self.total(),
            "intake refusals"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each refusal kind has its own counter, and the token of its kind names it.
    #[test]
    fn each_kind_counts_under_its_token() {
        let mut c = IntakeCounters::default();
        for (i, kind) in RefusalKind::ALL.into_iter().enumerate() {
            for _ in 0..=i {
                c.refused(kind);
            }
        }
        c.malformed += 7;
        for (i, kind) in RefusalKind::ALL.into_iter().enumerate() {
            let token = kind.token();
            let (_, n) = c
                .counts()
                .into_iter()
                .find(|(name, _)| *name == token)
                .unwrap();
            assert_eq!(n, i as u64 + 1, "{token}");
        }
        assert_eq!(c.total(), 21 + 7);
    }
}
