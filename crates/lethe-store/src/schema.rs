//! The segment schema's property columns: one column per property key, named by its kind's
//! prefix and its catalog id (`e_12`, `u_3`, `g_7`). Every crate that names such a column
//! asks here, so the spelling lives in one place.

use arrow_array::{Array, RecordBatch, StringArray};
use arrow_schema::ArrowError;
use lethe_event::{Event, Props};
use lethe_meta::{CatalogKind, SegmentRecord};

use crate::tail;

/// The base columns of every segment, spelled here only (the property columns are
/// [`PropertyKind`]'s).
pub mod base_column {
    pub const UUID: &str = "uuid";
    pub const EVENT_TYPE: &str = "event_type";
    pub const SERVER_UPLOAD_TIME: &str = "server_upload_time";
    pub const EVENT_TIME: &str = "event_time";
    pub const AMPLITUDE_ID: &str = "amplitude_id";
    pub const USER_ID: &str = "user_id";
    pub const DEVICE_ID: &str = "device_id";
    pub const INSERT_ID: &str = "insert_id";
    pub const SESSION_ID: &str = "session_id";
    pub const EVENT_ID: &str = "event_id";
    pub const GROUPS: &str = "groups";
    pub const EXTRA: &str = "extra";
}

/// The three kinds of property a segment holds one column per key of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PropertyKind {
    /// `event_properties`.
    Event,
    /// The user's properties as of the event.
    User,
    /// The event's groups' properties as of the event.
    Group,
}

impl PropertyKind {
    pub const ALL: [PropertyKind; 3] =
        [PropertyKind::Event, PropertyKind::User, PropertyKind::Group];

    /// The prefix of the kind's column names.
    fn prefix(self) -> &'static str {
        match self {
            PropertyKind::Event => "e_",
            PropertyKind::User => "u_",
            PropertyKind::Group => "g_",
        }
    }

    /// The column of the key with catalog id `id`.
    pub fn column(self, id: i64) -> String {
        format!("{}{id}", self.prefix())
    }

    /// The column the kind's long-tail keys share (see [`crate::tail`]).
    pub fn tail_column(self) -> &'static str {
        match self {
            PropertyKind::Event => "e_tail",
            PropertyKind::User => "u_tail",
            PropertyKind::Group => "g_tail",
        }
    }

    /// The columns that can hold key `id` in a segment: its own, and the kind's tail.
    pub fn columns_of(self, id: i64) -> [String; 2] {
        [self.column(id), self.tail_column().to_string()]
    }

    /// The values of key `id` in `batch`, one JSON text per row (null where absent), from
    /// its own column or the kind's tail column; `None` when the batch has neither.
    pub fn values(self, batch: &RecordBatch, id: i64) -> Result<Option<StringArray>, ArrowError> {
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|a| a.as_any().downcast_ref::<StringArray>())
        };
        if let Some(own) = text(&self.column(id)) {
            return Ok(Some(own.clone()));
        }
        match text(self.tail_column()) {
            Some(tail) => Ok(Some(
                tail::values(tail, id).map_err(ArrowError::ParseError)?,
            )),
            None => Ok(None),
        }
    }

    /// The kind and catalog id of a property column, if `name` is one.
    pub fn of_column(name: &str) -> Option<(PropertyKind, i64)> {
        PropertyKind::ALL.into_iter().find_map(|kind| {
            let id = name.strip_prefix(kind.prefix())?.parse().ok()?;
            Some((kind, id))
        })
    }

    /// The catalog kind that names the keys.
    pub fn catalog(self) -> CatalogKind {
        match self {
            PropertyKind::Event => CatalogKind::EventProperty,
            PropertyKind::User => CatalogKind::UserProperty,
            PropertyKind::Group => CatalogKind::GroupProperty,
        }
    }

    /// The catalog ids of the kind's keys a segment holds, from its manifest record.
    pub fn ids(self, record: &SegmentRecord) -> &[i64] {
        match self {
            PropertyKind::Event => &record.event_properties,
            PropertyKind::User => &record.user_properties,
            PropertyKind::Group => &record.group_properties,
        }
    }

    /// The event's properties of this kind.
    pub fn of_event(self, e: &Event) -> &Props {
        match self {
            PropertyKind::Event => &e.event_properties,
            PropertyKind::User => &e.user_properties,
            PropertyKind::Group => &e.group_properties,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_name_their_kind_and_id() {
        for kind in PropertyKind::ALL {
            assert_eq!(PropertyKind::of_column(&kind.column(42)), Some((kind, 42)));
        }
        assert_eq!(PropertyKind::of_column("event_type"), None);
        assert_eq!(PropertyKind::of_column("e_x"), None);
    }
}
