//! The storage seam: every byte of every segment is written, read and deleted here, through
//! the `object_store` crate. On the default deployment the backend is its `LocalFileSystem`
//! under `<data dir>/segments` (with fsync, which that backend leaves off by default); with
//! `--segments s3://bucket/prefix` it is `AmazonS3` under that prefix, which lethe owns
//! alone, in a bucket that must not keep versions (checked at start: a DELETE there would
//! keep the bytes).
//!
//! Objects are written once with one PUT under a key that is never reused, and are never
//! modified: a rewrite writes new objects and deletes the old ones after the manifest
//! commit. Reads fetch exact byte ranges, so a query that needs three columns of a segment
//! moves three columns' bytes, locally or over the network.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::prefix::PrefixStore;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions};

use lethe_meta::{SegmentRecord, Shard, ShardScope};

use crate::faults::{inject, IoPoint};
use crate::{lock, Result, StoreError};

/// How many objects [`Storage::get_each`] fetches at a time.
const FETCHES_IN_FLIGHT: usize = 16;

/// The place of one segment: key `<project>/<day>/<id>.parquet` under the storage root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentLocation {
    pub project_id: i64,
    pub day: String,
    pub id: String,
}

impl SegmentLocation {
    /// Where the segment a manifest record names lives.
    pub fn of(record: &SegmentRecord) -> Self {
        Self {
            project_id: record.project_id,
            day: record.day.clone(),
            id: record.id.clone(),
        }
    }
}

/// The folder beside the segments that published manifests live in (`published.rs`).
const MANIFESTS: &str = "manifests";

/// The folder beside the segments that a cluster's WAL objects live in (`wal.rs`).
const WAL: &str = "wal";

/// The folder beside the segments that access-request (DSAR) files live in until they expire.
const ACCESS: &str = "access";

/// Where a deployment keeps its segments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SegmentPlace {
    /// Files under `<data dir>/segments`: the default, no service to run.
    #[default]
    DataDir,
    /// An S3-compatible bucket, under a prefix that belongs to lethe alone: start-up deletes
    /// every object there that the manifest does not name. Endpoint, region and credentials
    /// come from the usual `AWS_*` variables.
    S3 { bucket: String, prefix: String },
}

impl std::str::FromStr for SegmentPlace {
    type Err = String;

