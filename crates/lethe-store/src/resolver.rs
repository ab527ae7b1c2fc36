//! Identity, user profiles and insert_id deduplication: turns a validated event into a stored
//! one. Held in memory; changes reach the metadata store with the flush that commits the
//! events that caused them, and the WAL replays the rest after a crash.
//!
//! Identity rules (Amplitude's, simplified):
//! 1. a known `user_id` decides the amplitude_id; an unknown `device_id` sent with it joins it;
//! 2. otherwise a known `device_id` decides it, and a new `user_id` sent with it is attached to
//!    that amplitude_id if it has no user_id yet (an anonymous user signing in); if it already
//!    belongs to another user, the user_id gets a new amplitude_id and the device moves to it;
//! 3. otherwise a new amplitude_id is allocated for both ids.

use std::collections::{BTreeMap, HashMap, HashSet};

use rustc_hash::{FxHashMap, FxHashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use lethe_event::{apply_user_property_ops, Event, ParsedEvent, Profile, Props, DAY_MS};
use lethe_meta::{IdentityRecord, ProfileRecord};

/// Amplitude deduplicates an insert_id within 7 days.
const DEDUP_DAYS: i64 = 7;

#[derive(Default)]
struct User {
    user_id: Option<String>,
    profile: Profile,
    snapshot: Arc<Props>,
}

#[derive(Default)]
struct ProjectIdentity {
    by_user: FxHashMap<String, i64>,
    by_device: FxHashMap<String, i64>,
    users: FxHashMap<i64, User>,
    /// Upload day → SipHash of (device or user, insert_id) seen that day. SipHash, not Fx:
    /// a collision here would drop a real event.
    dedup: BTreeMap<i64, FxHashSet<u64>>,
}

/// Changes not yet in the metadata store.
#[derive(Default)]
pub(crate) struct Dirty {
    pub identities: Vec<IdentityRecord>,
    pub profiles: HashSet<(i64, i64)>,
}

#[derive(Default)]
pub(crate) struct Resolver {
    projects: HashMap<i64, ProjectIdentity>,
    high: i64,
    dirty: Dirty,
    /// Per project, digests of suppressed user_ids (see [`lethe_meta::user_id_digest`]).
    suppressed: HashMap<i64, FxHashSet<String>>,
}

/// The users of a project that an erasure request names, as far as the project knows them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KnownUsers {
    /// Known amplitude_ids, with the user_id mapped to each.
    pub by_amplitude_id: HashMap<i64, Option<String>>,
    /// Known user_ids, with their amplitude_id.
    pub by_user_id: HashMap<String, i64>,
}

fn dedup_key(e_device: Option<&str>, e_user: Option<&str>, insert_id: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    e_device.or(e_user).hash(&mut h);
    insert_id.hash(&mut h);
    h.finish()
}

