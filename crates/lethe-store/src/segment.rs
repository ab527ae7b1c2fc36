//! The segment codec: events ⇄ one Parquet file.
//!
//! Fixed columns hold the standard fields; every event property and user property key gets a
//! column of its own named by its catalog id (`e_<id>`, `u_<id>`) holding the value as JSON
//! text. Removing a key from a segment is then leaving its column out, and names of keys
//! live only in the catalog. Rows are sorted by (event_type, server_upload_time) so that one
//! event type sits in few row groups.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{
    Array, ArrayRef, FixedSizeBinaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_schema::{Field, Schema, SchemaRef};
use lethe_event::{Event, NumField, StrField};
use lethe_meta::CatalogIds;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::{BloomFilterPosition, EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use bytes::Bytes;

use crate::fetched::SegmentBytes;
use crate::schema::{base_column, PropertyKind};
use crate::tail::{self, Layout};
use crate::Result;

/// Rows per row group: small enough that an event-type deletion rewrites few of them.
const ROW_GROUP_ROWS: usize = 16 * 1024;

/// Catalog id ↔ name maps for the property columns of one project.
#[derive(Debug, Clone, Default)]
pub struct ColumnNames {
    pub event_properties: HashMap<i64, String>,
    pub user_properties: HashMap<i64, String>,
    pub group_properties: HashMap<i64, String>,
}

impl ColumnNames {
    /// The id → name map of one kind.
    pub fn of(&self, kind: PropertyKind) -> &HashMap<i64, String> {
        match kind {
            PropertyKind::Event => &self.event_properties,
            PropertyKind::User => &self.user_properties,
            PropertyKind::Group => &self.group_properties,
        }
    }
}

/// What writing a segment learned about it, for the manifest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentStats {
    pub rows: usize,
    pub bytes: u64,
    pub min_time: i64,
    pub max_time: i64,
    /// CRC-32 of the file's bytes, computed as they were written.
    pub crc32: u32,
    /// SHA-256 of the file's bytes, hex, computed as they were written.
    pub sha256: String,
}

/// A segment being encoded in memory, with the CRC-32 and SHA-256 of every byte that went
/// into it.
#[derive(Default)]
struct Checksummed {
    bytes: Vec<u8>,
    crc: crc32fast::Hasher,
    sha: sha2::Sha256,
}

impl Checksummed {
    /// The encoded object, its checksum and its content hash (hex).
    fn finish(self) -> (Bytes, u32, String) {
        use sha2::Digest;
        let sha = hex::encode(self.sha.finalize());
        (Bytes::from(self.bytes), self.crc.finalize(), sha)
    }
}

impl std::io::Write for Checksummed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        self.bytes.extend_from_slice(buf);
        self.crc.update(buf);
        self.sha.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The columns of a batch being built, in order.
struct Columns {
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
}

impl Columns {
    fn push(&mut self, name: &str, array: ArrayRef, nullable: bool) {
        self.fields
            .push(Field::new(name, array.data_type().clone(), nullable));
        self.arrays.push(array);
    }

    /// A text column of the events' `get`, present only if some event has a value: the
    /// array is built only then (most standard fields are absent from most segments).
    fn push_optional_text(
        &mut self,
        name: &str,
        events: &[Arc<Event>],
        get: impl Fn(&Event) -> Option<&str>,
    ) {
        if events.iter().any(|e| get(e).is_some()) {
            let array = StringArray::from_iter(events.iter().map(|e| get(e)));
            self.push(name, Arc::new(array), true);
        }
    }
}

/// Sorts events into segment order.
pub fn sort_for_segment(events: &mut [Arc<Event>]) {
    events.sort_by(|a, b| {
        (a.event_type.as_str(), a.server_upload_time, a.uuid).cmp(&(
            b.event_type.as_str(),
            b.server_upload_time,
            b.uuid,
        ))
    });
}

/// The columns of a segment holding `events`.
pub fn events_to_batch(
    events: &[Arc<Event>],
    event_ids: &CatalogIds,
    user_ids: &CatalogIds,
    group_ids: &CatalogIds,
    layout: Layout,
) -> Result<RecordBatch> {
    let mut c = Columns {
        fields: Vec::new(),
        arrays: Vec::new(),
    };
    let uuids = FixedSizeBinaryArray::try_from_iter(events.iter().map(|e| e.uuid.to_be_bytes()))?;
    c.push(base_column::UUID, Arc::new(uuids), false);
    let types = StringArray::from_iter_values(events.iter().map(|e| e.event_type.as_str()));
    c.push(base_column::EVENT_TYPE, Arc::new(types), false);
    for (name, get) in [
        (
            base_column::SERVER_UPLOAD_TIME,
            (|e: &Event| e.server_upload_time) as fn(&Event) -> i64,
        ),
        (base_column::EVENT_TIME, |e: &Event| e.time),
    ] {
        let times = TimestampMillisecondArray::from_iter_values(events.iter().map(|e| get(e)))
            .with_timezone("UTC");
        c.push(name, Arc::new(times), false);
    }
    let ids = Int64Array::from_iter_values(events.iter().map(|e| e.amplitude_id));
    c.push(base_column::AMPLITUDE_ID, Arc::new(ids), false);
    c.push_optional_text(base_column::USER_ID, events, |e| e.user_id.as_deref());
    c.push_optional_text(base_column::DEVICE_ID, events, |e| e.device_id.as_deref());
    c.push_optional_text(base_column::INSERT_ID, events, |e| e.insert_id.as_deref());
    for (name, get) in [
        (
            base_column::SESSION_ID,
            (|e: &Event| e.session_id) as fn(&Event) -> Option<i64>,
        ),
        (base_column::EVENT_ID, |e: &Event| e.event_id),
    ] {
        let array = Int64Array::from_iter(events.iter().map(|e| get(e)));
        if array.null_count() < array.len() {
            c.push(name, Arc::new(array), true);
        }
    }
    // Which standard fields the events carry, found in one pass: only those get a column.
    const _: () = assert!(StrField::ALL.len() <= 64 && NumField::ALL.len() <= 64);
    let (mut texts, mut numbers) = (0u64, 0u64);
    for e in events {
        texts |= e.strs.iter().fold(0, |m, (i, _)| m | 1 << i);
        numbers |= e.nums.iter().fold(0, |m, (i, _)| m | 1 << i);
    }
    for (i, field) in StrField::ALL.iter().enumerate() {
        if texts & (1 << i) == 0 {
            continue;
        }
        let i = i as u8;
        let array = StringArray::from_iter(events.iter().map(|e| {
            e.strs
                .iter()
                .find(|(f, _)| *f == i)
                .map(|(_, v)| v.as_str())
        }));
        c.push(field.wire, Arc::new(array), true);
    }
    for (i, field) in NumField::ALL.iter().enumerate() {
        if numbers & (1 << i) == 0 {
            continue;
        }
        let i = i as u8;
        let values = events
            .iter()
            .map(|e| e.nums.iter().find(|(f, _)| *f == i).map(|(_, v)| *v));
        c.push(field.name, Arc::new(Float64Array::from_iter(values)), true);
    }
    c.push_optional_text(base_column::GROUPS, events, |e| e.groups.as_deref());
    c.push_optional_text(base_column::EXTRA, events, |e| e.extra.as_deref());
    for (kind, ids) in [
        (PropertyKind::Event, event_ids),
        (PropertyKind::User, user_ids),
        (PropertyKind::Group, group_ids),
    ] {
        push_properties(&mut c, kind, ids, events, layout);
    }

    let schema = Arc::new(Schema::new(c.fields));
    Ok(RecordBatch::try_new(schema, c.arrays)?)
}