    /// `local`, or `s3://bucket/prefix` (the prefix is required).
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        if text == "local" {
            return Ok(SegmentPlace::DataDir);
        }
        let rest = text
            .strip_prefix("s3://")
            .ok_or("segments go to `local` or to `s3://bucket/prefix`")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if bucket.is_empty() {
            return Err("s3://bucket/prefix: the bucket is missing".into());
        }
        if prefix.is_empty() {
            return Err(
                "s3://bucket/prefix: give a prefix that holds nothing but lethe's \
                        segments (lethe deletes every other object under it)"
                    .into(),
            );
        }
        Ok(SegmentPlace::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

/// Where segments live, and the only way to their bytes.
#[derive(Debug)]
pub struct Storage {
    objects: Arc<dyn ObjectStore>,
    /// The directory behind a local backend: where a crash can leave staged uploads.
    local_root: Option<PathBuf>,
    /// Where the root is, for people: a directory, or `s3://bucket/prefix`.
    root_name: String,
    /// The runtime a network backend's client runs on (the local backend needs none).
    runtime: Option<tokio::runtime::Runtime>,
    /// Segment objects whose deletion failed (the bucket or disk refused, past its retries),
    /// to delete again: one may hold what a deletion task removed. A set: a key whose
    /// deletion fails twice (a reader's drop, then the task's own try) is one object.
    leftovers: Mutex<BTreeSet<Key>>,
    /// The projects of the store this storage serves: what it may remove at a start, and
    /// what its gauge is labelled by.
    scope: ShardScope,
}

impl Drop for Storage {
    fn drop(&mut self) {
        // Without waiting: a store may be dropped on an async thread, where blocking panics.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Publishes how many segment objects wait for their deletion to be tried again: one that
/// stays above zero means the disk or bucket refuses deletions, and what a task removed may
/// still be there (the task fails rather than say completed).
fn publish_leftovers(count: usize, scope: ShardScope) {
    crate::gauge("lethe_segment_deletions_pending", scope).set(count as f64);
}

/// The end of an object: its last bytes and its whole size.
pub(crate) struct Tail {
    pub size: u64,
    pub bytes: Bytes,
}

impl Storage {
    /// Segments as files under `root` (created if missing), written durably.
    pub fn local(root: &Path) -> Result<Storage> {
        std::fs::create_dir_all(root)?;
        let objects = LocalFileSystem::new_with_prefix(root)
            .map_err(|e| storage_error("open the segment directory", e))?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        Ok(Storage {
            objects: Arc::new(objects),
            local_root: Some(root.to_path_buf()),
            leftovers: Mutex::default(),
            scope: ShardScope::ALL,
            root_name: root.display().to_string(),
            runtime: None,
        })
    }

    /// The same storage, serving the store of `scope`'s projects.
    pub(crate) fn for_scope(mut self, scope: ShardScope) -> Storage {
        self.scope = scope;
        self
    }

    /// A deployment's segments for the server: a bucket that keeps versions is refused.
    pub fn open(place: &SegmentPlace, segments_dir: &Path) -> Result<Storage> {
        let storage = Storage::for_reading(place, segments_dir)?;
        storage.refuse_versioned_bucket()?;
        Ok(storage)
    }

    /// A deployment's segments for a tool that only reads them (`lethe verify`): no probe
    /// write, so it also opens a bucket lethe would refuse to write to.
    pub fn for_reading(place: &SegmentPlace, segments_dir: &Path) -> Result<Storage> {
        match place {
            SegmentPlace::DataDir => Storage::local(segments_dir),
            SegmentPlace::S3 { bucket, prefix } => Storage::s3(bucket, prefix),
        }
    }

    /// Segments in an S3-compatible bucket under `prefix`, configured from the `AWS_*`
    /// variables (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_ALLOW_HTTP`, …), without the probe write (`open` adds it).
    pub fn s3(bucket: &str, prefix: &str) -> Result<Storage> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lethe-s3")
            .enable_all()
            .build()?;
        let builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(endpoint) = builder.get_config_value(&AmazonS3ConfigKey::Endpoint) {
            check_endpoint(&endpoint)?;
        }
        let s3 = builder
            .build()
            .map_err(|e| storage_error("configure the S3 bucket", e))?;
        Ok(Storage {
            objects: Arc::new(PrefixStore::new(s3, prefix)),
            local_root: None,
            leftovers: Mutex::default(),
            scope: ShardScope::ALL,
            root_name: format!("s3://{bucket}/{prefix}"),
            runtime: Some(runtime),
        })
    }

    /// A probe PUT: a bucket that answers with a version id keeps every object's bytes
    /// after a DELETE (versioning enabled or suspended), so lethe refuses to use it. Checked
    /// at the start, and again before a deletion task may complete (versioning can be turned
    /// on later); a local directory has no versions.
    pub(crate) fn refuse_versioned_bucket(&self) -> Result<()> {
        if self.is_local() {
            return Ok(());
        }
        let probe = Key::from(format!("_probe/{}", uuid::Uuid::now_v7().simple()));
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let put = self
            .run(
                self.objects
                    .put_opts(&probe, Bytes::from_static(b"probe").into(), options),
            )
            .map_err(|e| storage_error("write a probe object to the bucket", e))?;
        self.delete(&probe)?;
        match put.version {
            None => Ok(()),
            Some(_) => Err(StoreError::VersionedBucket),
        }
    }

    /// Runs one storage call to completion on the calling thread (never an async one): on
    /// the network backend's runtime, or inline for the local backend, which does its file
    /// I/O on the calling thread.
    fn run<F: std::future::Future>(&self, future: F) -> F::Output {
        match &self.runtime {
            Some(runtime) => runtime.block_on(future),
            None => futures_executor::block_on(future),
        }
    }

    /// Where an object is, for people: its file path, or its URL on object storage.
    pub fn describe(&self, key: &Key) -> String {
        format!("{}/{key}", self.root_name)
    }

    /// The key of a segment: `<project>/<day>/<id>.parquet`.
    pub(crate) fn key(location: &SegmentLocation) -> Key {
        Key::from(format!(
            "{}/{}/{}.parquet",
            location.project_id, location.day, location.id
        ))
    }

    /// Writes a new segment object in one PUT; fails if the key exists (keys are never
    /// reused).
    pub(crate) fn put(&self, key: &Key, bytes: Bytes) -> Result<()> {
        inject(IoPoint::SegmentWrite)?;
        self.put_new(key, bytes, "write a segment")
    }

    fn put_new(&self, key: &Key, bytes: Bytes, doing: &str) -> Result<()> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let put = self
            .run(self.objects.put_opts(key, bytes.into(), options))
            .map_err(|e| storage_error(doing, e))?;
        // Versioning turned on since the start: what is written now could never be deleted
        // (the DELETE here only hides it behind a marker), so nothing more is.
        match put.version {
            None => Ok(()),
            Some(_) => {
                let _ = self.delete(key);
                Err(StoreError::VersionedBucket)
            }
        }
    }

    /// Writes a project's published manifest of `version` (`published.rs`), create-only.
    pub(crate) fn put_manifest(&self, project_id: i64, version: i64, bytes: Bytes) -> Result<()> {
        let key = Key::from(format!("{MANIFESTS}/{project_id}/{version:020}.json"));
        self.put_new(&key, bytes, "publish a manifest")
    }

    /// The project's published manifests: (version, key), in no particular order.
    pub(crate) fn manifests(&self, project_id: i64) -> Result<Vec<(i64, Key)>> {
        let prefix = Key::from(format!("{MANIFESTS}/{project_id}"));
        let metas: Vec<_> = self.run(self.objects.list(Some(&prefix)).collect::<Vec<_>>());
        let mut found = Vec::new();
        for meta in metas {
            let key = meta
                .map_err(|e| storage_error("list published manifests", e))?
                .location;
            let version = key
                .filename()
                .and_then(|name| name.strip_suffix(".json"))
                .and_then(|v| v.parse().ok());
            if let Some(version) = version {
                found.push((version, key));
            }
        }
        Ok(found)
    }

    /// The folder of `shard`'s WAL objects: `wal` for shard 0 (a single writer's, where it
    /// always was), `wal/<shard>` for the others.
    fn wal_folder(shard: Shard) -> String {
        match shard.0 {
            0 => WAL.to_string(),
            n => format!("{WAL}/{n}"),
        }
    }

    /// The key of `shard`'s WAL object `seq`: `<folder>/<seq>.wal`.
    pub(crate) fn wal_key(shard: Shard, seq: u64) -> Key {
        Key::from(format!("{}/{seq:016}.wal", Self::wal_folder(shard)))
    }

    /// Writes `shard`'s WAL object `seq` (one group of batches), create-only.
    pub(crate) fn put_wal(&self, shard: Shard, seq: u64, bytes: Bytes) -> Result<()> {
        self.put_new(&Self::wal_key(shard, seq), bytes, "write a WAL object")
    }

    /// The sequence numbers of `shard`'s WAL objects, in no particular order (another
    /// shard's, in a folder below shard 0's, are not its).
    pub(crate) fn wal_seqs(&self, shard: Shard) -> Result<Vec<u64>> {
        let folder = Key::from(Self::wal_folder(shard));
        let metas: Vec<_> = self.run(self.objects.list(Some(&folder)).collect::<Vec<_>>());
        let depth = folder.parts().count() + 1;
        let mut found = Vec::new();
        for meta in metas {
            let key = meta
                .map_err(|e| storage_error("list WAL objects", e))?
                .location;
            if key.parts().count() != depth {
                continue;
            }
            if let Some(seq) = key
                .filename()
                .and_then(|name| name.strip_suffix(".wal"))
                .and_then(|seq| seq.parse().ok())
            {
                found.push(seq);
            }
        }
        Ok(found)
    }

    fn access_key(name: &str) -> Key {
        Key::from(format!("{ACCESS}/{name}"))
    }

    /// Writes access-request file `name`, create-only.
    pub(crate) fn put_access_file(&self, name: &str, bytes: Bytes) -> Result<()> {
        self.put_new(
            &Self::access_key(name),
            bytes,
            "write an access-request file",
        )
    }

    /// Access-request file `name`.
    pub(crate) fn access_file(&self, name: &str) -> Result<Bytes> {
        self.get(&Self::access_key(name))
    }

    /// Deletes access-request file `name`.
    pub(crate) fn delete_access_file(&self, name: &str) -> Result<()> {
        self.delete(&Self::access_key(name))
    }

    /// Whether objects are files on this machine, where a read costs the bytes it decodes,
    /// not a request.
    pub(crate) fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// The whole object.
    pub(crate) fn get(&self, key: &Key) -> Result<Bytes> {
        self.run(async { self.objects.get(key).await?.bytes().await })
            .map_err(|e| storage_error("read a segment", e))
    }

    /// The whole objects `keys`, handed to `each` in their order while the next ones are
    /// fetched (up to [`FETCHES_IN_FLIGHT`] at a time): reading many small objects, a WAL
    /// replay waits on the network once, not once per object.
    pub(crate) fn get_each(
        &self,
        keys: &[Key],
        mut each: impl FnMut(usize, Bytes) -> Result<()>,
    ) -> Result<()> {
        self.run(async {
            let mut fetched = futures_util::stream::iter(keys)
                .map(|key| async move { self.objects.get(key).await?.bytes().await })
                .buffered(FETCHES_IN_FLIGHT)
                .enumerate();
            while let Some((i, bytes)) = fetched.next().await {
                each(i, bytes.map_err(|e| storage_error("read an object", e))?)?;
            }
            Ok(())
        })
    }

    /// The last `len` bytes of the object (all of it if shorter) and its size.
    pub(crate) fn tail(&self, key: &Key, len: u64) -> Result<Tail> {
        let options = GetOptions {
            range: Some(GetRange::Suffix(len)),
            ..Default::default()
        };
        self.run(async {
            let got = self.objects.get_opts(key, options).await?;
            let size = got.meta.size;
            Ok::<_, object_store::Error>(Tail {
                size,
                bytes: got.bytes().await?,
            })
        })
        .map_err(|e| storage_error("read a segment's footer", e))
    }

    /// The given byte ranges of the object, in one request where the backend can.
    pub(crate) fn get_ranges(&self, key: &Key, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        self.run(self.objects.get_ranges(key, ranges))
            .map_err(|e| storage_error("read a segment", e))
    }

    /// The object's size, or `None` if it does not exist.
    pub(crate) fn size(&self, key: &Key) -> Result<Option<u64>> {
        match self.run(self.objects.head(key)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_error("look up a segment", e)),
        }
    }

    /// Deletes the object; deleting one that is gone is not an error.
    pub(crate) fn delete(&self, key: &Key) -> Result<()> {
        match self.run(self.objects.delete(key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage_error("delete a segment", e)),
        }
    }

    /// Deletes the objects `keys` (gone ones are not an error): in bulk requests where the
    /// backend has them (S3's DeleteObjects, 1 000 keys each), so a flush that covered
    /// hundreds of WAL objects deletes them in one round trip.
    pub(crate) fn delete_many(&self, keys: Vec<Key>) -> Result<()> {
        let locations = futures_util::stream::iter(keys.into_iter().map(Ok)).boxed();
        let results: Vec<_> = self.run(self.objects.delete_stream(locations).collect::<Vec<_>>());
        for result in results {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(storage_error("delete objects", e)),
            }
        }
        Ok(())
    }