fn snapshot(profile: &Profile) -> Arc<Props> {
    Arc::new(
        profile
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

impl Resolver {
    /// Loads committed identities and profiles.
    pub fn load(identities: Vec<IdentityRecord>, profiles: Vec<ProfileRecord>, high: i64) -> Self {
        let mut r = Resolver {
            high,
            ..Default::default()
        };
        for id in identities {
            let p = r.projects.entry(id.project_id).or_default();
            let map = if id.kind == "user" {
                &mut p.by_user
            } else {
                &mut p.by_device
            };
            map.insert(id.external_id, id.amplitude_id);
        }
        for rec in profiles {
            let profile: Profile = serde_json::from_str::<serde_json::Map<_, _>>(&rec.properties)
                .map(|m| m.into_iter().map(|(k, v)| (k, v.to_string())).collect())
                .unwrap_or_default();
            let user = User {
                user_id: rec.user_id,
                snapshot: snapshot(&profile),
                profile,
            };
            r.projects
                .entry(rec.project_id)
                .or_default()
                .users
                .insert(rec.amplitude_id, user);
        }
        r
    }

    /// Resolves one event; `None` when its insert_id was already seen (a client retry).
    pub fn resolve(&mut self, project_id: i64, ev: ParsedEvent, now: i64) -> Option<Event> {
        if self.is_suppressed(project_id, ev.user_id.as_deref()) {
            return None;
        }
        let upload = ev.server_upload_time.unwrap_or(now);
        let project = self.projects.entry(project_id).or_default();
        if let Some(insert_id) = &ev.insert_id {
            let key = dedup_key(ev.device_id.as_deref(), ev.user_id.as_deref(), insert_id);
            let day = upload.div_euclid(DAY_MS);
            if project
                .dedup
                .range(day - DEDUP_DAYS..=day)
                .any(|(_, seen)| seen.contains(&key))
            {
                return None;
            }
            project.dedup.entry(day).or_default().insert(key);
        }
        let amplitude_id =
            self.identify(project_id, ev.user_id.as_deref(), ev.device_id.as_deref());
        let project = self
            .projects
            .get_mut(&project_id)
            .expect("identified above");
        let user = project.users.entry(amplitude_id).or_default();
        if apply_user_property_ops(&mut user.profile, &ev.user_property_ops) {
            user.snapshot = snapshot(&user.profile);
            self.dirty.profiles.insert((project_id, amplitude_id));
        }
        Some(Event {
            uuid: ev.uuid.unwrap_or_else(|| uuid::Uuid::now_v7().as_u128()),
            event_type: ev.event_type,
            server_upload_time: upload,
            time: ev.time.unwrap_or(upload),
            amplitude_id,
            user_id: ev.user_id,
            device_id: ev.device_id,
            insert_id: ev.insert_id,
            session_id: ev.session_id,
            event_id: ev.event_id,
            strs: ev.strs,
            nums: ev.nums,
            groups: ev.groups,
            group_properties: ev.group_properties,
            event_properties: ev.event_properties,
            user_properties: user.snapshot.clone(),
        })
    }

    fn identify(&mut self, project_id: i64, user_id: Option<&str>, device_id: Option<&str>) -> i64 {
        let p = self.projects.entry(project_id).or_default();
        let by_user = user_id.and_then(|u| p.by_user.get(u).copied());
        let by_device = device_id.and_then(|d| p.by_device.get(d).copied());
        let (amplitude_id, attach_user, map_device) = match (by_user, by_device) {
            (Some(a), d) => (a, false, d != Some(a)),
            (None, Some(a)) => {
                let owner = p.users.get(&a).and_then(|u| u.user_id.as_ref());
                match (user_id, owner) {
                    (Some(_), Some(_)) => {
                        self.high += 1;
                        (self.high, true, true)
                    }
                    (Some(_), None) => (a, true, false),
                    (None, _) => (a, false, false),
                }
            }
            (None, None) => {
                self.high += 1;
                (self.high, user_id.is_some(), device_id.is_some())
            }
        };
        let p = self.projects.get_mut(&project_id).expect("created above");
        if let (true, Some(u)) = (attach_user, user_id) {
            p.by_user.insert(u.to_string(), amplitude_id);
            p.users.entry(amplitude_id).or_default().user_id = Some(u.to_string());
            self.dirty.profiles.insert((project_id, amplitude_id));
            self.dirty.identities.push(IdentityRecord {
                project_id,
                kind: "user",
                external_id: u.to_string(),
                amplitude_id,
            });
        }
        if let (true, Some(d)) = (map_device, device_id) {
            p.by_device.insert(d.to_string(), amplitude_id);
            self.dirty.identities.push(IdentityRecord {
                project_id,
                kind: "device",
                external_id: d.to_string(),
                amplitude_id,
            });
        }
        amplitude_id
    }

    /// Replays a WAL'd event: it carries its amplitude_id and the profile as of that event,
    /// so replay only restores state.
    pub fn observe(&mut self, project_id: i64, e: &Event) {
        self.high = self.high.max(e.amplitude_id);
        if let Some(insert_id) = &e.insert_id {
            let (device, user) = (e.device_id.as_deref(), e.user_id.as_deref());
            self.remember_insert_id(project_id, device, user, insert_id, e.server_upload_time);
        }
        let p = self.projects.entry(project_id).or_default();
        for (kind, id) in [("user", &e.user_id), ("device", &e.device_id)] {
            if let Some(id) = id {
                let map = if kind == "user" {
                    &mut p.by_user
                } else {
                    &mut p.by_device
                };
                if map.insert(id.clone(), e.amplitude_id) != Some(e.amplitude_id) {
                    self.dirty.identities.push(IdentityRecord {
                        project_id,
                        kind,
                        external_id: id.clone(),
                        amplitude_id: e.amplitude_id,
                    });
                }
            }
        }
        let user = p.users.entry(e.amplitude_id).or_default();
        if e.user_id.is_some() {
            user.user_id = e.user_id.clone();
        }
        user.profile = e.user_properties.iter().cloned().collect();
        user.snapshot = e.user_properties.clone();
        self.dirty.profiles.insert((project_id, e.amplitude_id));
    }

    /// Remembers a stored event's insert_id so that a retry of it is recognized.
    pub fn remember_insert_id(
        &mut self,
        project_id: i64,
        device_id: Option<&str>,
        user_id: Option<&str>,
        insert_id: &str,
        upload_time: i64,
    ) {
        self.projects
            .entry(project_id)
            .or_default()
            .dedup
            .entry(upload_time.div_euclid(DAY_MS))
            .or_default()
            .insert(dedup_key(device_id, user_id, insert_id));
    }

    /// Forgets dedup keys older than the window, relative to `now`.
    pub fn expire_dedup(&mut self, now: i64) {
        let oldest = now.div_euclid(DAY_MS) - DEDUP_DAYS - 1;
        for p in self.projects.values_mut() {
            p.dedup = p.dedup.split_off(&oldest);
        }
    }

    /// Takes the changes to persist with the next commit.
    pub fn take_dirty(&mut self) -> (Vec<IdentityRecord>, Vec<ProfileRecord>, i64) {
        let dirty = std::mem::take(&mut self.dirty);
        let profiles = dirty
            .profiles
            .into_iter()
            .filter_map(|(project_id, amplitude_id)| self.profile_record(project_id, amplitude_id))
            .collect();
        (dirty.identities, profiles, self.high)
    }

    fn is_suppressed(&self, project_id: i64, user_id: Option<&str>) -> bool {
        match (self.suppressed.get(&project_id), user_id) {
            (Some(set), Some(user_id)) if !set.is_empty() => {
                set.contains(&lethe_meta::user_id_digest(user_id))
            }
            _ => false,
        }
    }

    /// Replaces the suppression lists.
    pub fn set_suppressed(&mut self, suppressions: Vec<lethe_meta::Suppression>) {
        self.suppressed.clear();
        for s in suppressions {
            self.suppressed
                .entry(s.project_id)
                .or_default()
                .insert(s.user_id_sha256);
        }
    }

    /// Which of these ids the project knows.
    pub fn known_users(
        &self,
        project_id: i64,
        amplitude_ids: &[i64],
        user_ids: &[String],
    ) -> KnownUsers {
        let mut known = KnownUsers::default();
        let Some(p) = self.projects.get(&project_id) else {
            return known;
        };
        let wanted: FxHashSet<i64> = amplitude_ids.iter().copied().collect();
        let mapped = p.by_user.values().chain(p.by_device.values());
        for id in p.users.keys().chain(mapped).filter(|a| wanted.contains(a)) {
            let user_id = p.users.get(id).and_then(|u| u.user_id.clone());
            known.by_amplitude_id.insert(*id, user_id);
        }
        for u in user_ids {
            if let Some(a) = p.by_user.get(u) {
                known.by_user_id.insert(u.clone(), *a);
            }
        }
        known
    }

    /// Forgets erased users: their profiles, their id mappings, and changes not yet
    /// persisted. Their next event gets a new amplitude_id.
    pub fn forget(&mut self, project_id: i64, amplitude_ids: &[i64]) {
        let ids: FxHashSet<i64> = amplitude_ids.iter().copied().collect();
        if let Some(p) = self.projects.get_mut(&project_id) {
            p.by_user.retain(|_, a| !ids.contains(a));
            p.by_device.retain(|_, a| !ids.contains(a));
            p.users.retain(|a, _| !ids.contains(a));
        }
        let theirs = |p: i64, a: &i64| p == project_id && ids.contains(a);
        self.dirty
            .identities
            .retain(|r| !theirs(r.project_id, &r.amplitude_id));
        self.dirty.profiles.retain(|(p, a)| !theirs(*p, a));
    }

    /// Unsets `keys` in every profile of the project; returns the changed profiles.
    pub fn remove_profile_keys(&mut self, project_id: i64, keys: &[String]) -> Vec<ProfileRecord> {
        let Some(project) = self.projects.get_mut(&project_id) else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for (amplitude_id, user) in project.users.iter_mut() {
            let before = user.profile.len();
            user.profile.retain(|k, _| !keys.contains(k));
            if user.profile.len() != before {
                user.snapshot = snapshot(&user.profile);
                changed.push(*amplitude_id);
            }
        }
        changed
            .into_iter()
            .filter_map(|amplitude_id| self.profile_record(project_id, amplitude_id))
            .collect()
    }

    fn profile_record(&self, project_id: i64, amplitude_id: i64) -> Option<ProfileRecord> {
        let user = self.projects.get(&project_id)?.users.get(&amplitude_id)?;
        let map: serde_json::Map<String, serde_json::Value> = user
            .profile
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap_or_default()))
            .collect();
        Some(ProfileRecord {
            project_id,
            amplitude_id,
            user_id: user.user_id.clone(),
            properties: serde_json::Value::Object(map).to_string(),
        })
    }

    /// Puts back changes whose commit failed, so the next commit carries them.
    pub fn restore_dirty(&mut self, identities: Vec<IdentityRecord>, profiles: &[ProfileRecord]) {
        self.dirty.identities.extend(identities);
        self.dirty
            .profiles
            .extend(profiles.iter().map(|p| (p.project_id, p.amplitude_id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(user: Option<&str>, device: Option<&str>, insert: Option<&str>) -> ParsedEvent {
        ParsedEvent {
            event_type: "e".into(),
            user_id: user.map(Into::into),
            device_id: device.map(Into::into),
            insert_id: insert.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn identity_rules() {
        let mut r = Resolver::default();
        let anon = r.resolve(1, parsed(None, Some("dev-1"), None), 0).unwrap();
        let signed_in = r
            .resolve(1, parsed(Some("alice"), Some("dev-1"), None), 0)
            .unwrap();
        assert_eq!(
            anon.amplitude_id, signed_in.amplitude_id,
            "anonymous device joins user"
        );
        let bob = r
            .resolve(1, parsed(Some("bobby"), Some("dev-1"), None), 0)
            .unwrap();
        assert_ne!(
            bob.amplitude_id, anon.amplitude_id,
            "another user on the device is new"
        );
        let alice_again = r.resolve(1, parsed(Some("alice"), None, None), 0).unwrap();
        assert_eq!(alice_again.amplitude_id, anon.amplitude_id);
        let other_project = r.resolve(2, parsed(Some("alice"), None, None), 0).unwrap();
        assert_ne!(other_project.amplitude_id, anon.amplitude_id);
    }

    #[test]
    fn insert_id_dedups_per_device_within_seven_days() {
        let mut r = Resolver::default();
        assert!(r
            .resolve(1, parsed(None, Some("dev-1"), Some("i1")), 0)
            .is_some());
        assert!(r
            .resolve(1, parsed(None, Some("dev-1"), Some("i1")), DAY_MS)
            .is_none());
        assert!(r
            .resolve(1, parsed(None, Some("dev-2"), Some("i1")), DAY_MS)
            .is_some());
        assert!(r
            .resolve(1, parsed(None, Some("dev-1"), Some("i1")), 9 * DAY_MS)
            .is_some());
    }
}