/// Encodes one batch as a segment object. Statistics, dictionaries and page indexes are
/// built from this batch alone, so nothing of removed rows survives in them.
pub fn write_batch(batch: &RecordBatch) -> Result<(Bytes, SegmentStats)> {
    let mut writer = ArrowWriter::try_new(
        Checksummed::default(),
        batch.schema(),
        Some(writer_properties()?),
    )?;
    writer.write(batch)?;
    let (bytes, crc32, sha256) = writer.into_inner()?.finish();
    let times = batch
        .column_by_name(base_column::SERVER_UPLOAD_TIME)
        .and_then(|a| a.as_any().downcast_ref::<TimestampMillisecondArray>())
        .ok_or_else(|| corrupt(base_column::SERVER_UPLOAD_TIME))?;
    let stats = SegmentStats {
        rows: batch.num_rows(),
        bytes: bytes.len() as u64,
        min_time: times.values().iter().copied().min().unwrap_or(0),
        max_time: times.values().iter().copied().max().unwrap_or(0),
        crc32,
        sha256,
    };
    Ok((bytes, stats))
}

/// How every segment is encoded.
fn writer_properties() -> Result<WriterProperties> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_column_dictionary_enabled(ColumnPath::from(base_column::UUID), false)
        .set_column_dictionary_enabled(ColumnPath::from(base_column::EVENT_TIME), false)
        .set_column_dictionary_enabled(ColumnPath::from(base_column::INSERT_ID), false)
        .set_column_dictionary_enabled(ColumnPath::from(base_column::AMPLITUDE_ID), false)
        .set_column_dictionary_enabled(ColumnPath::from(base_column::USER_ID), false)
        .set_column_dictionary_enabled(ColumnPath::from(base_column::DEVICE_ID), false)
        .set_column_bloom_filter_enabled(ColumnPath::from(USER_INDEX_COLUMN), true)
        .set_column_bloom_filter_max_ndv(ColumnPath::from(USER_INDEX_COLUMN), ROW_GROUP_ROWS as u64)
        .set_column_bloom_filter_fpp(ColumnPath::from(USER_INDEX_COLUMN), USER_INDEX_FPP)
        // Every row group's filter side by side before the footer: a lookup of users reads
        // them in one range, which from a bucket is one request instead of one per group.
        .set_bloom_filter_position(BloomFilterPosition::End)
        .build())
}

/// The column with a Parquet bloom filter per row group, so that erasing a few users opens
/// only the segments (and reads only the row groups) that may hold them. Any Parquet reader
/// (DuckDB, Spark) can use the same filters.
const USER_INDEX_COLUMN: &str = base_column::AMPLITUDE_ID;
/// ~19 KiB per 16 Ki-row group; a false positive costs one column read, never a rewrite.
const USER_INDEX_FPP: f64 = 0.01;

/// Whether the segment may hold any of `amplitude_ids`, from its bloom filters alone (a row
/// group without a filter may hold anything).
pub fn may_hold_users(file: &SegmentBytes, amplitude_ids: &[i64]) -> Result<bool> {
    use parquet::bloom_filter::Sbbf;
    use parquet::file::metadata::ParquetMetaDataReader;
    let metadata = ParquetMetaDataReader::new().parse_and_finish(file)?;
    let schema = metadata.file_metadata().schema_descr();
    let Some(column) =
        (0..schema.num_columns()).find(|i| schema.column(*i).name() == USER_INDEX_COLUMN)
    else {
        return Ok(true);
    };
    for group in metadata.row_groups() {
        match Sbbf::read_from_column_chunk(group.column(column), file)? {
            None => return Ok(true),
            Some(filter) if amplitude_ids.iter().any(|id| filter.check(id)) => return Ok(true),
            Some(_) => {}
        }
    }
    Ok(false)
}

/// Reads a segment's batches; `columns` restricts the read to those columns (the others
/// are not decoded at all).
pub fn read_batches(file: &SegmentBytes, columns: Option<&[String]>) -> Result<Vec<RecordBatch>> {
    Ok(batch_reader(file, columns, None)?.collect::<Result<Vec<_>, _>>()?)
}

