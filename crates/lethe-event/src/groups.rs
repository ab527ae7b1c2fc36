//! Groups (Amplitude's accounts): the groups an event names, and group properties.
//!
//! An event names its groups in `groups` (`{"org id": "acme"}` or a list of values). Each
//! group (project, type, value) has properties changed by the Group Identify API with the
//! same operations as user properties; an event stores the properties of its groups at
//! that moment, exported as Amplitude does: `{"org id": {"acme": {"plan": "pro"}}}`.
//!
//! The store keeps one column per group-property key (as for user properties), so a
//! deletion can remove a key by its name: an event's group properties are held split by
//! key, each value the JSON object `{type: {value: v}}` of the groups that have the key.

use serde_json::{Map, Value};

use crate::limits::{Limit, MAX_GROUP_TYPES, MAX_GROUP_VALUES};
use crate::{Profile, Props};

/// One group: its type and value.
pub type GroupKey = (String, String);

/// The groups an event's canonical `groups` text names, in order, within the limits: each
/// type names a string, a number, or a list of them.
pub fn parse_groups(text: &str) -> Result<Vec<GroupKey>, Limit> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
        return Err(Limit::Groups);
    };
    if map.len() > MAX_GROUP_TYPES {
        return Err(Limit::Groups);
    }
    let mut groups = Vec::new();
    for (group_type, values) in map {
        let list = match values {
            Value::Array(list) => list,
            one => vec![one],
        };
        for value in list {
            let value = match value {
                Value::String(s) if !s.is_empty() => s,
                Value::Number(n) => n.to_string(),
                _ => return Err(Limit::Groups),
            };
            groups.push((group_type.clone(), value));
        }
    }
    if groups.len() > MAX_GROUP_VALUES {
        return Err(Limit::Groups);
    }
    Ok(groups)
}

/// Splits groups' properties by key: `[(key, {type: {value: v}})]`, sorted by key.
pub fn split<'a>(groups: impl IntoIterator<Item = (&'a GroupKey, &'a Profile)>) -> Props {
    let mut by_key: std::collections::BTreeMap<&str, Map<String, Value>> = Default::default();
    for ((group_type, group_value), profile) in groups {
        for (key, value) in profile {
            let value = serde_json::from_str(value).unwrap_or(Value::Null);
            let types = by_key.entry(key).or_default();
            let values = types
                .entry(group_type.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(values) = values {
                values.insert(group_value.clone(), value);
            }
        }
    }
    by_key
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::Object(v).to_string()))
        .collect()
}

/// Splits an exported `group_properties` object (`{type: {value: {key: v}}}`) by key;
/// `None` when it is not of that shape.
pub fn split_exported(nested: &Value) -> Option<Props> {
    let mut profiles: Vec<(GroupKey, Profile)> = Vec::new();
    for (group_type, values) in nested.as_object()? {
        for (group_value, props) in values.as_object()? {
            let profile = props
                .as_object()?
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect();
            profiles.push(((group_type.clone(), group_value.clone()), profile));
        }
    }
    Some(split(profiles.iter().map(|(g, p)| (g, p))))
}

/// The group properties of an event as Amplitude exports them: `{type: {value: {key: v}}}`.
pub fn merge(props: &Props) -> Value {
    let mut nested = Map::new();
    for (key, text) in props {
        let Ok(Value::Object(types)) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        for (group_type, values) in types {
            let Value::Object(values) = values else {
                continue;
            };
            let by_value = nested
                .entry(group_type)
                .or_insert_with(|| Value::Object(Map::new()));
            for (group_value, value) in values {
                if let Value::Object(by_value) = by_value {
                    let props = by_value
                        .entry(group_value)
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(props) = props {
                        props.insert(key.clone(), value);
                    }
                }
            }
        }
    }
    Value::Object(nested)
}

/// The properties one group has in an event's split group properties.
pub fn profile_of(props: &Props, (group_type, group_value): &GroupKey) -> Profile {
    props
        .iter()
        .filter_map(|(key, text)| {
            let types: Value = serde_json::from_str(text).ok()?;
            let value = types.get(group_type)?.get(group_value)?;
            Some((key.clone(), value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn groups_are_read_within_the_limits() {
        let groups = parse_groups(r#"{"org":"acme","team":["a","b"],"n":7}"#).unwrap();
        assert_eq!(groups.len(), 4);
        assert_eq!(groups[0], ("n".into(), "7".into()));
        assert_eq!(parse_groups(r#"{"org":""}"#), Err(Limit::Groups));
        assert_eq!(parse_groups(r#"{"org":{"x":1}}"#), Err(Limit::Groups));
        let many: Map<String, Value> = (0..11).map(|i| (format!("t{i}"), json!("v"))).collect();
        assert_eq!(
            parse_groups(&Value::Object(many).to_string()),
            Err(Limit::Groups)
        );
    }

    #[test]
    fn split_and_merge_round_trip_the_export_shape() {
        let exported = json!({"org": {"acme": {"plan": "pro", "seats": 3}, "initech": {"plan": "free"}},
                              "team": {"a": {"lead": "x"}}});
        let split = split_exported(&exported).unwrap();
        assert_eq!(
            split.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["lead", "plan", "seats"]
        );
        assert_eq!(split[1].1, r#"{"org":{"acme":"pro","initech":"free"}}"#);
        assert_eq!(merge(&split), exported);
        let acme = profile_of(&split, &("org".into(), "acme".into()));
        assert_eq!(acme.get("seats").map(String::as_str), Some("3"));
        assert_eq!(split_exported(&json!({"org": "acme"})), None);
    }
}
