//! Why an event object does not make an envelope: typed, so that the front (HTTP or NATS)
//! chooses the status, and the code and field stay stable for clients.

use fundflow_domain::Rejection;

/// An event breaks a rule that needs no ledger state: a JSON-level rule of this crate, or the
/// domain gate's. The caller tells the client which field to fix; sending it unchanged again
/// fails the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidEvent {
    /// A stable code: a domain rejection code or one of the API's own (`invalid_type`, ...).
    pub code: &'static str,
    /// The offending field's path (`allocations[0].items[0].quantity`), or empty.
    pub field: String,
    /// The field and the rule, in one sentence.
    pub message: String,
}

impl InvalidEvent {
    /// An error about `field` (may be empty) breaking `rule`; the message names the field.
    pub fn new(code: &'static str, field: &str, rule: impl Into<String>) -> InvalidEvent {
        let rule = rule.into();
        let message = if field.is_empty() {
            rule
        } else {
            format!("{field}: {rule}")
        };
        InvalidEvent {
            code,
            field: field.to_owned(),
            message,
        }
    }
}

impl From<&Rejection> for InvalidEvent {
    fn from(rejection: &Rejection) -> InvalidEvent {
        InvalidEvent {
            code: rejection.code.as_str(),
            field: rejection.field.clone(),
            message: rejection.message.clone(),
        }
    }
}

/// Why an event object was not turned into an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The object is invalid; see [`InvalidEvent`].
    #[error(transparent)]
    Invalid(#[from] InvalidEvent),
    /// The object names another partner than the one submitting it: not the client's to send
    /// (a forbidden request, not a malformed one). The field is `partner_id`.
    #[error("{message}")]
    NotThePartner {
        /// The rule, naming both partners.
        message: String,
    },
}