/// Reads the row groups of a segment whose statistics say their timestamp column `time`
/// may hold a value in `[from, to)`: queries by event time skip the rest undecoded.
pub fn read_batches_between(
    file: &SegmentBytes,
    columns: &[String],
    time: &str,
    (from, to): (i64, i64),
) -> Result<Vec<RecordBatch>> {
    let reader = batch_reader(file, Some(columns), Some((time, from, to)))?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

/// The batches of a segment one at a time (16 Ki rows, a row group, each), optionally only
/// of the row groups whose statistics of a timestamp column overlap a range.
fn batch_reader(
    file: &SegmentBytes,
    columns: Option<&[String]>,
    within: Option<(&str, i64, i64)>,
) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(file.clone())?;
    if let Some((time, from, to)) = within {
        let groups = groups_between(builder.metadata(), time, (from, to));
        builder = builder.with_row_groups(groups);
    }
    let builder = match columns {
        None => builder,
        Some(names) => {
            let leaves = leaves_named(builder.metadata(), names);
            let mask = parquet::arrow::ProjectionMask::leaves(builder.parquet_schema(), leaves);
            builder.with_projection(mask)
        }
    };
    Ok(builder.with_batch_size(ROW_GROUP_ROWS).build()?)
}

/// The row groups whose statistics say their timestamp column `time` may hold a value in
/// `[from, to)`.
fn groups_between(metadata: &ParquetMetaData, time: &str, (from, to): (i64, i64)) -> Vec<usize> {
    let schema = metadata.file_metadata().schema_descr();
    let column = (0..schema.num_columns()).find(|i| schema.column(*i).name() == time);
    metadata
        .row_groups()
        .iter()
        .enumerate()
        .filter(|(_, group)| {
            let stats = column.and_then(|c| group.column(c).statistics());
            match stats {
                Some(parquet::file::statistics::Statistics::Int64(s)) => {
                    match (s.min_opt(), s.max_opt()) {
                        (Some(min), Some(max)) => *max >= from && *min < to,
                        _ => true,
                    }
                }
                _ => true,
            }
        })
        .map(|(i, _)| i)
        .collect()
}

/// The leaf indexes of the columns named `names`.
fn leaves_named(metadata: &ParquetMetaData, names: &[String]) -> Vec<usize> {
    let schema = metadata.file_metadata().schema_descr();
    (0..schema.num_columns())
        .filter(|i| names.iter().any(|n| n == schema.column(*i).name()))
        .collect()
}

/// The length of a segment's footer (its metadata and 8-byte trailer), from the last bytes
/// of the object.
pub(crate) fn footer_len(tail: &[u8]) -> Result<u64> {
    let trailer: &[u8; 8] = tail
        .len()
        .checked_sub(8)
        .and_then(|start| tail[start..].try_into().ok())
        .ok_or_else(|| corrupt("a Parquet trailer"))?;
    let footer = parquet::file::metadata::FooterTail::try_new(trailer)?;
    Ok(footer.metadata_length() as u64 + 8)
}

/// What a read of a segment decodes, so that only its bytes are fetched.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Need<'a> {
    /// These columns (all when `None`) of every row group.
    Columns(Option<&'a [String]>),
    /// These columns of the row groups whose timestamp column may hold a time in a window.
    Between(&'a [String], &'a str, (i64, i64)),
    /// The user index's bloom filters.
    UserIndex,
}

/// The byte ranges of a segment that a read needs, from its footer.
pub(crate) fn ranges_needed(metadata: &ParquetMetaData, need: Need) -> Vec<Range<u64>> {
    let chunk = |group: usize, leaf: usize| {
        let (start, len) = metadata.row_group(group).column(leaf).byte_range();
        start..start + len
    };
    let all_groups = || 0..metadata.num_row_groups();
    let all_leaves = metadata.file_metadata().schema_descr().num_columns();
    let (groups, leaves): (Vec<usize>, Vec<usize>) = match need {
        Need::Columns(None) => (all_groups().collect(), (0..all_leaves).collect()),
        Need::Columns(Some(names)) => (all_groups().collect(), leaves_named(metadata, names)),
        Need::Between(names, time, window) => (
            groups_between(metadata, time, window),
            leaves_named(metadata, names),
        ),
        Need::UserIndex => {
            let index = leaves_named(metadata, &[USER_INDEX_COLUMN.to_string()]);
            return all_groups()
                .flat_map(|g| index.iter().map(move |leaf| (g, *leaf)))
                .filter_map(|(g, leaf)| {
                    let column = metadata.row_group(g).column(leaf);
                    let start = column.bloom_filter_offset()? as u64;
                    // Without a recorded length the filter's header says it: fetch a bound.
                    let len = column.bloom_filter_length().map_or(64 << 10, |l| l as u64);
                    Some(start..start + len)
                })
                .collect();
        }
    };
    groups
        .iter()
        .flat_map(|g| leaves.iter().map(|leaf| chunk(*g, *leaf)))
        .collect()
}

/// The kind's property columns: one per frequent key, built sparsely (only present values
/// are touched), and the tail column for the rest (see [`crate::tail`]).
fn push_properties(
    c: &mut Columns,
    kind: PropertyKind,
    ids: &CatalogIds,
    events: &[Arc<Event>],
    layout: Layout,
) {
    let mut by_id: BTreeMap<i64, Vec<(usize, &str)>> = BTreeMap::new();
    for (row, e) in events.iter().enumerate() {
        for (key, value) in kind.of_event(e) {
            if let Some(id) = ids.get(key) {
                by_id.entry(*id).or_default().push((row, value));
            }
        }
    }
    let counts: HashMap<i64, usize> = by_id.iter().map(|(id, v)| (*id, v.len())).collect();
    let (_, rare) = layout.split(&counts, events.len());
    if !rare.is_empty() {
        let mut rows: Vec<Vec<(i64, &str)>> = vec![Vec::new(); events.len()];
        for id in &rare {
            for (row, value) in by_id.remove(id).into_iter().flatten() {
                rows[row].push((*id, value));
            }
        }
        let mut builder = StringBuilder::with_capacity(events.len(), 0);
        for mut entries in rows {
            builder.append_option(tail::encode(&mut entries));
        }
        c.push(kind.tail_column(), Arc::new(builder.finish()), true);
    }
    for (id, values) in by_id {
        let mut builder = StringBuilder::with_capacity(events.len(), values.len() * 8);
        let mut next = 0;
        for (row, value) in values {
            builder.append_nulls(row - next);
            builder.append_value(value);
            next = row + 1;
        }
        builder.append_nulls(events.len() - next);
        c.push(&kind.column(id), Arc::new(builder.finish()), true);
    }
}