    /// Deletes segment objects (gone ones are not an error), in bulk where the backend can.
    /// If that fails, they are kept for [`Storage::delete_leftovers`].
    pub(crate) fn delete_segments(&self, keys: Vec<Key>) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let deleted = self.try_delete_segments(&keys);
        if deleted.is_err() {
            let mut leftovers = lock(&self.leftovers);
            leftovers.extend(keys);
            publish_leftovers(leftovers.len(), self.scope);
        }
        deleted
    }

    /// How many segment objects wait for [`Storage::delete_leftovers`].
    pub(crate) fn leftover_count(&self) -> usize {
        lock(&self.leftovers).len()
    }

    /// Deletes again the segment objects whose deletion failed before. They stay listed
    /// (and counted) until they are gone, so the count never reads zero while a retry is
    /// under way; those that fail again stay for the next call.
    pub(crate) fn delete_leftovers(&self) -> Result<()> {
        let keys: Vec<Key> = lock(&self.leftovers).iter().cloned().collect();
        if keys.is_empty() {
            return Ok(());
        }
        self.try_delete_segments(&keys)?;
        let mut leftovers = lock(&self.leftovers);
        for key in &keys {
            leftovers.remove(key);
        }
        publish_leftovers(leftovers.len(), self.scope);
        Ok(())
    }

    /// One attempt to delete segment objects, counted when it fails.
    fn try_delete_segments(&self, keys: &[Key]) -> Result<()> {
        let deleted = inject(IoPoint::SegmentDelete)
            .map_err(|e| {
                StoreError::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot delete segments: {e}"),
                ))
            })
            .and_then(|()| self.delete_many(keys.to_vec()));
        if deleted.is_err() {
            metrics::counter!("lethe_segment_deletion_failures_total").increment(1);
        }
        deleted
    }

    /// The objects among the segments of this storage's projects that are not `live`: written
    /// for a commit in flight or one that failed, retired and not yet deleted, or not a
    /// segment's key at all (those are shard 0's). Another shard's objects are its writer's
    /// to judge: one of its uploads may be in flight.
    pub(crate) fn unreferenced(&self, live: BTreeSet<&Key>) -> Result<Vec<Key>> {
        let mut found = Vec::new();
        for listed in self.list()? {
            let key = match listed {
                Ok(location) => Storage::key(&location),
                Err(stray) => stray,
            };
            let parts: Vec<_> = key.parts().collect();
            let parts: Vec<&str> = parts.iter().map(AsRef::as_ref).collect();
            if owned_by(self.scope, &parts) && !live.contains(&key) {
                found.push(key);
            }
        }
        Ok(found)
    }

    /// Every segment object there is, by location (objects whose key is not a segment's are
    /// listed as `Err` with their key, for the caller to remove). Published manifests, WAL
    /// objects and access-request files are not segments and not listed.
    pub(crate) fn list(&self) -> Result<Vec<std::result::Result<SegmentLocation, Key>>> {
        let metas: Vec<_> = self.run(self.objects.list(None).collect::<Vec<_>>());
        let mut found = Vec::with_capacity(metas.len());
        for meta in metas {
            let key = meta
                .map_err(|e| storage_error("list segments", e))?
                .location;
            if key
                .parts()
                .next()
                .is_some_and(|first| [MANIFESTS, WAL, ACCESS].contains(&first.as_ref()))
            {
                continue;
            }
            found.push(location_of(&key).ok_or(key));
        }
        Ok(found)
    }

    /// Visits every object under the root, whatever its key, with where it is (for people)
    /// and its bytes: how `lethe scan` proves what a bucket holds.
    pub fn for_each_object<E: From<StoreError>>(
        &self,
        mut visit: impl FnMut(&str, Bytes) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let metas: Vec<_> = self.run(self.objects.list(None).collect::<Vec<_>>());
        for meta in metas {
            let key = meta.map_err(|e| storage_error("list objects", e))?.location;
            let bytes = self.run(async { self.objects.get(&key).await?.bytes().await });
            match bytes {
                Ok(bytes) => visit(&self.describe(&key), bytes)?,
                // Deleted since the listing (a running server retired it): it holds nothing.
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(storage_error("read an object", e).into()),
            }
        }
        Ok(())
    }

    /// Removes what an interrupted PUT of this storage's projects left behind: the local backend
    /// stages an upload as `<key>#<n>` beside its target, invisible to listings, and a crash
    /// can leave it there holding event values.
    pub(crate) fn remove_staged_uploads(&self) -> Result<usize> {
        let Some(root) = &self.local_root else {
            return Ok(0);
        };
        let mut removed = 0;
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                let parts: Vec<&str> = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .iter()
                    .filter_map(|part| part.to_str())
                    .collect();
                if path.is_dir() {
                    dirs.push(path);
                } else if is_staged_upload(&path) && owned_by(self.scope, &parts) {
                    tracing::info!(path = %path.display(), "removing an interrupted segment upload");
                    std::fs::remove_file(&path)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// An S3 endpoint must be an `http://` or `https://` URL with a host: the client would
/// otherwise fail on its first request with nothing to tell the operator.
fn check_endpoint(endpoint: &str) -> Result<()> {
    let host = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .and_then(|rest| rest.split('/').next())
        .filter(|host| !host.is_empty());
    match host {
        Some(_) => Ok(()),
        None => Err(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the S3 endpoint (AWS_ENDPOINT) must be an http:// or https:// URL with a host",
        ))),
    }
}

