//! Amplitude's user-property operations applied to a user profile.
//!
//! A profile maps property keys to compact JSON text. Each operation follows Amplitude's
//! documented meaning; plain keys (no `$` operation) behave as `$set`.

use std::collections::BTreeMap;

use serde_json::Value;

/// A user's current user properties: key → compact JSON text.
pub type Profile = BTreeMap<String, String>;

/// Applies one event's `user_properties` object (operations or plain keys) to `profile`.
/// Returns whether the profile changed.
pub fn apply_user_property_ops(profile: &mut Profile, ops: &[(String, Value)]) -> bool {
    let mut changed = false;
    for (op, arg) in ops {
        match op.as_str() {
            "$clearAll" => {
                changed |= !profile.is_empty();
                profile.clear();
            }
            "$set" | "$setOnce" | "$add" | "$append" | "$prepend" | "$unset" | "$remove"
            | "$preInsert" | "$postInsert" => {
                if let Value::Object(map) = arg {
                    for (key, value) in map {
                        changed |= apply_one(profile, op, key, value);
                    }
                }
            }
            _ => changed |= apply_one(profile, "$set", op, arg),
        }
    }
    changed
}

/// Applies one operation to one key; returns whether the profile changed.
fn apply_one(profile: &mut Profile, op: &str, key: &str, value: &Value) -> bool {
    let current = profile
        .get(key)
        .and_then(|t| serde_json::from_str::<Value>(t).ok());
    let next = match op {
        "$set" => Some(value.clone()),
        "$setOnce" => current.clone().or_else(|| Some(value.clone())),
        "$unset" => None,
        "$add" => Some(add(current.as_ref(), value)),
        "$append" => Some(concat(current, value, false, false)),
        "$prepend" => Some(concat(current, value, true, false)),
        "$postInsert" => Some(concat(current, value, false, true)),
        "$preInsert" => Some(concat(current, value, true, true)),
        "$remove" => current.map(|c| remove(c, value)),
        _ => current.clone(),
    };
    match next {
        Some(v) => {
            let text = v.to_string();
            if profile.get(key) == Some(&text) {
                return false;
            }
            profile.insert(key.to_string(), text);
            true
        }
        None => profile.remove(key).is_some(),
    }
}

fn as_number(v: Option<&Value>) -> f64 {
    match v {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => s.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn add(current: Option<&Value>, delta: &Value) -> Value {
    let sum = as_number(current) + as_number(Some(delta));
    if sum.fract() == 0.0 && sum.abs() < 9.0e15 {
        Value::from(sum as i64)
    } else {
        Value::from(sum)
    }
}

fn into_list(v: Option<Value>) -> Vec<Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(other) => vec![other],
    }
}

fn concat(current: Option<Value>, value: &Value, front: bool, unique: bool) -> Value {
    let mut list = into_list(current);
    let mut items = into_list(Some(value.clone()));
    if unique {
        items.retain(|item| !list.contains(item));
    }
    if front {
        items.extend(list);
        list = items;
    } else {
        list.extend(items);
    }
    Value::Array(list)
}

fn remove(current: Value, value: &Value) -> Value {
    let drop = into_list(Some(value.clone()));
    match current {
        Value::Array(a) => Value::Array(a.into_iter().filter(|x| !drop.contains(x)).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops(v: Value) -> Vec<(String, Value)> {
        v.as_object().unwrap().clone().into_iter().collect()
    }

    #[test]
    fn operations_follow_amplitude() {
        let mut p = Profile::new();
        apply_user_property_ops(&mut p, &ops(json!({"plan":"free","age":30})));
        apply_user_property_ops(
            &mut p,
            &ops(
                json!({"$set":{"plan":"pro"},"$setOnce":{"plan":"x","first":"2024"},
                "$add":{"age":2,"logins":1},"$append":{"tags":"a"},"$prepend":{"tags":"z"}}),
            ),
        );
        assert_eq!(p["plan"], "\"pro\"");
        assert_eq!(p["first"], "\"2024\"");
        assert_eq!(p["age"], "32");
        assert_eq!(p["logins"], "1");
        assert_eq!(p["tags"], r#"["z","a"]"#);
        apply_user_property_ops(
            &mut p,
            &ops(json!({"$remove":{"tags":"z"},"$unset":{"age":"-"},"$postInsert":{"tags":"a"}})),
        );
        assert_eq!(p["tags"], r#"["a"]"#);
        assert!(!p.contains_key("age"));
        assert!(apply_user_property_ops(
            &mut p,
            &ops(json!({"$clearAll":"-"}))
        ));
        assert!(p.is_empty());
        assert!(!apply_user_property_ops(
            &mut p,
            &ops(json!({"$unset":{"nothing":"-"}}))
        ));
    }
}