/// Reads the events of a segment whose server upload time is in `[from, to)`.
pub fn read_segment(
    file: &SegmentBytes,
    names: &ColumnNames,
    range: Option<(i64, i64)>,
) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for batch in batch_reader(file, None, None)? {
        decode_batch(&batch?, names, range, &mut events)?;
    }
    Ok(events)
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Option<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|a| a.as_any().downcast_ref::<T>())
}

fn text(array: Option<&StringArray>, row: usize) -> Option<String> {
    array
        .filter(|a| a.is_valid(row))
        .map(|a| a.value(row).to_string())
}

fn int(array: Option<&Int64Array>, row: usize) -> Option<i64> {
    array.filter(|a| a.is_valid(row)).map(|a| a.value(row))
}

fn corrupt(what: &str) -> arrow_schema::ArrowError {
    arrow_schema::ArrowError::SchemaError(format!("segment lacks column {what}"))
}

fn decode_batch(
    batch: &RecordBatch,
    names: &ColumnNames,
    range: Option<(i64, i64)>,
    out: &mut Vec<Event>,
) -> Result<()> {
    let uuid = column::<FixedSizeBinaryArray>(batch, base_column::UUID)
        .ok_or_else(|| corrupt(base_column::UUID))?;
    let event_type = column::<StringArray>(batch, base_column::EVENT_TYPE)
        .ok_or_else(|| corrupt(base_column::EVENT_TYPE))?;
    let upload = column::<TimestampMillisecondArray>(batch, base_column::SERVER_UPLOAD_TIME)
        .ok_or_else(|| corrupt(base_column::SERVER_UPLOAD_TIME))?;
    let time = column::<TimestampMillisecondArray>(batch, base_column::EVENT_TIME)
        .ok_or_else(|| corrupt(base_column::EVENT_TIME))?;
    let amplitude_id = column::<Int64Array>(batch, base_column::AMPLITUDE_ID)
        .ok_or_else(|| corrupt(base_column::AMPLITUDE_ID))?;
    let (user_id, device_id, insert_id) = (
        column::<StringArray>(batch, base_column::USER_ID),
        column::<StringArray>(batch, base_column::DEVICE_ID),
        column::<StringArray>(batch, base_column::INSERT_ID),
    );
    let (session_id, event_id) = (
        column::<Int64Array>(batch, base_column::SESSION_ID),
        column::<Int64Array>(batch, base_column::EVENT_ID),
    );
    let (groups, extra) = (
        column::<StringArray>(batch, base_column::GROUPS),
        column::<StringArray>(batch, base_column::EXTRA),
    );
    // Segments written before group properties had their own columns kept the object as
    // sent in one column: it is exported as it was, through `extra`.
    let legacy_groups = column::<StringArray>(batch, LEGACY_GROUP_PROPERTIES);
    let strs: Vec<(u8, &StringArray)> = StrField::ALL
        .iter()
        .enumerate()
        .filter_map(|(i, f)| Some((i as u8, column::<StringArray>(batch, f.wire)?)))
        .collect();
    let nums: Vec<(u8, &Float64Array)> = NumField::ALL
        .iter()
        .enumerate()
        .filter_map(|(i, f)| Some((i as u8, column::<Float64Array>(batch, f.name)?)))
        .collect();
    let props = |wanted: PropertyKind| -> Vec<(String, StringArray)> {
        batch
            .schema()
            .fields()
            .iter()
            .filter_map(|f| {
                let (kind, id) = PropertyKind::of_column(f.name())?;
                let name = names.of(kind).get(&id).filter(|_| kind == wanted)?;
                let array = column::<StringArray>(batch, f.name())?.clone();
                Some((name.clone(), array))
            })
            .collect()
    };
    let kinds = PropertyKind::ALL.map(|kind| {
        let tail = column::<StringArray>(batch, kind.tail_column());
        (props(kind), tail, names.of(kind))
    });
    let present = |kind: PropertyKind, row: usize| -> Result<Vec<(String, String)>> {
        let (cols, tail, names) = &kinds[kind as usize];
        let mut v: Vec<(String, String)> = cols
            .iter()
            .filter(|(_, a)| a.is_valid(row))
            .map(|(k, a)| (k.clone(), a.value(row).to_string()))
            .collect();
        if let Some(tail) = tail.filter(|t| t.is_valid(row)) {
            for (id, value) in tail::entries(tail.value(row)).map_err(|e| corrupt(&e))? {
                if let Some(name) = names.get(&id) {
                    v.push((name.clone(), value.to_string()));
                }
            }
        }
        v.sort();
        Ok(v)
    };
    for row in 0..batch.num_rows() {
        let upload_time = upload.value(row);
        if let Some((from, to)) = range {
            if upload_time < from || upload_time >= to {
                continue;
            }
        }
        out.push(Event {
            uuid: u128::from_be_bytes(
                uuid.value(row)
                    .try_into()
                    .map_err(|_| corrupt(base_column::UUID))?,
            ),
            event_type: event_type.value(row).to_string(),
            server_upload_time: upload_time,
            time: time.value(row),
            amplitude_id: amplitude_id.value(row),
            user_id: text(user_id, row),
            device_id: text(device_id, row),
            insert_id: text(insert_id, row),
            session_id: int(session_id, row),
            event_id: int(event_id, row),
            strs: strs
                .iter()
                .filter(|(_, a)| a.is_valid(row))
                .map(|(i, a)| (*i, a.value(row).to_string()))
                .collect(),
            nums: nums
                .iter()
                .filter(|(_, a)| a.is_valid(row))
                .map(|(i, a)| (*i, a.value(row)))
                .collect(),
            groups: text(groups, row),
            group_properties: present(PropertyKind::Group, row)?,
            event_properties: present(PropertyKind::Event, row)?,
            user_properties: Arc::new(present(PropertyKind::User, row)?),
            extra: with_legacy_groups(text(extra, row), text(legacy_groups, row)),
            skip_user_properties_sync: false,
            profile_only: false,
        });
    }
    Ok(())
}

