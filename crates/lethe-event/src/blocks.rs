//! A project's block list: event types and property keys that ingestion drops, so that what
//! a deletion removed does not come back from an old app build. A blocked event is accepted
//! (the client sees a 200, as with Amplitude's blocking) and never stored; a blocked key is
//! taken out of the event's properties and out of the profile or group operations it carries.

use std::collections::HashSet;

use serde_json::Value;

use crate::wire::ParsedEvent;

/// The names one project blocks, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockList {
    pub event_types: HashSet<String>,
    pub event_properties: HashSet<String>,
    pub user_properties: HashSet<String>,
    pub group_properties: HashSet<String>,
}

/// What the block list did to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// Nothing of it is blocked.
    Nothing,
    /// Its event type is blocked: it is not stored at all.
    Event,
    /// This many property keys were taken out of it.
    Keys(usize),
}

impl BlockList {
    /// Whether it blocks nothing.
    pub fn is_empty(&self) -> bool {
        self.event_types.is_empty()
            && self.event_properties.is_empty()
            && self.user_properties.is_empty()
            && self.group_properties.is_empty()
    }

    /// Applies the list to `event`: says whether to drop it, else takes the blocked keys out.
    pub fn apply(&self, event: &mut ParsedEvent) -> Blocked {
        if self.event_types.contains(&event.event_type) {
            return Blocked::Event;
        }
        let mut removed = retain_props(&mut event.event_properties, &self.event_properties);
        removed += strip_ops(&mut event.user_property_ops, &self.user_properties);
        removed += strip_ops(&mut event.group_property_ops, &self.group_properties);
        if let Some(snapshot) = &mut event.user_snapshot {
            removed += retain_props(snapshot, &self.user_properties);
        }
        if let Some(snapshot) = &mut event.group_snapshot {
            removed += retain_props(snapshot, &self.group_properties);
        }
        match removed {
            0 => Blocked::Nothing,
            n => Blocked::Keys(n),
        }
    }
}

fn retain_props(props: &mut crate::Props, blocked: &HashSet<String>) -> usize {
    let before = props.len();
    props.retain(|(key, _)| !blocked.contains(key));
    before - props.len()
}

/// Takes blocked keys out of a `user_properties` (or `group_properties`) object: plain keys,
/// and the keys inside each operation (`$set`, `$unset`, …); an operation left empty goes.
fn strip_ops(ops: &mut Vec<(String, Value)>, blocked: &HashSet<String>) -> usize {
    if blocked.is_empty() {
        return 0;
    }
    let mut removed = 0;
    ops.retain_mut(|(key, value)| {
        if !key.starts_with('$') {
            let keep = !blocked.contains(key);
            removed += usize::from(!keep);
            return keep;
        }
        let Value::Object(fields) = value else {
            return true;
        };
        let before = fields.len();
        fields.retain(|field, _| !blocked.contains(field));
        removed += before - fields.len();
        !(fields.is_empty() && before > 0)
    });
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{parse_event, Shape};

    fn blocks(kind: fn(&mut BlockList) -> &mut HashSet<String>, names: &[&str]) -> BlockList {
        let mut list = BlockList::default();
        kind(&mut list).extend(names.iter().map(|n| n.to_string()));
        list
    }

    fn event(json: &str) -> ParsedEvent {
        parse_event(json, 5, Shape::Event).unwrap()
    }

    #[test]
    fn a_blocked_type_drops_the_event_and_other_types_pass() {
        let list = blocks(|l| &mut l.event_types, &["Test Flood"]);
        let mut flood = event(r#"{"event_type":"Test Flood","user_id":"user-1"}"#);
        let mut other = event(r#"{"event_type":"Signup","user_id":"user-1"}"#);
        assert_eq!(list.apply(&mut flood), Blocked::Event);
        assert_eq!(list.apply(&mut other), Blocked::Nothing);
    }

    #[test]
    fn blocked_keys_leave_properties_and_operations_and_empty_operations_go() {
        let mut list = blocks(|l| &mut l.user_properties, &["email", "phone"]);
        list.event_properties.insert("email".into());
        let mut e = event(
            r#"{"event_type":"Signup","user_id":"user-1",
                "event_properties":{"email":"a@b.c","plan":"pro"},
                "user_properties":{"$set":{"email":"a@b.c","tier":"gold"},"$unset":{"phone":"-"},"phone":"1"}}"#,
        );
        assert_eq!(list.apply(&mut e), Blocked::Keys(4));
        let keys: Vec<&str> = e.event_properties.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["plan"]);
        assert_eq!(e.user_property_ops.len(), 1, "{:?}", e.user_property_ops);
        assert_eq!(e.user_property_ops[0].0, "$set");
        assert_eq!(
            e.user_property_ops[0].1,
            serde_json::json!({"tier": "gold"})
        );
    }
}
