//! Reading a submitted event object, with errors a partner can act on: which field, which rule.
//!
//! Why not hand the bytes straight to serde: serde's errors are typed only as text, and the API
//! promises stable codes (`invalid_type`, `unknown_field`, `unexpected_field`, ...) in a fixed
//! order of checks. So the bytes are first read into an ordered JSON tree (only syntax can fail
//! there), the tree is checked against the field tables of [`crate::schema`] (each error's kind
//! is known where it is found), and only then does serde build the typed [`EventObject`], which
//! can no longer fail. CSV imports build the same tree, so both take the same checks.

use std::fmt;

use fundflow_proto::v1;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{EventError, InvalidEvent};
use crate::event::{EventObject, check_partner, event_id_of};
use crate::schema::{
    ALLOCATION_FIELDS, EventType, ITEM_FIELDS, MONEY_FIELDS, Shape, TYPE_FIELD, body_fields,
    input_field, input_field_names,
};

/// A JSON value that keeps its members in document order, duplicates included, so that the
/// checks report the first problem as the partner wrote it.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A JSON number.
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object's members, in order.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The value as `serde_json` holds it (a later duplicate member wins).
    pub fn into_value(self) -> serde_json::Value {
        match self {
            Json::Null => serde_json::Value::Null,
            Json::Bool(b) => serde_json::Value::Bool(b),
            Json::Number(n) => serde_json::Value::Number(n),
            Json::String(s) => serde_json::Value::String(s),
            Json::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(Json::into_value).collect())
            }
            Json::Object(members) => serde_json::Value::Object(
                members
                    .into_iter()
                    .map(|(name, value)| (name, value.into_value()))
                    .collect(),
            ),
        }
    }

    /// What the value is, for messages (in serde's words).
    fn describe(&self) -> String {
        match self {
            Json::Null => "null".to_owned(),
            Json::Bool(b) => format!("boolean `{b}`"),
            Json::Number(n) if n.is_f64() => format!("floating point `{n}`"),
            Json::Number(n) => format!("integer `{n}`"),
            Json::String(s) => format!("string {s:?}"),
            Json::Array(_) => "sequence".to_owned(),
            Json::Object(_) => "map".to_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        Json::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Json, E> {
        Ok(Json::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Json, E> {
        Ok(Json::Number(value.into()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Json, E> {
        Ok(Json::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Json, E> {
        // JSON text has no NaN or infinity, so every number read is finite.
        serde_json::Number::from_f64(value)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Json, E> {
        Ok(Json::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Json, E> {
        Ok(Json::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some((name, value)) = map.next_entry::<String, Json>()? {
            members.push((name, value));
        }
        Ok(Json::Object(members))
    }
}

/// An event object as submitted: its JSON types and field names checked, not yet whether its
/// fields belong to its `type`, nor anything the domain decides.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    members: Vec<(String, Json)>,
}

/// Reads one event object, naming the path of the first field that is wrong.
pub fn parse_event(text: &[u8]) -> Result<ReceivedEvent, InvalidEvent> {
    let tree: Json = serde_json::from_slice(text).map_err(|err| {
        // Only the text can be wrong here: the tree takes any JSON value.
        let prefix = if err.is_syntax() || err.is_eof() {
            "not valid JSON: "
        } else {
            ""
        };
        InvalidEvent::new("invalid_json", "", format!("{prefix}{err}"))
    })?;
    ReceivedEvent::from_tree(tree)
}

impl ReceivedEvent {
    /// Checks `tree` (an object) against the field tables.
    pub fn from_tree(tree: Json) -> Result<ReceivedEvent, InvalidEvent> {
        let Json::Object(members) = tree else {
            return Err(wrong_type(".", &tree, "an object"));
        };
        check_members(&members, "", &|name| input_field(name), &input_field_names)?;
        Ok(ReceivedEvent { members })
    }

    fn get(&self, name: &str) -> Option<&Json> {
        self.members
            .iter()
            .find(|(member, value)| member == name && *value != Json::Null)
            .map(|(_, value)| value)
    }

    fn text(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Json::String(text)) => Some(text),
            _ => None,
        }
    }

    /// The event id the object stands for: its `event_id`, or the id derived from
    /// (`partner_id`, `ref`).
    pub fn event_id(&self, partner_id: &str) -> Result<String, InvalidEvent> {
        event_id_of(partner_id, self.text("event_id"), self.text("ref"))
    }

    /// The envelope of this object for `partner_id`, recorded at `recorded_at`. Fields that do
    /// not belong to the object's `type` are refused, so that nothing a partner sends is
    /// silently dropped.
    pub fn into_envelope(
        self,
        partner_id: &str,
        recorded_at: &str,
    ) -> Result<v1::Envelope, EventError> {
        check_partner(self.text("partner_id"), partner_id)?;
        self.event_id(partner_id)?;
        let kind = match self.text(TYPE_FIELD).filter(|name| !name.is_empty()) {
            None => {
                return Err(InvalidEvent::new(
                    "missing_field",
                    TYPE_FIELD,
                    format!("is required: one of {}", EventType::names()),
                )
                .into());
            }
            Some(name) => EventType::parse(name).ok_or_else(|| {
                InvalidEvent::new(
                    "unknown_kind",
                    TYPE_FIELD,
                    format!("{name:?} is not one of {}", EventType::names()),
                )
            })?,
        };
        for (name, _) in body_fields() {
            if self.get(name).is_some() && !kind.takes(name) {
                return Err(InvalidEvent::new(
                    "unexpected_field",
                    name,
                    format!("is not a field of {}", kind.as_str()),
                )
                .into());
            }
        }
        let object: EventObject = serde_json::from_value(Json::Object(self.members).into_value())
            .map_err(|err| {
            // The checks above leave serde nothing to refuse; should a table and the derive
            // ever drift apart, the partner still learns why.
            InvalidEvent::new("invalid_json", "", err.to_string())
        })?;
        object.into_envelope(partner_id, recorded_at)
    }
}

fn path_of(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

fn check_members(
    members: &[(String, Json)],
    path: &str,
    shape_of: &dyn Fn(&str) -> Option<Shape>,
    names: &dyn Fn() -> Vec<&'static str>,
) -> Result<(), InvalidEvent> {
    for (index, (name, value)) in members.iter().enumerate() {
        let field = path_of(path, name);
        if members[..index].iter().any(|(earlier, _)| earlier == name) {
            return Err(InvalidEvent::new(
                "invalid_json",
                &field,
                format!("duplicate field `{name}`"),
            ));
        }
        let Some(shape) = shape_of(name) else {
            let expected: Vec<String> = names().iter().map(|n| format!("`{n}`")).collect();
            return Err(InvalidEvent::new(
                "unknown_field",
                &field,
                format!(
                    "unknown field `{name}`, expected one of {}",
                    expected.join(", ")
                ),
            ));
        };
        check_value(value, shape, &field)?;
    }
    Ok(())
}

fn table(fields: &'static [(&'static str, Shape)]) -> impl Fn(&str) -> Option<Shape> {
    move |name| {
        fields
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, shape)| *shape)
    }
}

fn check_value(value: &Json, shape: Shape, field: &str) -> Result<(), InvalidEvent> {
    // Every field is optional, so `null` is as good as leaving it out.
    if *value == Json::Null {
        return Ok(());
    }
    match (shape, value) {
        (Shape::Text, Json::String(_)) => Ok(()),
        (Shape::Text, other) => Err(InvalidEvent::new(
            "invalid_type",
            field,
            format!(
                "must be a JSON string (amounts, rates and quantities are decimal strings such as \"31500.00\", never JSON numbers): invalid type: {}, expected a string",
                other.describe()
            ),
        )),
        (Shape::Money, Json::Object(members)) => {
            check_members(members, field, &table(&MONEY_FIELDS), &|| {
                MONEY_FIELDS.map(|(n, _)| n).to_vec()
            })
        }
        (Shape::Allocations | Shape::Items, Json::Array(items)) => {
            let fields: &'static [(&'static str, Shape)] = if shape == Shape::Items {
                &ITEM_FIELDS
            } else {
                &ALLOCATION_FIELDS
            };
            for (i, item) in items.iter().enumerate() {
                let path = format!("{field}[{i}]");
                let Json::Object(members) = item else {
                    return Err(wrong_type(&path, item, "an object"));
                };
                check_members(members, &path, &table(fields), &|| {
                    fields.iter().map(|(n, _)| *n).collect()
                })?;
            }
            Ok(())
        }
        (Shape::Money, other) => Err(wrong_type(field, other, "an object")),
        (Shape::Allocations | Shape::Items, other) => Err(wrong_type(field, other, "an array")),
    }
}

fn wrong_type(field: &str, value: &Json, expected: &str) -> InvalidEvent {
    InvalidEvent::new(
        "invalid_type",
        field,
        format!(
            "has the wrong JSON type: invalid type: {}, expected {expected}",
            value.describe()
        ),
    )
}
