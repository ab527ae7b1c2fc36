//! The segment codec: events ⇄ one Parquet file.
//!
//! Fixed columns hold the standard fields; every event property and user property key gets a
//! column of its own named by its catalog id (`e_<id>`, `u_<id>`) holding the value as JSON
//! text. Removing a key from a segment is then leaving its column out, and names of keys
//! live only in the catalog. Rows are sorted by (event_type, server_upload_time) so that one
//! event type sits in few row groups.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{
    Array, ArrayRef, FixedSizeBinaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_schema::{Field, Schema};
use lethe_event::{Event, NumField, StrField};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::Result;

/// Rows per row group: small enough that an event-type deletion rewrites few of them.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Catalog id ↔ name maps for the property columns of one project.
#[derive(Debug, Clone, Default)]
pub struct ColumnNames {
    pub event_properties: HashMap<i64, String>,
    pub user_properties: HashMap<i64, String>,
}

/// What writing a segment learned about it, for the manifest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentStats {
    pub rows: usize,
    pub bytes: u64,
    pub min_time: i64,
    pub max_time: i64,
}

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

    fn push_optional_text<'a>(
        &mut self,
        name: &str,
        values: impl Iterator<Item = Option<&'a str>>,
    ) {
        let array = StringArray::from_iter(values);
        if array.null_count() < array.len() {
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

/// Writes `events` (already in segment order) to a new Parquet file at `path` and fsyncs it.
/// `event_ids`/`user_ids` give the catalog id of every property key present.
pub fn write_segment(
    path: &Path,
    events: &[Arc<Event>],
    event_ids: &HashMap<String, i64>,
    user_ids: &HashMap<String, i64>,
) -> Result<SegmentStats> {
    write_batch(path, &events_to_batch(events, event_ids, user_ids)?)
}

/// The columns of a segment holding `events`.
pub fn events_to_batch(
    events: &[Arc<Event>],
    event_ids: &HashMap<String, i64>,
    user_ids: &HashMap<String, i64>,
) -> Result<RecordBatch> {
    let mut c = Columns {
        fields: Vec::new(),
        arrays: Vec::new(),
    };
    let uuids = FixedSizeBinaryArray::try_from_iter(events.iter().map(|e| e.uuid.to_be_bytes()))?;
    c.push("uuid", Arc::new(uuids), false);
    let types = StringArray::from_iter_values(events.iter().map(|e| e.event_type.as_str()));
    c.push("event_type", Arc::new(types), false);
    for (name, get) in [
        (
            "server_upload_time",
            (|e: &Event| e.server_upload_time) as fn(&Event) -> i64,
        ),
        ("event_time", |e: &Event| e.time),
    ] {
        let times = TimestampMillisecondArray::from_iter_values(events.iter().map(|e| get(e)))
            .with_timezone("UTC");
        c.push(name, Arc::new(times), false);
    }
    let ids = Int64Array::from_iter_values(events.iter().map(|e| e.amplitude_id));
    c.push("amplitude_id", Arc::new(ids), false);
    c.push_optional_text("user_id", events.iter().map(|e| e.user_id.as_deref()));
    c.push_optional_text("device_id", events.iter().map(|e| e.device_id.as_deref()));
    c.push_optional_text("insert_id", events.iter().map(|e| e.insert_id.as_deref()));
    for (name, get) in [
        (
            "session_id",
            (|e: &Event| e.session_id) as fn(&Event) -> Option<i64>,
        ),
        ("event_id", |e: &Event| e.event_id),
    ] {
        let array = Int64Array::from_iter(events.iter().map(|e| get(e)));
        if array.null_count() < array.len() {
            c.push(name, Arc::new(array), true);
        }
    }
    for (i, field) in StrField::ALL.iter().enumerate() {
        let i = i as u8;
        let values = events.iter().map(|e| {
            e.strs
                .iter()
                .find(|(f, _)| *f == i)
                .map(|(_, v)| v.as_str())
        });
        c.push_optional_text(field.wire, values);
    }
    for (i, field) in NumField::ALL.iter().enumerate() {
        let i = i as u8;
        let values = events
            .iter()
            .map(|e| e.nums.iter().find(|(f, _)| *f == i).map(|(_, v)| *v));
        let array = Float64Array::from_iter(values);
        if array.null_count() < array.len() {
            c.push(field.name, Arc::new(array), true);
        }
    }
    c.push_optional_text("groups", events.iter().map(|e| e.groups.as_deref()));
    c.push_optional_text(
        "group_properties",
        events.iter().map(|e| e.group_properties.as_deref()),
    );
    push_properties(&mut c, "e_", event_ids, events, |e| &e.event_properties);
    push_properties(&mut c, "u_", user_ids, events, |e| &e.user_properties);

    let schema = Arc::new(Schema::new(c.fields));
    Ok(RecordBatch::try_new(schema, c.arrays)?)
}

/// Writes one batch as a segment file at `path` and fsyncs it. Statistics, dictionaries and
/// page indexes are built from this batch alone, so nothing of removed rows survives in them.
pub fn write_batch(path: &Path, batch: &RecordBatch) -> Result<SegmentStats> {
    let file = File::create(path)?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(writer_properties()?))?;
    writer.write(batch)?;
    let file = writer.into_inner()?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    let times = batch
        .column_by_name("server_upload_time")
        .and_then(|a| a.as_any().downcast_ref::<TimestampMillisecondArray>())
        .ok_or_else(|| corrupt("server_upload_time"))?;
    Ok(SegmentStats {
        rows: batch.num_rows(),
        bytes,
        min_time: times.values().iter().copied().min().unwrap_or(0),
        max_time: times.values().iter().copied().max().unwrap_or(0),
    })
}

/// How every segment is encoded.
fn writer_properties() -> Result<WriterProperties> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .build())
}