/// The one-column group properties of segments written before `g_<id>` columns existed.
const LEGACY_GROUP_PROPERTIES: &str = "group_properties";

/// An event's `extra` with a legacy `group_properties` value added, so the export renders it
/// as before.
fn with_legacy_groups(extra: Option<String>, legacy: Option<String>) -> Option<String> {
    let Some(legacy) = legacy.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return extra;
    };
    let mut map = extra
        .and_then(|t| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&t).ok())
        .unwrap_or_default();
    map.insert(LEGACY_GROUP_PROPERTIES.to_string(), legacy);
    Some(serde_json::Value::Object(map).to_string())
}

/// How one column of one output row group is produced.
enum Chunk {
    /// Copied as encoded bytes from this column of the source row group.
    Copy(usize),
    /// Encoded from these values.
    Encode(ArrayRef),
}

/// One output row group: its source row group, its rows, and how each column is produced.
struct GroupPlan {
    source: usize,
    rows: usize,
    columns: Vec<Chunk>,
}

/// An open source segment: its bytes, footer (with page index) and Arrow schema.
struct Source {
    file: SegmentBytes,
    metadata: ParquetMetaData,
    schema: SchemaRef,
}

impl Source {
    fn open(file: &SegmentBytes) -> Result<Self> {
        use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
        let file = file.clone();
        let metadata = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(&file)?;
        let footer = metadata.file_metadata();
        let schema = Arc::new(parquet::arrow::parquet_to_arrow_schema(
            footer.schema_descr(),
            footer.key_value_metadata(),
        )?);
        Ok(Self {
            file,
            metadata,
            schema,
        })
    }

    fn row_group_rows(&self) -> Vec<usize> {
        self.metadata
            .row_groups()
            .iter()
            .map(|g| g.num_rows() as usize)
            .collect()
    }
}

/// Encodes a segment from `source` following `groups`: copied chunks keep their encoding,
/// statistics and page index; encoded ones get them from their new values only.
fn assemble(
    source: &Source,
    schema: SchemaRef,
    groups: Vec<GroupPlan>,
) -> Result<(Bytes, SegmentStats)> {
    use parquet::arrow::arrow_writer::compute_leaves;
    use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
    use parquet::bloom_filter::Sbbf;
    use parquet::column::writer::ColumnCloseResult;
    use parquet::file::writer::SerializedFileWriter;

    let mut props = writer_properties()?;
    add_encoded_arrow_schema_to_metadata(&schema, &mut props);
    let props = Arc::new(props);
    let null_props = Arc::new(null_chunk_properties());
    let parquet_schema = ArrowSchemaConverter::new().convert(&schema)?;
    let mut writer = SerializedFileWriter::new(
        Checksummed::default(),
        parquet_schema.root_schema_ptr(),
        props.clone(),
    )?;
    let mut rows = 0;
    for group in groups {
        // A fully re-encoded row group goes through Arrow's column writers; in a mixed one
        // only the changed (text) columns are encoded, between the copied chunks.
        let all_encoded = group.columns.iter().all(|c| matches!(c, Chunk::Encode(_)));
        let mut encoders = match all_encoded {
            true => group_encoders(&schema, &group.columns, &props, &null_props)?,
            false => Vec::new(),
        };
        let source_group = source.metadata.row_group(group.source);
        let page_index = source.metadata.page_index_for_row_group(group.source);
        let mut row_group = writer.next_row_group()?;
        for (out, chunk) in group.columns.into_iter().enumerate() {
            match chunk {
                Chunk::Encode(values) if all_encoded => {
                    let mut encoder = encoders[out].take().expect("one encoder per column");
                    for leaf in compute_leaves(schema.field(out), &values)? {
                        encoder.write(&leaf)?;
                    }
                    encoder.close()?.append_to_row_group(&mut row_group)?;
                }
                Chunk::Encode(values) => {
                    let column = row_group
                        .next_column()?
                        .ok_or_else(|| corrupt("a column to encode"))?;
                    write_text_column(column, &values)?;
                }
                Chunk::Copy(column) => {
                    let meta = source_group.column(column);
                    row_group.append_column(
                        &source.file,
                        ColumnCloseResult {
                            bytes_written: meta.compressed_size() as u64,
                            rows_written: group.rows as u64,
                            metadata: meta.clone(),
                            // Copied rows keep their filter; re-encoded groups get a new one.
                            bloom_filter: Sbbf::read_from_column_chunk(meta, &source.file)?,
                            column_index: page_index.column_index(column).cloned(),
                            offset_index: page_index.offset_index(column).cloned(),
                        },
                    )?;
                }
            }
        }
        row_group.close()?;
        rows += group.rows;
    }
    let (bytes, crc32, sha256) = writer.into_inner()?.finish();
    let stats = SegmentStats {
        rows,
        bytes: bytes.len() as u64,
        min_time: 0,
        max_time: 0,
        crc32,
        sha256,
    };
    Ok((bytes, stats))
}

/// How a re-encoded chunk that holds only nulls is written: uncompressed (it is a few bytes
/// of definition levels), so that neither writing nor reading it sets up a codec; most
/// property columns of a row group are such chunks.
fn null_chunk_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .build()
}

