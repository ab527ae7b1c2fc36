//! What the store's integration tests share: a store on a fresh metadata database.
// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lethe_event::{parse_event, ParsedEvent, Shape};
use lethe_meta::MetaStore;
use lethe_store::{DataDir, Store, StoreConfig};

/// A store on `dir` (created, its organization bootstrapped if new) with `config`.
pub fn open_with(dir: &Path, config: StoreConfig) -> (Arc<MetaStore>, Store) {
    let data = DataDir::new(dir);
    data.create().unwrap();
    let meta = Arc::new(MetaStore::open(&data.meta_db()).unwrap());
    meta.bootstrap("admin@localhost", Some("pw")).unwrap();
    let store = Store::open(data, meta.clone(), config).unwrap();
    (meta, store)
}

/// Events `a` of users `user-<n>` for each n of `users`.
pub fn user_events(users: std::ops::Range<usize>) -> Vec<ParsedEvent> {
    users
        .map(|i| {
            let line = format!(r#"{{"event_type":"a","user_id":"user-{i:03}"}}"#);
            parse_event(&line, 5, Shape::Event).unwrap()
        })
        .collect()
}

/// Every segment file under `dir`, recursively (not the published manifests).
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = files_under(dir);
    found.retain(|p| p.extension().is_some_and(|e| e == "parquet"));
    found
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            match path.is_dir() {
                true => dirs.push(path),
                false => found.push(path),
            }
        }
    }
    found.sort();
    found
}