/// Reads a segment's batches; `columns` restricts the read to those columns (the others
/// are not decoded at all).
pub fn read_batches(path: &Path, columns: Option<&[String]>) -> Result<Vec<RecordBatch>> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?;
    let builder = match columns {
        None => builder,
        Some(names) => {
            let schema = builder.parquet_schema();
            let leaves: Vec<usize> = (0..schema.num_columns())
                .filter(|i| names.iter().any(|n| n == schema.column(*i).name()))
                .collect();
            let mask = parquet::arrow::ProjectionMask::leaves(schema, leaves);
            builder.with_projection(mask)
        }
    };
    let reader = builder.with_batch_size(64 * 1024).build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

/// One column per property key, built sparsely: only present values are touched.
fn push_properties(
    c: &mut Columns,
    prefix: &str,
    ids: &HashMap<String, i64>,
    events: &[Arc<Event>],
    props: impl Fn(&Event) -> &[(String, String)],
) {
    let mut by_id: BTreeMap<i64, Vec<(usize, &str)>> = BTreeMap::new();
    for (row, e) in events.iter().enumerate() {
        for (key, value) in props(e) {
            if let Some(id) = ids.get(key) {
                by_id.entry(*id).or_default().push((row, value));
            }
        }
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
        c.push(&format!("{prefix}{id}"), Arc::new(builder.finish()), true);
    }
}

/// Reads the events of a segment whose server upload time is in `[from, to)`.
pub fn read_segment(
    path: &Path,
    names: &ColumnNames,
    range: Option<(i64, i64)>,
) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for batch in read_batches(path, None)? {
        decode_batch(&batch, names, range, &mut events)?;
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
    let uuid = column::<FixedSizeBinaryArray>(batch, "uuid").ok_or_else(|| corrupt("uuid"))?;
    let event_type =
        column::<StringArray>(batch, "event_type").ok_or_else(|| corrupt("event_type"))?;
    let upload = column::<TimestampMillisecondArray>(batch, "server_upload_time")
        .ok_or_else(|| corrupt("server_upload_time"))?;
    let time = column::<TimestampMillisecondArray>(batch, "event_time")
        .ok_or_else(|| corrupt("event_time"))?;
    let amplitude_id =
        column::<Int64Array>(batch, "amplitude_id").ok_or_else(|| corrupt("amplitude_id"))?;
    let (user_id, device_id, insert_id) = (
        column::<StringArray>(batch, "user_id"),
        column::<StringArray>(batch, "device_id"),
        column::<StringArray>(batch, "insert_id"),
    );
    let (session_id, event_id) = (
        column::<Int64Array>(batch, "session_id"),
        column::<Int64Array>(batch, "event_id"),
    );
    let (groups, group_properties) = (
        column::<StringArray>(batch, "groups"),
        column::<StringArray>(batch, "group_properties"),
    );
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
    let props = |prefix: &str, map: &'_ HashMap<i64, String>| -> Vec<(String, StringArray)> {
        batch
            .schema()
            .fields()
            .iter()
            .filter_map(|f| {
                let id: i64 = f.name().strip_prefix(prefix)?.parse().ok()?;
                let array = column::<StringArray>(batch, f.name())?.clone();
                Some((map.get(&id)?.clone(), array))
            })
            .collect()
    };
    let event_props = props("e_", &names.event_properties);
    let user_props = props("u_", &names.user_properties);
    let present = |cols: &[(String, StringArray)], row: usize| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = cols
            .iter()
            .filter(|(_, a)| a.is_valid(row))
            .map(|(k, a)| (k.clone(), a.value(row).to_string()))
            .collect();
        v.sort();
        v
    };
    for row in 0..batch.num_rows() {
        let upload_time = upload.value(row);
        if let Some((from, to)) = range {
            if upload_time < from || upload_time >= to {
                continue;
            }
        }
        out.push(Event {
            uuid: u128::from_be_bytes(uuid.value(row).try_into().map_err(|_| corrupt("uuid"))?),
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
            group_properties: text(group_properties, row),
            event_properties: present(&event_props, row),
            user_properties: Arc::new(present(&user_props, row)),
        });
    }
    Ok(())
}

