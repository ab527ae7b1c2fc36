//! Value predicates: the optional `where` of a clause, which narrows it to the events whose
//! property (event, user or built-in field) holds, or does not hold, given values. The
//! operators and their meaning are Amplitude's segmentation operators: `is` compares exactly,
//! `contains` looks for a substring ignoring case, several values are alternatives (OR), an
//! array matches when one of its elements does, and the negations also match an event
//! without the property.
//!
//! The values of a predicate are property values: they live in the task's stored spec only
//! while the task may still run. The audit and receipts get [`TaskSpec::redacted`]'s salted
//! digests instead, and a completed task's stored spec is redacted too.
//!
//! [`TaskSpec::redacted`]: crate::TaskSpec::redacted

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use lethe_event::StrField;
use lethe_store::base_column;

/// Most values one predicate may list.
pub const MAX_VALUES: usize = 100;
/// Longest value, in characters (Amplitude truncates longer string properties).
pub const MAX_VALUE_CHARS: usize = 1024;

/// The property a predicate reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "name", rename_all = "snake_case")]
pub enum Subject {
    /// A key of `event_properties`.
    Event(String),
    /// A key of the user's properties as of the event.
    User(String),
    /// A standard field of the event: `user_id`, `device_id`, `platform`, `country`, …
    /// (the names of [`built_in_fields`]).
    BuiltIn(String),
}

/// The built-in fields a predicate may read, by their `/2/httpapi` names (which are also
/// their segment columns).
pub fn built_in_fields() -> impl Iterator<Item = &'static str> {
    [base_column::USER_ID, base_column::DEVICE_ID]
        .into_iter()
        .chain(StrField::ALL.iter().map(|f| f.wire))
}

/// A predicate's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "is")]
    Is,
    #[serde(rename = "is not")]
    IsNot,
    #[serde(rename = "contains")]
    Contains,
    #[serde(rename = "does not contain")]
    DoesNotContain,
    #[serde(rename = "is set")]
    IsSet,
    #[serde(rename = "is not set")]
    IsNotSet,
}

impl Op {
    /// Every operator, as the API spells them.
    pub const ALL: [Op; 6] = [
        Op::Is,
        Op::IsNot,
        Op::Contains,
        Op::DoesNotContain,
        Op::IsSet,
        Op::IsNotSet,
    ];

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Is => "is",
            Op::IsNot => "is not",
            Op::Contains => "contains",
            Op::DoesNotContain => "does not contain",
            Op::IsSet => "is set",
            Op::IsNotSet => "is not set",
        }
    }

    /// Whether the operator compares against values (the `set` ones take none).
    pub fn takes_values(self) -> bool {
        !matches!(self, Op::IsSet | Op::IsNotSet)
    }

    /// Whether an event without the property can match: the negations do.
    pub fn matches_unset(self) -> bool {
        matches!(self, Op::IsNot | Op::DoesNotContain | Op::IsNotSet)
    }
}

/// A clause's `where`: `{"property": {"type": "event", "name": "env"}, "op": "is",
/// "values": ["staging"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Predicate {
    pub property: Subject,
    pub op: Op,
    /// The values compared against, while the task may run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// In place of `values` once redacted: each value's salted SHA-256, hex.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub value_digests: Vec<String>,
}

impl Predicate {
    /// Whether the values were replaced by digests: such a predicate cannot be evaluated.
    pub fn is_redacted(&self) -> bool {
        self.values.is_empty() && !self.value_digests.is_empty()
    }

    /// The predicate with its values replaced by salted digests.
    pub fn redacted(&self, salt: &[u8]) -> Predicate {
        let mut values = self.value_digests.clone();
        values.extend(self.values.iter().map(|v| value_digest(salt, v)));
        Predicate {
            property: self.property.clone(),
            op: self.op,
            values: Vec::new(),
            value_digests: values,
        }
    }
}

/// The salted SHA-256 of a predicate value, hex: what the audit and receipts show of it.
pub fn value_digest(salt: &[u8], value: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(salt);
    hash.update(value.as_bytes());
    hex::encode(hash.finalize())
}

/// A predicate ready to test cells: values indexed for exact and substring comparison.
#[derive(Debug, Clone)]
pub struct Test {
    op: Op,
    exact: HashSet<String>,
    /// The values lowercased, for `contains` (which ignores case, as Amplitude's does).
    needles: Vec<String>,
}

impl Test {
    /// Prepares `predicate` for testing.
    pub fn new(predicate: &Predicate) -> Test {
        Test {
            op: predicate.op,
            exact: predicate.values.iter().cloned().collect(),
            needles: predicate.values.iter().map(|v| v.to_lowercase()).collect(),
        }
    }