/// Arrow column writers for a fully re-encoded row group, in column order: chunks with
/// values get the segment's properties, chunks with only nulls [`null_chunk_properties`].
fn group_encoders(
    schema: &SchemaRef,
    columns: &[Chunk],
    props: &Arc<WriterProperties>,
    null_props: &Arc<WriterProperties>,
) -> Result<Vec<Option<parquet::arrow::arrow_writer::ArrowColumnWriter>>> {
    use parquet::arrow::arrow_writer::ArrowRowGroupWriterFactory;
    use parquet::arrow::ArrowSchemaConverter;
    use parquet::file::writer::SerializedFileWriter;
    let only_nulls: Vec<bool> = columns
        .iter()
        .map(|c| matches!(c, Chunk::Encode(v) if v.null_count() == v.len()))
        .collect();
    let writers = |nulls: bool| -> Result<std::vec::IntoIter<_>> {
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .zip(&only_nulls)
            .filter(|(_, n)| **n == nulls)
            .map(|(f, _)| f.clone())
            .collect();
        if fields.is_empty() {
            return Ok(Vec::new().into_iter());
        }
        let arrow = Arc::new(Schema::new(fields));
        let parquet = ArrowSchemaConverter::new().convert(&arrow)?;
        let props = if nulls { null_props } else { props };
        // The factory takes schema and properties from a file writer; this one writes nowhere,
        // the columns are appended to the real row group.
        let shape =
            SerializedFileWriter::new(std::io::sink(), parquet.root_schema_ptr(), props.clone())?;
        Ok(ArrowRowGroupWriterFactory::new(&shape, arrow)
            .create_column_writers(0)?
            .into_iter())
    };
    let (mut nulls, mut values) = (writers(true)?, writers(false)?);
    Ok(only_nulls
        .into_iter()
        .map(|n| if n { nulls.next() } else { values.next() })
        .collect())
}

/// Encodes a nullable text column (a property column) with Parquet's own column writer.
fn write_text_column(
    mut column: parquet::file::writer::SerializedColumnWriter<'_>,
    values: &ArrayRef,
) -> Result<()> {
    use parquet::data_type::{ByteArray, ByteArrayType};
    let text = values
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| corrupt("text values for a re-encoded column"))?;
    let present: Vec<ByteArray> = text.iter().flatten().map(ByteArray::from).collect();
    let levels: Vec<i16> = (0..text.len())
        .map(|i| i16::from(text.is_valid(i)))
        .collect();
    column
        .typed::<ByteArrayType>()
        .write_batch(&present, Some(&levels), None)?;
    column.close()?;
    Ok(())
}

/// Encodes a copy of the segment `src` without decoding the columns it keeps as
/// they are: columns in `drop` are left out, columns in `replace` are re-encoded from the
/// given arrays (one value per row of `src`), every other column chunk is copied as encoded
/// bytes. Valid only when no row is removed.
pub fn rewrite_columns(
    src: &SegmentBytes,
    drop: &[String],
    replace: &HashMap<String, ArrayRef>,
) -> Result<(Bytes, SegmentStats)> {
    let source = Source::open(src)?;
    let kept: Vec<(usize, &Field)> = source
        .schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !drop.contains(f.name()))
        .map(|(i, f)| (i, f.as_ref()))
        .collect();
    let schema = Arc::new(Schema::new(
        kept.iter().map(|(_, f)| (*f).clone()).collect::<Vec<_>>(),
    ));
    let mut first_row = 0;
    let mut groups = Vec::new();
    for (index, rows) in source.row_group_rows().into_iter().enumerate() {
        let columns = kept
            .iter()
            .map(|(column, field)| match replace.get(field.name()) {
                Some(values) => Chunk::Encode(values.slice(first_row, rows)),
                None => Chunk::Copy(*column),
            })
            .collect();
        groups.push(GroupPlan {
            source: index,
            rows,
            columns,
        });
        first_row += rows;
    }
    assemble(&source, schema.clone(), groups)
}

/// Decodes the whole row groups of a segment whose row range `wanted` accepts, every column,
/// one batch per group with its index; the footer is parsed once for all of them. Column
/// chunks whose statistics say they hold only nulls (most property columns of a row group)
/// are not read at all: they become null arrays.
pub fn read_row_groups(
    file: &SegmentBytes,
    wanted: impl Fn(Range<usize>) -> bool,
) -> Result<Vec<(usize, RecordBatch)>> {
    use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
    let metadata = ArrowReaderMetadata::load(file, ArrowReaderOptions::default())?;
    let schema = metadata.schema().clone();
    let leaves = metadata.metadata().file_metadata().schema_descr_ptr();
    let mut first = 0;
    let mut indexes = Vec::new();
    for (index, group) in metadata.metadata().row_groups().iter().enumerate() {
        let rows = group.num_rows() as usize;
        if wanted(first..first + rows) {
            indexes.push(index);
        }
        first += rows;
    }
    indexes
        .into_iter()
        .map(|index| {
            let group = metadata.metadata().row_group(index);
            let with_values: Vec<usize> = (0..group.num_columns())
                .filter(|c| !only_nulls(group.column(*c)))
                .collect();
            let batches =
                ParquetRecordBatchReaderBuilder::new_with_metadata(file.clone(), metadata.clone())
                    .with_row_groups(vec![index])
                    .with_projection(parquet::arrow::ProjectionMask::leaves(&leaves, with_values))
                    .with_batch_size(ROW_GROUP_ROWS)
                    .build()?
                    .collect::<Result<Vec<_>, _>>()?;
            let read = match batches.first() {
                Some(first) => Some(arrow_select::concat::concat_batches(
                    &first.schema(),
                    &batches,
                )?),
                None => None,
            };
            let rows = group.num_rows() as usize;
            let columns = schema
                .fields()
                .iter()
                .map(|f| {
                    read.as_ref()
                        .and_then(|b| b.column_by_name(f.name()).cloned())
                        .unwrap_or_else(|| arrow_array::new_null_array(f.data_type(), rows))
                })
                .collect();
            Ok((index, RecordBatch::try_new(schema.clone(), columns)?))
        })
        .collect()
}

/// Whether a column chunk holds no value, from its statistics.
fn only_nulls(chunk: &parquet::file::metadata::ColumnChunkMetaData) -> bool {
    chunk
        .statistics()
        .and_then(|s| s.null_count_opt())
        .is_some_and(|nulls| nulls as i64 == chunk.num_values())
}

