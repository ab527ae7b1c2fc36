//! The long tail of property keys: in a segment, a key that few of its events carry has no
//! column of its own; it shares its kind's tail column (`e_tail`, `u_tail`, `g_tail`), which
//! holds per row a JSON object from catalog id to the value's JSON text, e.g.
//! `{"17":"pro","230":3}` (keys in ascending id order; null when the row has no tail key).
//! Frequent keys keep their own column (see [`split`]), so a segment of a project with
//! thousands of keys stays a few hundred columns wide, and removing a tail key rewrites one
//! column, never the others.

use std::collections::{BTreeMap, HashMap};

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, StringArray};
use serde_json::value::RawValue;

/// Which keys of a segment get a column of their own: a key is dense when at least 1 in
/// `dense_one_in` of the segment's events carry it (0: no minimum) and it is among the
/// `max_dense_keys` most frequent keys of its kind there; the others share the tail column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub dense_one_in: usize,
    pub max_dense_keys: usize,
}

impl Default for Layout {
    /// Chosen by measurement: see ARCHITECTURE.md, "Segment schema".
    fn default() -> Self {
        Self {
            dense_one_in: 100,
            max_dense_keys: 256,
        }
    }
}

impl Layout {
    /// Splits a segment's keys of one kind (catalog id → events carrying it) into the dense
    /// ones (own columns) and the rest (the tail column), for a segment of `rows` events.
    pub fn split(&self, counts: &HashMap<i64, usize>, rows: usize) -> (Vec<i64>, Vec<i64>) {
        let mut by_count: Vec<(i64, usize)> = counts.iter().map(|(id, n)| (*id, *n)).collect();
        // Most frequent first; ties by id, so the split is the same for the same events.
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let (mut dense, mut tail) = (Vec::new(), Vec::new());
        for (rank, (id, n)) in by_count.into_iter().enumerate() {
            let frequent = self.dense_one_in == 0 || n * self.dense_one_in >= rows;
            match rank < self.max_dense_keys && frequent {
                true => dense.push(id),
                false => tail.push(id),
            }
        }
        dense.sort_unstable();
        tail.sort_unstable();
        (dense, tail)
    }
}

/// One row's tail object from its (id, value JSON) pairs; `None` when there are none.
pub fn encode(entries: &mut [(i64, &str)]) -> Option<String> {
    if entries.is_empty() {
        return None;
    }
    entries.sort_unstable_by_key(|(id, _)| *id);
    let mut text = String::from("{");
    for (i, (id, value)) in entries.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push('"');
        text.push_str(&id.to_string());
        text.push_str("\":");
        text.push_str(value);
    }
    text.push('}');
    Some(text)
}

/// The (id, value JSON) pairs of one row's tail object.
pub fn entries(text: &str) -> Result<Vec<(i64, &str)>, String> {
    let object: BTreeMap<&str, &RawValue> =
        serde_json::from_str(text).map_err(|e| format!("a tail object does not parse: {e}"))?;
    object
        .into_iter()
        .map(|(id, value)| {
            let id = id
                .parse()
                .map_err(|_| "a tail object has a key that is not a catalog id".to_string())?;
            Ok((id, value.get()))
        })
        .collect()
}

/// Whether a tail object may hold key `id` (a cheap test before parsing).
fn may_hold(text: &str, id: i64) -> bool {
    memchr::memmem::find(text.as_bytes(), format!("\"{id}\":").as_bytes()).is_some()
}

/// The values of key `id` in a tail column, one per row (null where the row lacks it).
pub fn values(tail: &StringArray, id: i64) -> Result<StringArray, String> {
    let mut out = StringBuilder::with_capacity(tail.len(), 0);
    for row in 0..tail.len() {
        let value = match tail.is_valid(row) && may_hold(tail.value(row), id) {
            true => entries(tail.value(row))?
                .into_iter()
                .find(|(key, _)| *key == id)
                .map(|(_, v)| v.to_string()),
            false => None,
        };
        out.append_option(value);
    }
    Ok(out.finish())
}

/// The tail column with `removed` keys taken out of the rows marked for each (a row left
/// with no key becomes null).
pub fn without(tail: &StringArray, removed: &[(i64, &[bool])]) -> Result<StringArray, String> {
    let mut out = StringBuilder::with_capacity(tail.len(), tail.value_data().len());
    for row in 0..tail.len() {
        if !tail.is_valid(row) {
            out.append_null();
            continue;
        }
        let text = tail.value(row);
        let gone: Vec<i64> = removed
            .iter()
            .filter(|(_, rows)| rows[row])
            .map(|(id, _)| *id)
            .collect();
        if gone.is_empty() {
            out.append_value(text);
            continue;
        }
        let mut kept: Vec<(i64, &str)> = entries(text)?
            .into_iter()
            .filter(|(id, _)| !gone.contains(id))
            .collect();
        out.append_option(encode(&mut kept));
    }
    Ok(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequent_keys_get_columns_and_rare_ones_share_the_tail() {
        let layout = Layout::default();
        let counts = HashMap::from([(1, 500), (2, 10), (3, 9), (4, 1000)]);
        assert_eq!(layout.split(&counts, 1000), (vec![1, 2, 4], vec![3]));
        let many: HashMap<i64, usize> = (0..300).map(|id| (id, 1000 - id as usize)).collect();
        let (dense, tail) = layout.split(&many, 1000);
        assert_eq!(dense.len(), layout.max_dense_keys);
        assert_eq!(tail, (256..300).collect::<Vec<_>>(), "the least frequent");
        let every_key = Layout {
            dense_one_in: 0,
            max_dense_keys: usize::MAX,
        };
        assert_eq!(every_key.split(&counts, 1000), (vec![1, 2, 3, 4], vec![]));
    }

    #[test]
    fn a_damaged_tail_object_is_an_error_never_a_silent_gap() {
        let damaged = StringArray::from(vec![Some(r#"{"17":"a""#), Some(r#"{"x":1}"#)]);
        assert!(values(&damaged, 17).is_err(), "unterminated object");
        assert!(
            entries(r#"{"x":1}"#).is_err(),
            "a key that is not a catalog id"
        );
        assert!(without(&damaged, &[(17, &[true, false])]).is_err());
        // Errors name what is wrong, never the values.
        let message = entries(r#"{"17":"SECRET"#).unwrap_err();
        assert!(!message.contains("SECRET"), "{message}");
    }

    #[test]
    fn values_round_trip_exactly_and_removal_leaves_the_rest() {
        let row = encode(&mut [
            (230, "3.10"),
            (17, "\"a \\\"17\\\": b\""),
            (5, "{\"x\":[1]}"),
        ]);
        assert_eq!(
            row.as_deref(),
            Some(r#"{"5":{"x":[1]},"17":"a \"17\": b","230":3.10}"#)
        );
        let tail = StringArray::from(vec![row.as_deref(), None, Some(r#"{"17":null}"#)]);
        let seventeen = values(&tail, 17).unwrap();
        assert_eq!(seventeen.value(0), "\"a \\\"17\\\": b\"");
        assert!(seventeen.is_null(1));
        assert_eq!(seventeen.value(2), "null", "a JSON null is a value");
        assert!(values(&tail, 99).unwrap().iter().all(|v| v.is_none()));
        let gone = without(&tail, &[(17, &[true, false, true])]).unwrap();
        assert_eq!(gone.value(0), r#"{"5":{"x":[1]},"230":3.10}"#);
        assert!(gone.is_null(2), "nothing left in the row");
        assert!(!gone.value(0).contains("17"));
    }
}
