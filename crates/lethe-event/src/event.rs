//! The stored event: what the WAL, the memtable and the Parquet segments hold.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Property key → value as compact JSON text. Values keep their JSON type exactly (a number
/// stays a number in the export) while the store handles every value as one string column.
pub type Props = Vec<(String, String)>;

/// One accepted event, with server-assigned identity and the user's full properties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Server-assigned (or imported) event UUID.
    pub uuid: u128,
    /// Event type name.
    pub event_type: String,
    /// When the server accepted the event, UTC milliseconds: partitions and deletion ranges use it.
    pub server_upload_time: i64,
    /// Client event time (`time`), defaulting to the upload time.
    pub time: i64,
    /// Stable per-user integer id (see ARCHITECTURE.md, identity rules).
    pub amplitude_id: i64,
    /// The client's user id, when sent.
    pub user_id: Option<String>,
    /// The client's device id, when sent.
    pub device_id: Option<String>,
    /// Deduplication key.
    pub insert_id: Option<String>,
    /// Session start (ms), `-1` for none.
    pub session_id: Option<i64>,
    /// Client's event counter.
    pub event_id: Option<i64>,
    /// Standard text fields present on the event, by index into [`crate::StrField::ALL`].
    pub strs: Vec<(u8, String)>,
    /// Standard numeric fields present on the event, by index into [`crate::NumField::ALL`].
    pub nums: Vec<(u8, f64)>,
    /// `groups` object as JSON text.
    pub groups: Option<String>,
    /// The properties of the event's groups at that moment, split by key (see
    /// [`crate::groups`]): `(key, {type: {value: v}})`.
    #[serde(
        default,
        deserialize_with = "group_properties_of_any_version",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub group_properties: Props,
    /// Event properties sent with the event.
    pub event_properties: Props,
    /// The user's full user properties as of this event (shared between events of one user
    /// while the profile does not change).
    pub user_properties: Arc<Props>,
    /// Documented fields kept as sent without a column of their own (`plan`,
    /// `ingestion_metadata`, `paying`, an import's other export fields): a JSON object
    /// whose members the export renders over its defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<String>,
    /// Sent with `$skip_user_properties_sync`: the profile did not take this event's user
    /// properties, so a WAL replay must not either.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_user_properties_sync: bool,
    /// An identification (Identify API, Group Identify API, `$groupidentify`): it changed
    /// profiles or groups and is never stored or shown as an event.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub profile_only: bool,
}

/// WAL records written before group properties were split by key held the exported object
/// (or null): such a record replays with its groups' properties split as today.
fn group_properties_of_any_version<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Props, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum AnyVersion {
        Split(Props),
        Exported(String),
        Absent(()),
    }
    Ok(match AnyVersion::deserialize(d)? {
        AnyVersion::Split(props) => props,
        AnyVersion::Exported(text) => serde_json::from_str(&text)
            .ok()
            .and_then(|v| crate::groups::split_exported(&v))
            .unwrap_or_default(),
        AnyVersion::Absent(()) => Props::new(),
    })
}

impl Event {
    /// Renders the event as one line of Amplitude's export format.
    pub fn to_export_json(&self, app: i64) -> serde_json::Value {
        use serde_json::{json, Map, Value};
        let time = crate::format_export_time;
        let obj = |props: &Props| -> Value {
            let mut m = Map::new();
            for (k, v) in props {
                m.insert(k.clone(), serde_json::from_str(v).unwrap_or(Value::Null));
            }
            Value::Object(m)
        };
        let raw = |text: &Option<String>| -> Value {
            text.as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or_else(|| json!({}))
        };
        let mut out = json!({
            "app": app,
            "uuid": uuid::Uuid::from_u128(self.uuid).to_string(),
            "event_type": self.event_type,
            "amplitude_id": self.amplitude_id,
            "user_id": self.user_id,
            "device_id": self.device_id,
            "$insert_id": self.insert_id,
            "session_id": self.session_id.unwrap_or(-1),
            "event_id": self.event_id,
            "event_time": time(self.time),
            "client_event_time": time(self.time),
            "server_upload_time": time(self.server_upload_time),
            "server_received_time": time(self.server_upload_time),
            "client_upload_time": time(self.server_upload_time),
            "processed_time": time(self.server_upload_time),
            "event_properties": obj(&self.event_properties),
            "user_properties": obj(&self.user_properties),
            "groups": raw(&self.groups),
            "group_properties": crate::groups::merge(&self.group_properties),
            "data": {},
            "paying": null,
            "sample_rate": null,
        });
        let map = out.as_object_mut().expect("export line is an object");
        for field in crate::StrField::ALL {
            map.insert(field.export.to_string(), Value::Null);
        }
        for field in crate::NumField::ALL {
            map.insert(field.name.to_string(), Value::Null);
        }
        for (i, v) in &self.strs {
            map.insert(
                crate::StrField::ALL[*i as usize].export.to_string(),
                json!(v),
            );
        }
        for (i, v) in &self.nums {
            let field = crate::NumField::ALL[*i as usize];
            map.insert(field.name.to_string(), field.render(*v));
        }
        if let Some(Value::Object(extra)) = self
            .extra
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
        {
            map.extend(extra);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_records_of_the_previous_version_still_read() {
        let mut e: serde_json::Value = serde_json::json!({
            "uuid": 1, "event_type": "e", "server_upload_time": 1, "time": 1, "amplitude_id": 1,
            "user_id": null, "device_id": "device-1", "insert_id": null, "session_id": null,
            "event_id": null, "strs": [], "nums": [], "groups": "{\"org\":\"acme\"}",
            "group_properties": "{\"org\":{\"acme\":{\"plan\":\"pro\"}}}",
            "event_properties": [], "user_properties": []
        });
        let old: Event = serde_json::from_value(e.clone()).unwrap();
        assert_eq!(
            old.group_properties,
            vec![("plan".to_string(), r#"{"org":{"acme":"pro"}}"#.to_string())]
        );
        e["group_properties"] = serde_json::Value::Null;
        let none: Event = serde_json::from_value(e).unwrap();
        assert!(none.group_properties.is_empty());
        let again: Event = serde_json::from_str(&serde_json::to_string(&old).unwrap()).unwrap();
        assert_eq!(again, old);
    }
}