/// Writes a copy of the segment at `src` to `dst` without decoding the columns it keeps as
/// they are: columns in `drop` are left out, columns in `replace` are re-encoded from the
/// given arrays (one value per row of `src`), every other column chunk is copied as encoded
/// bytes with its statistics and page index. Valid only when no row is removed; copied chunks
/// hold none of the removed values, and re-encoded ones get statistics and dictionaries from
/// their new values only.
pub fn rewrite_columns(
    src: &Path,
    dst: &Path,
    drop: &[String],
    replace: &HashMap<String, ArrayRef>,
) -> Result<SegmentStats> {
    use parquet::arrow::arrow_writer::{compute_leaves, ArrowRowGroupWriterFactory};
    use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
    use parquet::column::writer::ColumnCloseResult;
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
    use parquet::file::writer::SerializedFileWriter;

    let source = File::open(src)?;
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .parse_and_finish(&source)?;
    let source_schema = ParquetRecordBatchReaderBuilder::try_new(source.try_clone()?)?
        .schema()
        .clone();
    let kept: Vec<(usize, &Field)> = source_schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !drop.contains(f.name()))
        .map(|(i, f)| (i, f.as_ref()))
        .collect();
    let schema = Arc::new(Schema::new(
        kept.iter().map(|(_, f)| (*f).clone()).collect::<Vec<_>>(),
    ));
    let mut props = writer_properties()?;
    add_encoded_arrow_schema_to_metadata(&schema, &mut props);
    let parquet_schema = ArrowSchemaConverter::new().convert(&schema)?;
    let mut writer = SerializedFileWriter::new(
        File::create(dst)?,
        parquet_schema.root_schema_ptr(),
        Arc::new(props),
    )?;
    let mut first_row = 0usize;
    for (rg, group) in metadata.row_groups().iter().enumerate() {
        let rows = group.num_rows() as usize;
        let factory = ArrowRowGroupWriterFactory::new(&writer, schema.clone());
        let mut encoders: Vec<_> = factory
            .create_column_writers(rg)?
            .into_iter()
            .map(Some)
            .collect();
        let page_index = metadata.page_index_for_row_group(rg);
        let mut row_group = writer.next_row_group()?;
        for (out, (source_col, field)) in kept.iter().enumerate() {
            match replace.get(field.name()) {
                Some(values) => {
                    let mut encoder = encoders[out].take().expect("one encoder per column");
                    let slice = values.slice(first_row, rows);
                    for leaf in compute_leaves(field, &slice)? {
                        encoder.write(&leaf)?;
                    }
                    encoder.close()?.append_to_row_group(&mut row_group)?;
                }
                None => {
                    let chunk = group.column(*source_col);
                    row_group.append_column(
                        &source,
                        ColumnCloseResult {
                            bytes_written: chunk.compressed_size() as u64,
                            rows_written: rows as u64,
                            metadata: chunk.clone(),
                            bloom_filter: None,
                            column_index: page_index.column_index(*source_col).cloned(),
                            offset_index: page_index.offset_index(*source_col).cloned(),
                        },
                    )?;
                }
            }
        }
        row_group.close()?;
        first_row += rows;
    }
    let file = writer.into_inner()?;
    file.sync_all()?;
    Ok(SegmentStats {
        rows: first_row,
        bytes: file.metadata()?.len(),
        min_time: 0,
        max_time: 0,
    })
}
