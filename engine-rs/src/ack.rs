//! The one builder of `OrderAck`s (pure): every ack the engine answers, accepted or rejected,
//! to a submit or a cancel, with or without a record behind it, is built here.

use crate::proto::v1::{self as pb, AckStatus, FieldError, RejectReason};
use crate::validate::Rejection;

/// What an ack is about and who answers it.
#[derive(Debug, Clone, Copy)]
pub struct AckFor<'a> {
    pub client_order_id: &'a str,
    pub account: &'a str,
    /// Empty when the request has no record.
    pub engine_order_id: &'a str,
    /// The order's status as the answer reports it (0 when unknown).
    pub order_status: i32,
    pub engine_id: &'a str,
    pub now: i64,
}

impl AckFor<'_> {
    /// ACCEPTED with `text`.
    pub fn accepted(self, text: &str) -> pb::OrderAck {
        self.build(
            AckStatus::Accepted,
            RejectReason::Unspecified,
            Vec::new(),
            text,
        )
    }

    /// REJECTED for `reason`, with the field errors that led to it.
    pub fn rejected(
        self,
        reason: RejectReason,
        field_errors: Vec<FieldError>,
        text: &str,
    ) -> pb::OrderAck {
        self.build(AckStatus::Rejected, reason, field_errors, text)
    }

    /// REJECTED for a validation's verdict (its reason, field errors and text).
    pub fn rejected_by(self, rejection: &Rejection) -> pb::OrderAck {
        self.rejected(
            rejection.reason,
            rejection.errors.clone(),
            &rejection.text(),
        )
    }

    fn build(
        self,
        status: AckStatus,
        reason: RejectReason,
        field_errors: Vec<FieldError>,
        text: &str,
    ) -> pb::OrderAck {
        pb::OrderAck {
            client_order_id: self.client_order_id.into(),
            account: self.account.into(),
            engine_order_id: self.engine_order_id.into(),
            status: status as i32,
            reason: reason as i32,
            field_errors,
            order_status: self.order_status,
            duplicate: false,
            ack_time_unix_ns: self.now,
            engine_id: self.engine_id.into(),
            text: text.into(),
            orig_client_order_id: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::OrderStatus;
    use crate::validate::field_error;

    fn about() -> AckFor<'static> {
        AckFor {
            client_order_id: "ord-1",
            account: "ACC1",
            engine_order_id: "engine-1-7",
            order_status: OrderStatus::PendingNew as i32,
            engine_id: "engine-1",
            now: 42,
        }
    }

    /// An accepted ack carries no reason and no field errors, and every identifying field.
    #[test]
    fn accepted_ack() {
        let ack = about().accepted("");
        assert_eq!(
            ack,
            pb::OrderAck {
                client_order_id: "ord-1".into(),
                account: "ACC1".into(),
                engine_order_id: "engine-1-7".into(),
                status: AckStatus::Accepted as i32,
                reason: RejectReason::Unspecified as i32,
                field_errors: vec![],
                order_status: OrderStatus::PendingNew as i32,
                duplicate: false,
                ack_time_unix_ns: 42,
                engine_id: "engine-1".into(),
                text: String::new(),
                orig_client_order_id: String::new(),
            }
        );
    }

    /// A rejection's ack carries its reason, its field errors and its text, and is never a
    /// duplicate (that is set only when a stored ack is answered again).
    #[test]
    fn rejected_ack_from_a_rejection() {
        let rej = Rejection {
            reason: RejectReason::InvalidField,
            errors: vec![field_error("quantity", "positive", "must be > 0".into())],
        };
        let ack = about().rejected_by(&rej);
        assert_eq!(ack.status, AckStatus::Rejected as i32);
        assert_eq!(ack.reason, RejectReason::InvalidField as i32);
        assert_eq!(ack.field_errors, rej.errors);
        assert_eq!(ack.text, rej.text());
        assert!(!ack.duplicate);
        assert_eq!(ack.engine_order_id, "engine-1-7");

        let bare = about().rejected(RejectReason::TooLate, vec![], "order is already final");
        assert_eq!(bare.reason, RejectReason::TooLate as i32);
        assert!(bare.field_errors.is_empty());
        assert_eq!(bare.text, "order is already final");
    }
}