/// Encodes a copy of the segment `src` in which the row groups in `replaced` are
/// encoded from the given batches (same schema as `src`; an empty batch removes the row
/// group) and every other row group is copied as encoded bytes.
pub fn rewrite_row_groups(
    src: &SegmentBytes,
    replaced: &BTreeMap<usize, RecordBatch>,
) -> Result<(Bytes, SegmentStats)> {
    let source = Source::open(src)?;
    let width = source.schema.fields().len();
    let mut groups = Vec::new();
    for (index, rows) in source.row_group_rows().into_iter().enumerate() {
        let plan = match replaced.get(&index) {
            None => GroupPlan {
                source: index,
                rows,
                columns: (0..width).map(Chunk::Copy).collect(),
            },
            Some(batch) if batch.num_rows() == 0 => continue,
            Some(batch) => GroupPlan {
                source: index,
                rows: batch.num_rows(),
                columns: batch.columns().iter().cloned().map(Chunk::Encode).collect(),
            },
        };
        groups.push(plan);
    }
    assemble(&source, source.schema.clone(), groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three row groups: 16 Ki + 16 Ki + 8 Ki rows, property `e_1` holding `v<row>`.
    fn segment() -> (SegmentBytes, RecordBatch) {
        let rows = 2 * ROW_GROUP_ROWS + ROW_GROUP_ROWS / 2;
        let events: Vec<Arc<Event>> = (0..rows)
            .map(|i| {
                let mut e = crate::test_event(
                    i as u128,
                    vec![("p".into(), format!("\"v{i}\""))],
                    vec![("u".into(), format!("\"MARK-{i}\""))],
                );
                e.server_upload_time = i as i64;
                e.amplitude_id = 1_000 + i as i64;
                Arc::new(e)
            })
            .collect();
        let ids = CatalogIds::from_iter([("p".to_string(), 1)]);
        let uids = CatalogIds::from_iter([("u".to_string(), 2)]);
        let batch = events_to_batch(
            &events,
            &ids,
            &uids,
            &CatalogIds::default(),
            Layout::default(),
        )
        .unwrap();
        (encoded(&batch), batch)
    }

    fn encoded(batch: &RecordBatch) -> SegmentBytes {
        SegmentBytes::whole(write_batch(batch).unwrap().0)
    }

    fn decoded(file: &SegmentBytes) -> RecordBatch {
        let batches = read_batches(file, None).unwrap();
        arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    #[test]
    fn the_checksum_and_content_hash_written_are_those_of_the_bytes() {
        use sha2::Digest;
        let sha = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
        let (src, batch) = segment();
        let (bytes, written) = write_batch(&batch).unwrap();
        assert_eq!(written.crc32, crc32fast::hash(&bytes));
        assert_eq!(written.sha256, sha(&bytes));
        let (copy, stats) = rewrite_row_groups(&src, &BTreeMap::new()).unwrap();
        assert_eq!(stats.crc32, crc32fast::hash(&copy));
        assert_eq!(stats.sha256, sha(&copy));
        assert_eq!(stats.bytes, copy.len() as u64);
    }

    #[test]
    fn a_planned_read_fetches_only_the_footer_and_the_chunks_it_decodes() {
        use parquet::file::metadata::ParquetMetaDataReader;
        let (src, _) = segment();
        let whole = src.as_whole().unwrap().clone();
        let metadata = ParquetMetaDataReader::new().parse_and_finish(&src).unwrap();
        let tail = whole.len() as u64 - footer_len(&whole).unwrap();
        let sparse = |need: Need| {
            let ranges = crate::fetched::coalesce(ranges_needed(&metadata, need));
            let fetched: u64 = ranges.iter().map(|r| r.end - r.start).sum();
            let parts = ranges
                .into_iter()
                .map(|r| (r.start, whole.slice(r.start as usize..r.end as usize)))
                .chain([(tail, whole.slice(tail as usize..))]);
            (SegmentBytes::sparse(whole.len() as u64, parts), fetched)
        };
        let columns = ["e_1".to_string()];
        let (bytes, fetched) = sparse(Need::Columns(Some(&columns)));
        assert!(fetched * 4 < whole.len() as u64, "one column of several");
        assert_eq!(
            read_batches(&bytes, Some(&columns)).unwrap(),
            read_batches(&src, Some(&columns)).unwrap()
        );
        assert!(
            read_batches(&bytes, None).is_err(),
            "unfetched columns are an error"
        );
        let (window, time) = ((100, 200), base_column::SERVER_UPLOAD_TIME);
        let needed = ["e_1".to_string(), time.to_string()];
        let (bytes, _) = sparse(Need::Between(&needed, time, window));
        let batches = read_batches_between(&bytes, &needed, time, window).unwrap();
        assert_eq!(batches.len(), 1, "one row group of three");
        let (bytes, _) = sparse(Need::UserIndex);
        let index = crate::fetched::coalesce(ranges_needed(&metadata, Need::UserIndex));
        let last_group = metadata.row_group(metadata.num_row_groups() - 1);
        let data_end = (0..last_group.num_columns())
            .map(|c| last_group.column(c).byte_range())
            .map(|(start, len)| start + len)
            .max()
            .unwrap();
        assert_eq!(
            index.len(),
            1,
            "the filters of every row group are one range"
        );
        assert!(
            index[0].start >= data_end,
            "after the rows, before the footer"
        );
        assert!(may_hold_users(&bytes, &[1_005]).unwrap());
        assert!(!may_hold_users(&bytes, &[9_999_999]).unwrap());
    }

    #[test]
    fn row_groups_are_replaced_or_copied_and_removed_values_leave_the_file() {
        let (src, batch) = segment();
        let sizes: Vec<usize> = read_row_groups(&src, |_| true)
            .unwrap()
            .iter()
            .map(|(_, b)| b.num_rows())
            .collect();
        assert_eq!(sizes, vec![16384, 16384, 8192]);
        // Drop the first half of row group 1.
        let group = read_row_groups(&src, |rows| rows.start == ROW_GROUP_ROWS)
            .unwrap()
            .remove(0)
            .1;
        let keep = arrow_array::BooleanArray::from(
            (0..group.num_rows()).map(|r| r >= 8192).collect::<Vec<_>>(),
        );
        let kept = arrow_select::filter::filter_record_batch(&group, &keep).unwrap();
        let (dst, stats) = rewrite_row_groups(&src, &BTreeMap::from([(1, kept)])).unwrap();
        let dst = SegmentBytes::whole(dst);
        assert_eq!(stats.rows, batch.num_rows() - 8192);
        let expected_keep = arrow_array::BooleanArray::from(
            (0..batch.num_rows())
                .map(|r| !(16384..16384 + 8192).contains(&r))
                .collect::<Vec<_>>(),
        );
        let expected = arrow_select::filter::filter_record_batch(&batch, &expected_keep).unwrap();
        assert_eq!(decoded(&dst), expected);
        let bytes = dst.as_whole().unwrap();
        let values = decoded(&dst);
        let marks = values
            .column_by_name("u_2")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert!(
            !marks.iter().flatten().any(|v| v == "\"MARK-16384\""),
            "removed row gone"
        );
        assert!(
            memchr_free(bytes, b"MARK-16384"),
            "not in statistics or dictionaries either"
        );
    }

    #[test]
    fn a_legacy_group_properties_column_is_exported_as_it_was() {
        let events = vec![Arc::new(crate::test_event(1, vec![], vec![]))];
        let batch = events_to_batch(
            &events,
            &CatalogIds::default(),
            &CatalogIds::default(),
            &CatalogIds::default(),
            Layout::default(),
        )
        .unwrap();
        let legacy: ArrayRef = Arc::new(StringArray::from(vec![Some(r#"{"company":{"size":3}}"#)]));
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| (**f).clone())
            .collect();
        fields.push(Field::new(
            LEGACY_GROUP_PROPERTIES,
            arrow_schema::DataType::Utf8,
            true,
        ));
        let mut columns = batch.columns().to_vec();
        columns.push(legacy);
        let old = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let read = read_segment(&encoded(&old), &ColumnNames::default(), None).unwrap();
        let exported = read[0].to_export_json(1);
        assert_eq!(
            exported["group_properties"],
            serde_json::json!({"company": {"size": 3}})
        );
    }

    #[test]
    fn row_groups_read_alone_equal_the_whole_read_even_with_null_only_chunks() {
        // `rare` has values in the first row group only.
        let events: Vec<Arc<Event>> = (0..ROW_GROUP_ROWS + 100)
            .map(|i| {
                let props = match i < 200 {
                    true => vec![("rare".into(), format!("\"r{i}\""))],
                    false => vec![],
                };
                Arc::new(crate::test_event(i as u128, props, vec![]))
            })
            .collect();
        let ids = CatalogIds::from_iter([("rare".to_string(), 7)]);
        let batch = events_to_batch(
            &events,
            &ids,
            &CatalogIds::default(),
            &CatalogIds::default(),
            Layout::default(),
        )
        .unwrap();
        let file = encoded(&batch);
        let groups: Vec<RecordBatch> = read_row_groups(&file, |_| true)
            .unwrap()
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        assert_eq!(groups[1].column_by_name("e_7").unwrap().null_count(), 100);
        let whole = arrow_select::concat::concat_batches(&groups[0].schema(), &groups).unwrap();
        assert_eq!(whole, decoded(&file));
    }

    #[test]
    fn user_bloom_filters_follow_the_rows_through_a_rewrite() {
        let (src, _) = segment();
        let (kept, removed, absent) = (1_005, 1_000 + 16_384 + 10, 9_999_999);
        assert!(may_hold_users(&src, &[removed]).unwrap());
        assert!(!may_hold_users(&src, &[absent]).unwrap());
        // Drop the first half of row group 1: its filter is rebuilt, the others are copied.
        let group = read_row_groups(&src, |rows| rows.start == ROW_GROUP_ROWS)
            .unwrap()
            .remove(0)
            .1;
        let keep = arrow_array::BooleanArray::from(
            (0..group.num_rows()).map(|r| r >= 8192).collect::<Vec<_>>(),
        );
        let rest = arrow_select::filter::filter_record_batch(&group, &keep).unwrap();
        let (dst, _) = rewrite_row_groups(&src, &BTreeMap::from([(1, rest)])).unwrap();
        let dst = SegmentBytes::whole(dst);
        assert!(may_hold_users(&dst, &[kept]).unwrap());
        assert!(
            !may_hold_users(&dst, &[absent]).unwrap(),
            "every group, copied or not, has a filter"
        );
        assert!(may_hold_users(&dst, &[1_000 + 40_000]).unwrap());
        assert!(
            !may_hold_users(&dst, &[removed]).unwrap(),
            "no trace of removed ids"
        );
    }

    #[test]
    fn columns_are_dropped_or_reencoded_and_the_rest_copied() {
        let (src, batch) = segment();
        let cleared = arrow_array::BooleanArray::from(
            (0..batch.num_rows())
                .map(|r| r % 2 == 0)
                .collect::<Vec<_>>(),
        );
        let replacement =
            arrow_select::nullif::nullif(batch.column_by_name("e_1").unwrap(), &cleared).unwrap();
        let replace = HashMap::from([("e_1".to_string(), replacement.clone())]);
        let (dst, _) = rewrite_columns(&src, &["u_2".to_string()], &replace).unwrap();
        let dst = SegmentBytes::whole(dst);
        let out = decoded(&dst);
        assert!(out.column_by_name("u_2").is_none());
        assert_eq!(out.column_by_name("e_1").unwrap(), &replacement);
        assert_eq!(
            out.column_by_name(base_column::UUID).unwrap(),
            batch.column_by_name(base_column::UUID).unwrap()
        );
        let bytes = dst.as_whole().unwrap();
        assert!(
            memchr_free(bytes, b"MARK-"),
            "the dropped column left nothing"
        );
    }

    fn memchr_free(haystack: &[u8], needle: &[u8]) -> bool {
        !haystack.windows(needle.len()).any(|w| w == needle)
    }
}
