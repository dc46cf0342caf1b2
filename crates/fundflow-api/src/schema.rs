//! The event vocabulary of the API, written once: the five `type` values and which fields each
//! takes. The JSON intake ([`crate::parse_event`]), the CSV columns of the server's import and
//! the consistency tests of [`crate::EventObject`]'s serde derive all read these tables, so a
//! new field is added here and in the event object, nowhere else.

/// The `type` of an event object, in the order of the envelope's body fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// `pledge_recorded`.
    PledgeRecorded,
    /// `contribution_paid`.
    ContributionPaid,
    /// `parallel_funding_mobilized`.
    ParallelFundingMobilized,
    /// `in_kind_donation_recorded`.
    InKindDonationRecorded,
    /// `event_reversed`.
    EventReversed,
}

impl EventType {
    /// Every type, in the order of the envelope's body fields.
    pub const ALL: [EventType; 5] = [
        EventType::PledgeRecorded,
        EventType::ContributionPaid,
        EventType::ParallelFundingMobilized,
        EventType::InKindDonationRecorded,
        EventType::EventReversed,
    ];

    /// The `type` value (the serde names of [`crate::EventBody`]; a test holds them equal).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PledgeRecorded => "pledge_recorded",
            EventType::ContributionPaid => "contribution_paid",
            EventType::ParallelFundingMobilized => "parallel_funding_mobilized",
            EventType::InKindDonationRecorded => "in_kind_donation_recorded",
            EventType::EventReversed => "event_reversed",
        }
    }

    /// The type named `name`.
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Whether events of this type move money (and so take the [`FLOW_FIELDS`]).
    pub fn has_flow(self) -> bool {
        self != EventType::EventReversed
    }

    /// The fields of this type besides the [`HEAD_FIELDS`] and the [`FLOW_FIELDS`].
    pub fn own_fields(self) -> &'static [&'static str] {
        match self {
            EventType::PledgeRecorded => &["pledge_id", "donor", "sector", "description"],
            // In the order of the protobuf's fields: the donor came last.
            EventType::ContributionPaid => &["payment_id", "pledge_id", "description", "donor"],
            EventType::ParallelFundingMobilized => {
                &["funding_id", "source", "grant_id", "description"]
            }
            EventType::InKindDonationRecorded => {
                &["donation_id", "donor", "description", "valuation_basis"]
            }
            EventType::EventReversed => &["reverses_event_id", "reverses_ref", "reason"],
        }
    }

    /// Whether `field` (a body field: a flow field or an own field of some type) belongs to
    /// this type.
    pub fn takes(self, field: &str) -> bool {
        self.own_fields().contains(&field)
            || (self.has_flow() && FLOW_FIELDS.iter().any(|(name, _)| *name == field))
    }

    /// The names of every type, for messages.
    pub fn names() -> String {
        EventType::ALL.map(EventType::as_str).join(", ")
    }
}

/// The JSON shape of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A string (amounts, rates and quantities too: decimal strings, never JSON numbers).
    Text,
    /// `{"value": "...", "currency": "..."}`: [`MONEY_FIELDS`].
    Money,
    /// An array of allocations: [`ALLOCATION_FIELDS`].
    Allocations,
    /// An array of items: [`ITEM_FIELDS`].
    Items,
}

/// The field that names the type.
pub const TYPE_FIELD: &str = "type";

/// The fields every event object may carry on the way in, whatever its type.
pub const HEAD_FIELDS: [&str; 4] = ["event_id", "ref", "partner_id", "occurred_on"];

/// The fields of the types that move money.
pub const FLOW_FIELDS: [(&str, Shape); 5] = [
    ("amount", Shape::Money),
    ("usd_rate", Shape::Text),
    ("usd_rate_date", Shape::Text),
    ("usd_rate_source", Shape::Text),
    ("allocations", Shape::Allocations),
];

/// The members of an amount.
pub const MONEY_FIELDS: [(&str, Shape); 2] = [("value", Shape::Text), ("currency", Shape::Text)];

/// The members of an allocation.
pub const ALLOCATION_FIELDS: [(&str, Shape); 5] = [
    ("country", Shape::Text),
    ("region", Shape::Text),
    ("organisation", Shape::Text),
    ("value", Shape::Text),
    ("items", Shape::Items),
];

/// The members of an item.
pub const ITEM_FIELDS: [(&str, Shape); 3] = [
    ("item", Shape::Text),
    ("unit", Shape::Text),
    ("quantity", Shape::Text),
];

/// Every body field of any type, each once: the flow fields, then the types' own fields in the
/// order of [`EventType::ALL`].
pub fn body_fields() -> Vec<(&'static str, Shape)> {
    let mut fields: Vec<(&'static str, Shape)> = FLOW_FIELDS.to_vec();
    for kind in EventType::ALL {
        for name in kind.own_fields() {
            if !fields.iter().any(|(known, _)| known == name) {
                fields.push((name, Shape::Text));
            }
        }
    }
    fields
}

/// The shape of a top-level field an event object may carry on the way in, if it is one.
pub fn input_field(name: &str) -> Option<Shape> {
    if name == TYPE_FIELD || HEAD_FIELDS.contains(&name) {
        return Some(Shape::Text);
    }
    body_fields()
        .into_iter()
        .find(|(known, _)| *known == name)
        .map(|(_, shape)| shape)
}

/// Every top-level field an event object may carry on the way in, for messages.
pub fn input_field_names() -> Vec<&'static str> {
    let mut names = vec![TYPE_FIELD];
    names.extend(HEAD_FIELDS);
    names.extend(body_fields().into_iter().map(|(name, _)| name));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_fields_are_in_the_order_the_api_has_always_listed_them() {
        let names: Vec<&str> = body_fields().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "amount",
                "usd_rate",
                "usd_rate_date",
                "usd_rate_source",
                "allocations",
                "pledge_id",
                "donor",
                "sector",
                "description",
                "payment_id",
                "funding_id",
                "source",
                "grant_id",
                "donation_id",
                "valuation_basis",
                "reverses_event_id",
                "reverses_ref",
                "reason",
            ]
        );
    }
}