    /// Whether an event whose property cell is `cell` passes: `None` when the event has no
    /// such property; property cells are JSON text, built-in ones plain text.
    pub fn passes(&self, cell: Option<Cell<'_>>) -> bool {
        let Some(cell) = cell else {
            return self.op.matches_unset();
        };
        let texts = cell.texts();
        let any = |f: &dyn Fn(&str) -> bool| texts.iter().any(|t| f(t));
        match self.op {
            Op::IsSet => true,
            Op::IsNotSet => false,
            Op::Is => any(&|t| self.exact.contains(t)),
            Op::IsNot => !any(&|t| self.exact.contains(t)),
            Op::Contains => any(&|t| self.contains(t)),
            Op::DoesNotContain => !any(&|t| self.contains(t)),
        }
    }

    fn contains(&self, text: &str) -> bool {
        let text = text.to_lowercase();
        self.needles.iter().any(|n| text.contains(n.as_str()))
    }
}

/// One stored cell of a predicate's property.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    /// A property value as stored: compact JSON text.
    Json(&'a str),
    /// A built-in field: plain text.
    Text(&'a str),
}

impl Cell<'_> {
    /// The texts the cell is compared as: a string's own text, each element of an array, and
    /// the JSON text of anything else (`42`, `true`, `null`).
    fn texts(self) -> Vec<String> {
        let json = match self {
            Cell::Text(text) => return vec![text.to_string()],
            Cell::Json(json) => json,
        };
        let text = |v: Value| match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Array(items)) => items.into_iter().map(text).collect(),
            Ok(value) => vec![text(value)],
            Err(_) => vec![json.to_string()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(op: Op, values: &[&str]) -> Test {
        Test::new(&Predicate {
            property: Subject::Event("p".into()),
            op,
            values: values.iter().map(|v| v.to_string()).collect(),
            value_digests: Vec::new(),
        })
    }

    #[test]
    fn operators_mean_what_amplitude_means() {
        let staging = Some(Cell::Json(r#""staging""#));
        assert!(test(Op::Is, &["prod", "staging"]).passes(staging));
        assert!(!test(Op::Is, &["Staging"]).passes(staging), "is is exact");
        assert!(!test(Op::Is, &["x"]).passes(None));
        assert!(test(Op::IsNot, &["prod"]).passes(staging));
        assert!(test(Op::IsNot, &["prod"]).passes(None), "unset is not prod");
        assert!(!test(Op::IsNot, &["staging"]).passes(staging));
        let email = Some(Cell::Json(r#""Ann@Test.Example""#));
        assert!(
            test(Op::Contains, &["@test.example"]).passes(email),
            "ignores case"
        );
        assert!(!test(Op::DoesNotContain, &["@TEST.example"]).passes(email));
        assert!(test(Op::DoesNotContain, &["@test.example"]).passes(None));
        assert!(!test(Op::Contains, &["@test.example"]).passes(None));
        assert!(test(Op::IsSet, &[]).passes(Some(Cell::Json("null"))));
        assert!(!test(Op::IsSet, &[]).passes(None));
        assert!(test(Op::IsNotSet, &[]).passes(None));
        // Numbers and booleans compare as their JSON text; arrays element by element.
        assert!(test(Op::Is, &["42"]).passes(Some(Cell::Json("42"))));
        assert!(test(Op::Is, &["true"]).passes(Some(Cell::Json("true"))));
        let tags = Some(Cell::Json(r#"["a","b",3]"#));
        assert!(test(Op::Is, &["b"]).passes(tags));
        assert!(test(Op::Is, &["3"]).passes(tags));
        assert!(!test(Op::IsNot, &["a"]).passes(tags));
        // Built-in fields are plain text, never parsed as JSON.
        assert!(test(Op::Is, &["42"]).passes(Some(Cell::Text("42"))));
        assert!(!test(Op::Is, &["42"]).passes(Some(Cell::Text("\"42\""))));
    }

    #[test]
    fn a_redacted_predicate_holds_digests_only() {
        let p = Predicate {
            property: Subject::User("email".into()),
            op: Op::Contains,
            values: vec!["@test.example".into()],
            value_digests: Vec::new(),
        };
        let r = p.redacted(b"salt");
        assert!(r.is_redacted() && !p.is_redacted());
        assert_eq!(
            r.value_digests,
            vec![value_digest(b"salt", "@test.example")]
        );
        assert_ne!(value_digest(b"salt", "x"), value_digest(b"pepper", "x"));
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("test.example"), "{text}");
        assert_eq!(r.redacted(b"salt"), r, "redacting twice changes nothing");
    }
}