/// Whether a local file is an upload the backend staged (`<name>#<digits>`).
fn is_staged_upload(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit_once('#'))
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether the object at `parts` (its key's) is one `scope`'s writer owns: a segment or a
/// published manifest by its project, a WAL object by its shard's folder, and what belongs
/// to no project (access-request files, keys that name nothing) by shard 0.
fn owned_by(scope: ShardScope, parts: &[&str]) -> bool {
    let project = |part: &str| part.parse::<i64>().ok();
    match parts {
        [MANIFESTS, p, ..] => project(p).is_some_and(|p| scope.holds(p)),
        [WAL, n, _, ..] => n.parse().is_ok_and(|n| scope.shard == Shard(n)),
        [first, ..] => match project(first) {
            Some(p) => scope.holds(p),
            None => scope.shard == Shard::default(),
        },
        [] => false,
    }
}

/// The segment a key names, if it names one.
fn location_of(key: &Key) -> Option<SegmentLocation> {
    let parts: Vec<_> = key.parts().collect();
    let [project, day, file] = parts.as_slice() else {
        return None;
    };
    Some(SegmentLocation {
        project_id: project.as_ref().parse().ok()?,
        day: day.as_ref().to_string(),
        id: file.as_ref().strip_suffix(".parquet")?.to_string(),
    })
}

/// A storage failure, keeping the I/O error kind (a full disk stays a full disk) and naming
/// what was being done, never the bytes.
fn storage_error(doing: &str, error: object_store::Error) -> StoreError {
    let kind = io_kind(&error);
    StoreError::Io(std::io::Error::new(
        kind,
        format!("cannot {doing}: {error}"),
    ))
}

/// The kind of the first I/O error in the chain of `error`.
fn io_kind(error: &object_store::Error) -> std::io::ErrorKind {
    if let object_store::Error::NotFound { .. } = error {
        return std::io::ErrorKind::NotFound;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind();
        }
        source = e.source();
    }
    std::io::ErrorKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(id: &str) -> SegmentLocation {
        SegmentLocation {
            project_id: 7,
            day: "2026-12-01".into(),
            id: id.into(),
        }
    }

    #[test]
    fn objects_are_written_once_read_by_range_listed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let key = Storage::key(&location("a"));
        storage
            .put(&key, Bytes::from_static(b"0123456789"))
            .unwrap();
        assert!(
            storage.put(&key, Bytes::from_static(b"x")).is_err(),
            "a key is never overwritten"
        );
        assert_eq!(
            storage.get(&key).unwrap(),
            Bytes::from_static(b"0123456789")
        );
        let ranges = storage.get_ranges(&key, &[1..3, 7..10]).unwrap();
        assert_eq!(
            ranges,
            [Bytes::from_static(b"12"), Bytes::from_static(b"789")]
        );
        let tail = storage.tail(&key, 4).unwrap();
        assert_eq!((tail.size, tail.bytes), (10, Bytes::from_static(b"6789")));
        assert_eq!(storage.size(&key).unwrap(), Some(10));
        assert_eq!(storage.list().unwrap(), vec![Ok(location("a"))]);
        storage.delete(&key).unwrap();
        storage.delete(&key).unwrap();
        assert_eq!(storage.size(&key).unwrap(), None);
        assert!(storage.list().unwrap().is_empty());
    }

    #[test]
    fn interrupted_uploads_are_found_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let storage = || Storage::local(dir.path()).unwrap();
        let day = dir.path().join("7/2026-12-01");
        std::fs::create_dir_all(&day).unwrap();
        std::fs::write(day.join("b.parquet#3"), b"values").unwrap();
        std::fs::write(day.join("c.parquet"), b"kept").unwrap();
        let wal = dir.path().join("wal/1");
        std::fs::create_dir_all(&wal).unwrap();
        std::fs::write(wal.join("0000000000000004.wal#1"), b"values").unwrap();
        // Project 7 and WAL folder 1 are shard 1's (of 2): shard 0's writer leaves them.
        let shard = |n| ShardScope {
            shard: Shard(n),
            count: 2,
        };
        let removed = |scope| storage().for_scope(scope).remove_staged_uploads().unwrap();
        assert_eq!(removed(shard(0)), 0);
        assert!(day.join("b.parquet#3").exists());
        assert_eq!(removed(shard(1)), 2);
        assert!(!wal.join("0000000000000004.wal#1").exists());
        std::fs::write(day.join("b.parquet#3"), b"values").unwrap();
        assert_eq!(removed(ShardScope::ALL), 1);
        assert!(!day.join("b.parquet#3").exists());
        assert!(day.join("c.parquet").exists());
        assert_eq!(storage().list().unwrap(), vec![Ok(location("c"))]);
    }
}
