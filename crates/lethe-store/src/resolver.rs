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
//!
//! Resolution runs before the WAL append, so every change it makes is journaled per batch
//! until the WAL writer reports the batch durable: if the append fails, [`Resolver::rollback`]
//! puts back everything the failed batches (and any resolved after them) changed, so a client
//! retrying a refused batch is neither deduplicated against it nor resolved against its ids.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::{FxHashMap, FxHashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use lethe_event::groups::{self, GroupKey};
use lethe_event::limits::{MAX_EVENT_KEYS_PER_DAY, MAX_GROUP_KEYS_PER_DAY, MAX_USER_KEYS_PER_DAY};
use lethe_event::{apply_user_property_ops, Day, Event, ParsedEvent, Profile, Props};
use lethe_meta::{Commit, GroupRecord, IdKind, IdentityRecord, ProfileRecord};

use crate::StoreError;

/// Amplitude deduplicates an insert_id within 7 days.
const DEDUP_DAYS: i64 = 7;

#[derive(Default)]
struct User {
    user_id: Option<String>,
    profile: Profile,
    snapshot: Arc<Props>,
    /// Event time of the latest event that set the profile: an imported snapshot older
    /// than it does not replace the profile.
    as_of: i64,
}

/// A user as it was before a change: user_id, profile, as_of.
type UserBefore = (Option<String>, Arc<Props>, i64);

impl User {
    fn before(&self) -> UserBefore {
        (self.user_id.clone(), self.snapshot.clone(), self.as_of)
    }

    /// Applies one event at `time` to the profile; returns what changed and the user
    /// properties the event carries.
    /// - An imported snapshot is the event's user properties exactly; it becomes the profile
    ///   when no later event set it (imports arrive in any order).
    /// - Operations change the profile in arrival order, as Amplitude applies them; with
    ///   `skip_sync` the event shows them applied and the profile stays as it was.
    fn take(
        &mut self,
        imported: Option<Props>,
        ops: &[(String, serde_json::Value)],
        skip_sync: bool,
        time: i64,
    ) -> (Moved, Arc<Props>) {
        if let Some(imported) = imported {
            // Most rows of a user carry the properties the profile has: they share its
            // snapshot, and only move its time.
            let same = *self.snapshot == imported;
            let shown = match same {
                true => self.snapshot.clone(),
                false => Arc::new(imported),
            };
            let moved = match (time.cmp(&self.as_of), same) {
                (std::cmp::Ordering::Less, _) | (std::cmp::Ordering::Equal, true) => Moved::Nothing,
                (_, true) => Moved::Time,
                (_, false) => {
                    self.profile = shown.iter().cloned().collect();
                    self.snapshot = shown.clone();
                    Moved::Properties
                }
            };
            self.as_of = self.as_of.max(time);
            return (moved, shown);
        }
        if skip_sync {
            let mut shown = self.profile.clone();
            return match apply_user_property_ops(&mut shown, ops) {
                true => (Moved::Nothing, snapshot(&shown)),
                false => (Moved::Nothing, self.snapshot.clone()),
            };
        }
        if !apply_user_property_ops(&mut self.profile, ops) {
            return (Moved::Nothing, self.snapshot.clone());
        }
        self.snapshot = snapshot(&self.profile);
        self.as_of = self.as_of.max(time);
        (Moved::Properties, self.snapshot.clone())
    }
}

/// What an event changed in a profile or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moved {
    Nothing,
    /// Only the time it is current as of: an imported row repeating the properties. Kept in
    /// memory at once and persisted by the next flush, not by every import commit (which
    /// would rewrite every user an import touches).
    Time,
    Properties,
}

/// One group's current properties.
#[derive(Debug, Default, Clone, PartialEq)]
struct Group {
    profile: Profile,
    /// Event time of the latest change: an imported snapshot older than it is not applied.
    as_of: i64,
}

#[derive(Default)]
struct ProjectIdentity {
    by_user: FxHashMap<String, i64>,
    by_device: FxHashMap<String, i64>,
    users: FxHashMap<i64, User>,
    groups: FxHashMap<GroupKey, Group>,
    /// Upload day → SipHash of (device or user, insert_id) seen that day. SipHash, not Fx:
    /// a collision here would drop a real event.
    dedup: BTreeMap<Day, FxHashSet<u64>>,
    /// Upload day → the property keys the project's events of that day carry.
    keys: BTreeMap<Day, DayKeys>,
}

/// The distinct property keys of one project and day, held under the documented limits.
#[derive(Default)]
struct DayKeys {
    event: FxHashSet<String>,
    user: FxHashSet<String>,
    group: FxHashSet<String>,
    /// The last user-property snapshot whose keys were all admitted: events of one user
    /// share their snapshot, so most events need no lookup of their user properties.
    last_snapshot: Option<Arc<Props>>,
}

/// Which property keys an event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Event,
    User,
    Group,
}

impl KeyKind {
    /// The request field the keys come from.
    pub fn field(self) -> &'static str {
        match self {
            KeyKind::Event => "event_properties",
            KeyKind::User => "user_properties",
            KeyKind::Group => "group_properties",
        }
    }
}

impl DayKeys {
    fn set(&mut self, kind: KeyKind) -> &mut FxHashSet<String> {
        match kind {
            KeyKind::Event => &mut self.event,
            KeyKind::User => &mut self.user,
            KeyKind::Group => &mut self.group,
        }
    }
}

/// Keys changed since the last commit; their current values are read when taken, so a
/// rolled-back change is never persisted.
#[derive(Default)]
struct Dirty {
    identities: HashSet<(i64, IdKind, String)>,
    profiles: HashSet<(i64, i64)>,
    groups: HashSet<(i64, GroupKey)>,
    /// Profiles and groups whose `as_of` alone moved: persisted by flushes only.
    profile_times: HashSet<(i64, i64)>,
    group_times: HashSet<(i64, GroupKey)>,
}

/// One change made by resolving an event, with what it replaced.
enum Change {
    Dedup {
        project_id: i64,
        day: Day,
        key: u64,
    },
    Mapping {
        project_id: i64,
        kind: IdKind,
        external_id: String,
        before: Option<i64>,
    },
    /// A property key first seen on its day.
    Key {
        project_id: i64,
        day: Day,
        kind: KeyKind,
        key: String,
    },
    /// A group before the change; `None` when the group was new.
    Group {
        project_id: i64,
        key: GroupKey,
        before: Option<Group>,
    },
    /// A user's user_id and profile before the change; `None` when the user was new.
    User {
        project_id: i64,
        amplitude_id: i64,
        before: Option<UserBefore>,
    },
}

/// The changes of the batches resolved but not yet known durable, oldest first.
#[derive(Default)]
struct Journal {
    /// Changes of the batch being resolved.
    open: Vec<Change>,
    sealed: VecDeque<(u64, Vec<Change>)>,
    next_batch: u64,
    /// Highest batch number the WAL writer made durable (shared with it).
    durable: Arc<AtomicU64>,
    /// Bumped by every rollback: a batch resolved in an older epoch is refused by the WAL.
    epoch: u64,
}

impl Journal {
    /// Keeps the journaled changes `f` returns true for; `f` may edit them.
    fn retain_changes(&mut self, mut f: impl FnMut(&mut Change) -> bool) {
        self.open.retain_mut(&mut f);
        for (_, changes) in self.sealed.iter_mut() {
            changes.retain_mut(&mut f);
        }
    }
}

/// The dedup keys of one segment's rows, by upload day: what a start reads from the recent
/// segments (beside the metadata's identities) for the resolver to remember.
pub(crate) struct StoredKeys {
    pub project_id: i64,
    pub by_day: BTreeMap<Day, Vec<u64>>,
}

/// Identifies a resolved batch to the WAL writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub batch: u64,
    pub epoch: u64,
}

#[derive(Default)]
pub(crate) struct Resolver {
    projects: HashMap<i64, ProjectIdentity>,
    high: i64,
    /// Every amplitude_id handed out on this server: an imported id is kept only if new.
    allocated: FxHashSet<i64>,
    dirty: Dirty,
    journal: Journal,
    /// Per project, digests of suppressed user_ids (see [`lethe_meta::user_id_digest`]).
    suppressed: HashMap<i64, FxHashSet<String>>,
}

/// Changes of a batch that bypasses the WAL (bulk import), to undo if its commit fails.
pub(crate) struct Unjournaled(Vec<Change>);

/// A user's identity and current user properties, as the User Profile API answers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    pub amplitude_id: i64,
    /// The user_id mapped to the user, if any.
    pub user_id: Option<String>,
    /// Current user properties: key → compact JSON text.
    pub properties: Arc<Props>,
}

/// The users of a project that an erasure request names, as far as the project knows them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KnownUsers {
    /// Known amplitude_ids, with the user_id mapped to each.
    pub by_amplitude_id: HashMap<i64, Option<String>>,
    /// Known user_ids, with their amplitude_id.
    pub by_user_id: HashMap<String, i64>,
}

impl ProjectIdentity {
    fn map(&self, kind: IdKind) -> &FxHashMap<String, i64> {
        match kind {
            IdKind::User => &self.by_user,
            IdKind::Device => &self.by_device,
        }
    }

    fn map_mut(&mut self, kind: IdKind) -> &mut FxHashMap<String, i64> {
        match kind {
            IdKind::User => &mut self.by_user,
            IdKind::Device => &mut self.by_device,
        }
    }
}

pub(crate) fn dedup_key(e_device: Option<&str>, e_user: Option<&str>, insert_id: &str) -> u64 {
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
    pub fn load(
        identities: Vec<IdentityRecord>,
        profiles: Vec<ProfileRecord>,
        groups: Vec<GroupRecord>,
        high: i64,
    ) -> Result<Self, StoreError> {
        let mut r = Resolver {
            high,
            ..Default::default()
        };
        for id in identities {
            r.allocated.insert(id.amplitude_id);
            let p = r.projects.entry(id.project_id).or_default();
            p.map_mut(id.kind).insert(id.external_id, id.amplitude_id);
        }
        for rec in profiles {
            let what = || {
                format!(
                    "profile of amplitude_id {} in project {}",
                    rec.amplitude_id, rec.project_id
                )
            };
            let profile = profile_from_json(&rec.properties, what)?;
            r.allocated.insert(rec.amplitude_id);
            let user = User {
                user_id: rec.user_id,
                snapshot: snapshot(&profile),
                profile,
                as_of: rec.as_of,
            };
            r.projects
                .entry(rec.project_id)
                .or_default()
                .users
                .insert(rec.amplitude_id, user);
        }
        for rec in groups {
            let what = || format!("properties of a group in project {}", rec.project_id);
            let group = Group {
                profile: profile_from_json(&rec.properties, what)?,
                as_of: rec.as_of,
            };
            r.projects
                .entry(rec.project_id)
                .or_default()
                .groups
                .insert((rec.group_type, rec.group_value), group);
        }
        Ok(r)
    }

    /// Resolves one event; `None` when its insert_id was already seen (a client retry) or its
    /// user is suppressed. Refused, with no change left behind, when its property keys would
    /// take its day past a limit: the error names which keys.
    pub fn resolve(
        &mut self,
        project_id: i64,
        ev: ParsedEvent,
        now: i64,
    ) -> Result<Option<Event>, KeyKind> {
        if self.is_suppressed(project_id, ev.user_id.as_deref()) {
            return Ok(None);
        }
        let mark = self.journal.open.len();
        let resolved = self.resolve_unchecked(project_id, ev, now);
        if let Some(event) = &resolved {
            if let Err(kind) = self.admit_keys(project_id, event) {
                let changes = self.journal.open.split_off(mark);
                self.undo(changes);
                return Err(kind);
            }
        }
        Ok(resolved)
    }

    /// Adds the event's property keys to its day's sets, unless that would pass a limit.
    fn admit_keys(&mut self, project_id: i64, event: &Event) -> Result<(), KeyKind> {
        let day = Day::of_ms(event.server_upload_time);
        let keys = self
            .projects
            .entry(project_id)
            .or_default()
            .keys
            .entry(day)
            .or_default();
        let new = |set: &FxHashSet<String>, props: &Props| -> Vec<String> {
            props
                .iter()
                .filter(|(k, _)| !set.contains(k))
                .map(|(k, _)| k.clone())
                .collect()
        };
        let new_event = new(&keys.event, &event.event_properties);
        let seen_snapshot = keys
            .last_snapshot
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &event.user_properties));
        let new_user = match seen_snapshot {
            true => Vec::new(),
            false => new(&keys.user, &event.user_properties),
        };
        if keys.event.len() + new_event.len() > MAX_EVENT_KEYS_PER_DAY {
            return Err(KeyKind::Event);
        }
        if keys.user.len() + new_user.len() > MAX_USER_KEYS_PER_DAY {
            return Err(KeyKind::User);
        }
        let new_group = new(&keys.group, &event.group_properties);
        if keys.group.len() + new_group.len() > MAX_GROUP_KEYS_PER_DAY {
            return Err(KeyKind::Group);
        }
        keys.last_snapshot = Some(event.user_properties.clone());
        let all_new = [
            (KeyKind::Event, new_event),
            (KeyKind::User, new_user),
            (KeyKind::Group, new_group),
        ];
        for (kind, new) in all_new {
            for key in new {
                keys.set(kind).insert(key.clone());
                self.journal.open.push(Change::Key {
                    project_id,
                    day,
                    kind,
                    key,
                });
            }
        }
        Ok(())
    }

    /// Records keys already stored on a day (segments at start-up), outside any limit.
    pub fn admit_stored_keys<'a>(
        &mut self,
        project_id: i64,
        day: Day,
        kind: KeyKind,
        keys: impl Iterator<Item = &'a str>,
    ) {
        let set = self
            .projects
            .entry(project_id)
            .or_default()
            .keys
            .entry(day)
            .or_default()
            .set(kind);
        for key in keys {
            if !set.contains(key) {
                set.insert(key.to_string());
            }
        }
    }

    fn resolve_unchecked(&mut self, project_id: i64, ev: ParsedEvent, now: i64) -> Option<Event> {
        let upload = ev.server_upload_time.unwrap_or(now);
        let project = self.projects.entry(project_id).or_default();
        if let Some(insert_id) = &ev.insert_id {
            let key = dedup_key(ev.device_id.as_deref(), ev.user_id.as_deref(), insert_id);
            let day = Day::of_ms(upload);
            if project
                .dedup
                .range(day.plus(-DEDUP_DAYS)..=day)
                .any(|(_, seen)| seen.contains(&key))
            {
                return None;
            }
            project.dedup.entry(day).or_default().insert(key);
            self.journal.open.push(Change::Dedup {
                project_id,
                day,
                key,
            });
        }
        let amplitude_id = self.identify(
            project_id,
            ev.user_id.as_deref(),
            ev.device_id.as_deref(),
            ev.amplitude_id,
        );
        let project = self
            .projects
            .get_mut(&project_id)
            .expect("identified above");
        let time = ev.time.unwrap_or(upload);
        // What to put back, taken only when something may change (most events carry no
        // user-property operation for a known user).
        let may_change = !ev.user_property_ops.is_empty() || ev.user_snapshot.is_some();
        let before = match (project.users.get(&amplitude_id), may_change) {
            (Some(_), false) => None,
            (Some(u), true) => Some(Some(u.before())),
            (None, _) => Some(None),
        };
        let user = project.users.entry(amplitude_id).or_default();
        let (moved, user_properties) = user.take(
            ev.user_snapshot,
            &ev.user_property_ops,
            ev.skip_user_properties_sync,
            time,
        );
        let changed = moved == Moved::Properties;
        match moved {
            Moved::Properties => self.dirty.profiles.insert((project_id, amplitude_id)),
            Moved::Time => self.dirty.profile_times.insert((project_id, amplitude_id)),
            Moved::Nothing => false,
        };
        let group_properties = self.resolve_groups(
            project_id,
            ev.groups.as_deref(),
            &ev.group_property_ops,
            ev.group_snapshot,
            time,
        );
        if let Some(before) = before.filter(|b| changed || b.is_none()) {
            self.journal.open.push(Change::User {
                project_id,
                amplitude_id,
                before,
            });
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
            group_properties,
            event_properties: ev.event_properties,
            user_properties,
            extra: ev.extra,
            skip_user_properties_sync: ev.skip_user_properties_sync,
            profile_only: ev.profile_only,
        })
    }

    /// Applies an event's group-property operations (or an imported snapshot) to the groups
    /// it names; returns the group properties the event stores: an imported snapshot as
    /// given, else its groups' properties after the operations.
    fn resolve_groups(
        &mut self,
        project_id: i64,
        names: Option<&str>,
        ops: &[(String, serde_json::Value)],
        imported: Option<Props>,
        time: i64,
    ) -> Props {
        if names.is_none() {
            return imported.unwrap_or_default();
        }
        let keys = names
            .and_then(|text| groups::parse_groups(text).ok())
            .unwrap_or_default();
        let project = self.projects.entry(project_id).or_default();
        for key in &keys {
            let before = project.groups.get(key).cloned();
            let mut group = before.clone().unwrap_or_default();
            match &imported {
                Some(snapshot) if time >= group.as_of => {
                    group.profile = groups::profile_of(snapshot, key);
                    group.as_of = time;
                }
                Some(_) => continue,
                None => {
                    if !apply_user_property_ops(&mut group.profile, ops) {
                        continue;
                    }
                    group.as_of = group.as_of.max(time);
                }
            }
            match &before {
                Some(b) if *b == group => continue,
                Some(b) if b.profile == group.profile => {
                    // Only its time moved (an imported row repeating it): see `Moved::Time`.
                    project.groups.insert(key.clone(), group);
                    self.dirty.group_times.insert((project_id, key.clone()));
                    continue;
                }
                _ => {}
            }
            project.groups.insert(key.clone(), group);
            self.dirty.groups.insert((project_id, key.clone()));
            self.journal.open.push(Change::Group {
                project_id,
                key: key.clone(),
                before,
            });
        }
        match imported {
            Some(snapshot) => snapshot,
            None => groups::split(
                keys.iter()
                    .filter_map(|k| project.groups.get(k).map(|g| (k, &g.profile))),
            ),
        }
    }

    /// A new amplitude_id: the imported `hint` when no user of this server has it.
    fn allocate(&mut self, hint: Option<i64>) -> i64 {
        let id = match hint.filter(|h| !self.allocated.contains(h)) {
            Some(h) => h,
            None => self.high + 1,
        };
        self.high = self.high.max(id);
        self.allocated.insert(id);
        id
    }

    fn identify(
        &mut self,
        project_id: i64,
        user_id: Option<&str>,
        device_id: Option<&str>,
        hint: Option<i64>,
    ) -> i64 {
        let p = self.projects.entry(project_id).or_default();
        let by_user = user_id.and_then(|u| p.by_user.get(u).copied());
        let by_device = device_id.and_then(|d| p.by_device.get(d).copied());
        let (amplitude_id, attach_user, map_device) = match (by_user, by_device) {
            (Some(a), d) => (a, false, d != Some(a)),
            (None, Some(a)) => {
                let owner = p.users.get(&a).and_then(|u| u.user_id.as_ref());
                match (user_id, owner) {
                    (Some(_), Some(_)) => (self.allocate(hint), true, true),
                    (Some(_), None) => (a, true, false),
                    (None, _) => (a, false, false),
                }
            }
            (None, None) => (self.allocate(hint), user_id.is_some(), device_id.is_some()),
        };
        if let (true, Some(u)) = (attach_user, user_id) {
            self.map(project_id, IdKind::User, u, amplitude_id);
            let user = self
                .projects
                .get_mut(&project_id)
                .expect("created above")
                .users
                .entry(amplitude_id);
            let before = match &user {
                std::collections::hash_map::Entry::Occupied(o) => Some(o.get().before()),
                std::collections::hash_map::Entry::Vacant(_) => None,
            };
            user.or_default().user_id = Some(u.to_string());
            self.dirty.profiles.insert((project_id, amplitude_id));
            self.journal.open.push(Change::User {
                project_id,
                amplitude_id,
                before,
            });
        }
        if let (true, Some(d)) = (map_device, device_id) {
            self.map(project_id, IdKind::Device, d, amplitude_id);
        }
        amplitude_id
    }

    /// Maps an external id to an amplitude_id, journaled.
    fn map(&mut self, project_id: i64, kind: IdKind, external_id: &str, amplitude_id: i64) {
        let p = self.projects.entry(project_id).or_default();
        let before = p
            .map_mut(kind)
            .insert(external_id.to_string(), amplitude_id);
        self.dirty
            .identities
            .insert((project_id, kind, external_id.to_string()));
        self.journal.open.push(Change::Mapping {
            project_id,
            kind,
            external_id: external_id.to_string(),
            before,
        });
    }

    /// Closes the batch resolved since the last call; the WAL writer reports it durable
    /// through [`Resolver::durable_watermark`] or the batch is undone by a rollback.
    pub fn seal(&mut self) -> Ticket {
        let j = &mut self.journal;
        let durable = j.durable.load(Ordering::Acquire);
        while j.sealed.front().is_some_and(|(b, _)| *b <= durable) {
            j.sealed.pop_front();
        }
        j.next_batch += 1;
        let batch = j.next_batch;
        let changes = std::mem::take(&mut j.open);
        if !changes.is_empty() {
            j.sealed.push_back((batch, changes));
        }
        Ticket {
            batch,
            epoch: j.epoch,
        }
    }

    /// The current epoch: batches resolved in it are accepted by the WAL writer.
    pub fn epoch(&self) -> u64 {
        self.journal.epoch
    }

    /// The watermark the WAL writer advances after each fsync: every batch numbered at or
    /// below it is durable.
    pub fn durable_watermark(&self) -> Arc<AtomicU64> {
        self.journal.durable.clone()
    }

    /// Undoes every batch above the durable watermark, newest first, and starts a new
    /// epoch; returns it. Called by the WAL writer when an append or fsync failed.
    pub fn rollback(&mut self) -> u64 {
        let durable = self.journal.durable.load(Ordering::Acquire);
        let open = std::mem::take(&mut self.journal.open);
        self.undo(open);
        while let Some((batch, changes)) = self.journal.sealed.pop_back() {
            if batch <= durable {
                self.journal.sealed.push_back((batch, changes));
                break;
            }
            self.undo(changes);
        }
        self.journal.epoch += 1;
        self.journal.epoch
    }

    /// Undoes the batch being resolved (refused before it reached the WAL).
    pub fn discard_open(&mut self) {
        let open = std::mem::take(&mut self.journal.open);
        self.undo(open);
    }

    /// Takes the changes resolved for a batch that does not go through the WAL.
    pub fn take_unjournaled(&mut self) -> Unjournaled {
        Unjournaled(std::mem::take(&mut self.journal.open))
    }

    /// A bulk import's commit failed: forgets its insert_ids so that a retry stores its
    /// lines. Its identities and profile changes stay: later batches may already build on
    /// them, and they describe users the retry names again.
    pub fn forget_insert_ids(&mut self, changes: Unjournaled) {
        let dedup = changes
            .0
            .into_iter()
            .filter(|c| matches!(c, Change::Dedup { .. }));
        self.undo(dedup.collect());
    }

    fn undo(&mut self, changes: Vec<Change>) {
        for change in changes.into_iter().rev() {
            match change {
                Change::Dedup {
                    project_id,
                    day,
                    key,
                } => {
                    if let Some(seen) = self
                        .projects
                        .get_mut(&project_id)
                        .and_then(|p| p.dedup.get_mut(&day))
                    {
                        seen.remove(&key);
                    }
                }
                Change::Key {
                    project_id,
                    day,
                    kind,
                    key,
                } => {
                    if let Some(keys) = self
                        .projects
                        .get_mut(&project_id)
                        .and_then(|p| p.keys.get_mut(&day))
                    {
                        keys.set(kind).remove(&key);
                        // The remembered snapshot may hold the key: check the next one again.
                        keys.last_snapshot = None;
                    }
                }
                Change::Mapping {
                    project_id,
                    kind,
                    external_id,
                    before,
                } => {
                    let map = self.projects.entry(project_id).or_default().map_mut(kind);
                    match before {
                        Some(a) => map.insert(external_id, a),
                        None => map.remove(&external_id),
                    };
                }
                Change::Group {
                    project_id,
                    key,
                    before,
                } => {
                    let groups = &mut self.projects.entry(project_id).or_default().groups;
                    match before {
                        Some(group) => groups.insert(key, group),
                        None => groups.remove(&key),
                    };
                }
                Change::User {
                    project_id,
                    amplitude_id,
                    before,
                } => {
                    let users = &mut self.projects.entry(project_id).or_default().users;
                    match before {
                        Some((user_id, snapshot, as_of)) => {
                            users.insert(
                                amplitude_id,
                                User {
                                    user_id,
                                    profile: snapshot.iter().cloned().collect(),
                                    snapshot,
                                    as_of,
                                },
                            );
                        }
                        None => {
                            users.remove(&amplitude_id);
                        }
                    }
                }
            }
        }
    }

    /// Replays a WAL'd event: it carries its amplitude_id and the profile as of that event,
    /// so replay only restores state.
    pub fn observe(&mut self, project_id: i64, e: &Event) {
        self.high = self.high.max(e.amplitude_id);
        self.allocated.insert(e.amplitude_id);
        let day = Day::of_ms(e.server_upload_time);
        for (kind, props) in [
            (KeyKind::Event, &e.event_properties),
            (KeyKind::User, &*e.user_properties),
            (KeyKind::Group, &e.group_properties),
        ] {
            self.admit_stored_keys(project_id, day, kind, props.iter().map(|(k, _)| k.as_str()));
        }
        if let Some(insert_id) = &e.insert_id {
            let (device, user) = (e.device_id.as_deref(), e.user_id.as_deref());
            self.remember_insert_id(project_id, device, user, insert_id, e.server_upload_time);
        }
        let p = self.projects.entry(project_id).or_default();
        for (kind, id) in [(IdKind::User, &e.user_id), (IdKind::Device, &e.device_id)] {
            if let Some(id) = id {
                if p.map_mut(kind).insert(id.clone(), e.amplitude_id) != Some(e.amplitude_id) {
                    self.dirty.identities.insert((project_id, kind, id.clone()));
                }
            }
        }
        let user = p.users.entry(e.amplitude_id).or_default();
        if e.user_id.is_some() {
            user.user_id = e.user_id.clone();
        }
        if !e.skip_user_properties_sync {
            user.profile = e.user_properties.iter().cloned().collect();
            user.snapshot = e.user_properties.clone();
            user.as_of = user.as_of.max(e.time);
        }
        self.dirty.profiles.insert((project_id, e.amplitude_id));
        // The event holds every group it names as it was after the event.
        let named = e
            .groups
            .as_deref()
            .and_then(|t| groups::parse_groups(t).ok());
        for key in named.into_iter().flatten() {
            let profile = groups::profile_of(&e.group_properties, &key);
            let group = p.groups.entry(key.clone()).or_default();
            if group.profile != profile {
                group.profile = profile;
                group.as_of = group.as_of.max(e.time);
                self.dirty.groups.insert((project_id, key));
            }
        }
    }

    /// Remembers a stored event's insert_id so that a retry of it is recognized.
    fn remember_insert_id(
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
            .entry(Day::of_ms(upload_time))
            .or_default()
            .insert(dedup_key(device_id, user_id, insert_id));
    }

    /// Remembers the dedup keys of a segment's events (a recent one's, read at start).
    pub fn remember_stored(&mut self, segment: StoredKeys) {
        let dedup = &mut self.projects.entry(segment.project_id).or_default().dedup;
        for (day, keys) in segment.by_day {
            dedup.entry(day).or_default().extend(keys);
        }
    }

    /// Forgets dedup keys and day key sets older than the window, relative to `now`.
    pub fn expire_dedup(&mut self, now: i64) {
        let oldest = Day::of_ms(now).plus(-DEDUP_DAYS - 1);
        for p in self.projects.values_mut() {
            p.dedup = p.dedup.split_off(&oldest);
            p.keys = p.keys.split_off(&oldest);
        }
    }

    /// Takes the changes to persist with the next commit: identities, profiles, groups and
    /// the amplitude_id high-water mark, as a commit to complete. `with_times` (flushes) also
    /// takes the profiles and groups whose time alone moved.
    pub fn take_dirty(&mut self, with_times: bool) -> Commit {
        let mut dirty = std::mem::take(&mut self.dirty);
        if !with_times {
            self.dirty.profile_times = std::mem::take(&mut dirty.profile_times);
            self.dirty.group_times = std::mem::take(&mut dirty.group_times);
        }
        // A record written whole carries its time already.
        let profile_times = dirty
            .profile_times
            .iter()
            .filter(|key| !dirty.profiles.contains(key))
            .filter_map(|&(project_id, amplitude_id)| {
                let user = self.projects.get(&project_id)?.users.get(&amplitude_id)?;
                Some((project_id, amplitude_id, user.as_of))
            })
            .collect();
        let group_times = dirty
            .group_times
            .iter()
            .filter(|key| !dirty.groups.contains(key))
            .filter_map(|(project_id, key)| {
                let group = self.projects.get(project_id)?.groups.get(key)?;
                Some((*project_id, key.0.clone(), key.1.clone(), group.as_of))
            })
            .collect();
        let identities = dirty
            .identities
            .into_iter()
            .filter_map(|(project_id, kind, external_id)| {
                let amplitude_id = *self
                    .projects
                    .get(&project_id)?
                    .map(kind)
                    .get(&external_id)?;
                Some(IdentityRecord {
                    project_id,
                    kind,
                    external_id,
                    amplitude_id,
                })
            })
            .collect();
        let profiles = dirty
            .profiles
            .into_iter()
            .filter_map(|(project_id, amplitude_id)| self.profile_record(project_id, amplitude_id))
            .collect();
        let groups = dirty
            .groups
            .into_iter()
            .filter_map(|(project_id, key)| self.group_record(project_id, &key))
            .collect();
        Commit {
            identities,
            profiles,
            groups,
            profile_times,
            group_times,
            amplitude_id_high: self.high,
            ..Default::default()
        }
    }

    fn group_record(&self, project_id: i64, key: &GroupKey) -> Option<GroupRecord> {
        let group = self.projects.get(&project_id)?.groups.get(key)?;
        Some(GroupRecord {
            project_id,
            group_type: key.0.clone(),
            group_value: key.1.clone(),
            properties: profile_json(&group.profile),
            as_of: group.as_of,
        })
    }

    /// Whether profiles or groups wait for a flush to persist their time.
    pub fn has_pending_times(&self) -> bool {
        !self.dirty.profile_times.is_empty() || !self.dirty.group_times.is_empty()
    }

    /// Unsets `keys` in every group of the project; returns the changed groups.
    pub fn remove_group_keys(&mut self, project_id: i64, keys: &[String]) -> Vec<GroupRecord> {
        let Some(project) = self.projects.get_mut(&project_id) else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for (key, group) in project.groups.iter_mut() {
            let before = group.profile.len();
            group.profile.retain(|k, _| !keys.contains(k));
            if group.profile.len() != before {
                changed.push(key.clone());
            }
        }
        // A rollback must not bring the keys back either.
        self.journal.retain_changes(|change| {
            if let Change::Group {
                project_id: p,
                before: Some(group),
                ..
            } = change
            {
                if *p == project_id {
                    group.profile.retain(|k, _| !keys.contains(k));
                }
            }
            true
        });
        changed
            .iter()
            .filter_map(|key| self.group_record(project_id, key))
            .collect()
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

    /// The current profile of the user an id names: a user_id decides, else a device_id.
    pub fn profile(
        &self,
        project_id: i64,
        user_id: Option<&str>,
        device_id: Option<&str>,
    ) -> Option<UserProfile> {
        let p = self.projects.get(&project_id)?;
        let amplitude_id = user_id
            .and_then(|u| p.by_user.get(u))
            .or_else(|| device_id.and_then(|d| p.by_device.get(d)))
            .copied()?;
        self.profile_of(project_id, amplitude_id)
    }

    /// The current profile of the user `amplitude_id` (empty if it has none yet).
    pub fn profile_of(&self, project_id: i64, amplitude_id: i64) -> Option<UserProfile> {
        let user = self.projects.get(&project_id)?.users.get(&amplitude_id);
        Some(UserProfile {
            amplitude_id,
            user_id: user.and_then(|u| u.user_id.clone()),
            properties: user.map(|u| u.snapshot.clone()).unwrap_or_default(),
        })
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
        // Dirty identity keys of theirs now map to nothing and are skipped when taken.
        self.dirty
            .profiles
            .retain(|(p, a)| !(*p == project_id && ids.contains(a)));
        // A rollback must not bring them back.
        self.journal.retain_changes(|change| match change {
            Change::User {
                project_id: p,
                amplitude_id,
                ..
            } => !(*p == project_id && ids.contains(amplitude_id)),
            Change::Mapping {
                project_id: p,
                before,
                ..
            } => {
                if *p == project_id && before.is_some_and(|a| ids.contains(&a)) {
                    *before = None;
                }
                true
            }
            Change::Dedup { .. } | Change::Key { .. } | Change::Group { .. } => true,
        });
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
        // A rollback must not bring the keys back either.
        self.journal.retain_changes(|change| {
            if let Change::User {
                project_id: p,
                before: Some((_, props, _)),
                ..
            } = change
            {
                if *p == project_id && props.iter().any(|(k, _)| keys.contains(k)) {
                    let kept = props.iter().filter(|(k, _)| !keys.contains(k));
                    *props = Arc::new(kept.cloned().collect());
                }
            }
            true
        });
        changed
            .into_iter()
            .filter_map(|amplitude_id| self.profile_record(project_id, amplitude_id))
            .collect()
    }

    fn profile_record(&self, project_id: i64, amplitude_id: i64) -> Option<ProfileRecord> {
        let user = self.projects.get(&project_id)?.users.get(&amplitude_id)?;
        Some(ProfileRecord {
            project_id,
            amplitude_id,
            user_id: user.user_id.clone(),
            properties: profile_json(&user.profile),
            as_of: user.as_of,
        })
    }

    /// Puts back changes whose commit failed, so the next commit carries them.
    pub fn restore_dirty(&mut self, commit: &Commit) {
        self.dirty.identities.extend(
            commit
                .identities
                .iter()
                .map(|r| (r.project_id, r.kind, r.external_id.clone())),
        );
        self.dirty.profiles.extend(
            commit
                .profiles
                .iter()
                .map(|p| (p.project_id, p.amplitude_id)),
        );
        self.dirty.groups.extend(commit.groups.iter().map(|g| {
            let key = (g.group_type.clone(), g.group_value.clone());
            (g.project_id, key)
        }));
        self.dirty
            .profile_times
            .extend(commit.profile_times.iter().map(|(p, a, _)| (*p, *a)));
        self.dirty.group_times.extend(
            commit
                .group_times
                .iter()
                .map(|(p, t, v, _)| (*p, (t.clone(), v.clone()))),
        );
    }
}

/// A stored profile (a JSON object's text) as key → JSON text; an error names `what`.
fn profile_from_json(text: &str, what: impl Fn() -> String) -> Result<Profile, StoreError> {
    serde_json::from_str::<serde_json::Map<_, _>>(text)
        .map(|m| m.into_iter().map(|(k, v)| (k, v.to_string())).collect())
        .map_err(|e| StoreError::CorruptMetadata {
            what: what(),
            why: format!("not a JSON object ({e})"),
        })
}

/// A profile as the JSON object text the metadata store keeps.
fn profile_json(profile: &Profile) -> String {
    let map: serde_json::Map<String, serde_json::Value> = profile
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap_or_default()))
        .collect();
    serde_json::Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_event::DAY_MS;

    #[test]
    fn a_damaged_profile_row_stops_the_load_instead_of_emptying_the_profile() {
        let profile = |properties: &str| ProfileRecord {
            project_id: 1,
            amplitude_id: 7,
            user_id: None,
            properties: properties.to_string(),
            as_of: 0,
        };
        assert!(Resolver::load(vec![], vec![profile(r#"{"plan":"pro"}"#)], vec![], 7).is_ok());
        let err = Resolver::load(vec![], vec![profile("{not json")], vec![], 7)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("amplitude_id 7"), "{err}");
    }

    fn parsed(user: Option<&str>, device: Option<&str>, insert: Option<&str>) -> ParsedEvent {
        ParsedEvent {
            event_type: "e".into(),
            user_id: user.map(Into::into),
            device_id: device.map(Into::into),
            insert_id: insert.map(Into::into),
            ..Default::default()
        }
    }

    /// Resolves an event that is within every limit.
    fn ok(r: &mut Resolver, project: i64, e: ParsedEvent, now: i64) -> Option<Event> {
        r.resolve(project, e, now).expect("within the limits")
    }

    #[test]
    fn identity_rules() {
        let mut r = Resolver::default();
        let anon = ok(&mut r, 1, parsed(None, Some("dev-1"), None), 0).unwrap();
        let signed_in = ok(&mut r, 1, parsed(Some("alice"), Some("dev-1"), None), 0).unwrap();
        assert_eq!(
            anon.amplitude_id, signed_in.amplitude_id,
            "anonymous device joins user"
        );
        let bob = ok(&mut r, 1, parsed(Some("bobby"), Some("dev-1"), None), 0).unwrap();
        assert_ne!(
            bob.amplitude_id, anon.amplitude_id,
            "another user on the device is new"
        );
        let alice_again = ok(&mut r, 1, parsed(Some("alice"), None, None), 0).unwrap();
        assert_eq!(alice_again.amplitude_id, anon.amplitude_id);
        let other_project = ok(&mut r, 2, parsed(Some("alice"), None, None), 0).unwrap();
        assert_ne!(other_project.amplitude_id, anon.amplitude_id);
    }

    #[test]
    fn insert_id_dedups_per_device_within_seven_days() {
        let mut r = Resolver::default();
        let e = |device| parsed(None, Some(device), Some("i1"));
        assert!(ok(&mut r, 1, e("dev-1"), 0).is_some());
        assert!(ok(&mut r, 1, e("dev-1"), DAY_MS).is_none());
        assert!(ok(&mut r, 1, e("dev-2"), DAY_MS).is_some());
        assert!(ok(&mut r, 1, e("dev-1"), 9 * DAY_MS).is_some());
    }

    fn props(keys: impl Iterator<Item = String>) -> Vec<(String, String)> {
        keys.map(|k| (k, "1".to_string())).collect()
    }

    #[test]
    fn a_rollback_puts_back_everything_the_failed_batches_changed() {
        let mut r = Resolver::default();
        let set = |r: &mut Resolver, user: &str, device: &str, insert: &str, n: i64| {
            let mut e = parsed(Some(user), Some(device), Some(insert));
            e.user_property_ops = vec![("$add".into(), serde_json::json!({ "n": n }))];
            r.resolve(1, e, 0).unwrap().unwrap()
        };
        let alice = set(&mut r, "alice", "dev-a", "i1", 1);
        r.seal();
        // Batch 1 is durable; batches 2 and 3 fail.
        r.durable_watermark().store(1, Ordering::Release);
        let again = set(&mut r, "alice", "dev-b", "i2", 10);
        let bob = set(&mut r, "bobby", "dev-c", "i3", 5);
        assert_eq!(again.amplitude_id, alice.amplitude_id);
        r.seal();
        set(&mut r, "alice", "dev-a", "i4", 100);
        let epoch = r.epoch();
        r.rollback();
        assert_eq!(r.epoch(), epoch + 1);
        // Retries of the refused events are not duplicates and see the durable state only.
        let retried = set(&mut r, "alice", "dev-b", "i2", 10);
        assert_eq!(
            retried.user_properties.as_slice(),
            &[("n".to_string(), "11".to_string())]
        );
        let Commit {
            identities,
            profiles,
            ..
        } = r.take_dirty(true);
        assert!(
            !identities
                .iter()
                .any(|i| i.external_id == "bobby" || i.external_id == "dev-c"),
            "bob's mapping was rolled back: {identities:?}"
        );
        assert!(!profiles.iter().any(|p| p.amplitude_id == bob.amplitude_id));
        assert!(r
            .known_users(1, &[bob.amplitude_id], &[])
            .by_amplitude_id
            .is_empty());
    }

    #[test]
    fn a_rolled_back_key_is_counted_again_when_the_same_snapshot_returns() {
        let mut r = Resolver::default();
        let mut first = parsed(Some("user-1"), None, None);
        first.user_property_ops = vec![("plan".into(), serde_json::json!("pro"))];
        ok(&mut r, 1, first, 0).unwrap();
        r.seal();
        r.durable_watermark().store(1, Ordering::Release);
        // The same user, snapshot unchanged, on a new day: its key is new there.
        let day = 3 * DAY_MS;
        ok(&mut r, 1, parsed(Some("user-1"), None, None), day).unwrap();
        r.seal();
        r.rollback();
        let day_keys = |r: &Resolver| r.projects[&1].keys[&Day::of_ms(day)].user.contains("plan");
        assert!(!day_keys(&r), "rolled back");
        ok(&mut r, 1, parsed(Some("user-1"), None, None), day).unwrap();
        assert!(
            day_keys(&r),
            "counted again, not skipped as a known snapshot"
        );
    }

    #[test]
    fn keys_past_the_daily_limit_refuse_the_event_and_leave_nothing_behind() {
        let mut r = Resolver::default();
        let event = |user: &str, keys: std::ops::Range<usize>, user_keys: usize| {
            let mut e = parsed(Some(user), None, Some(&format!("{user}-{}", keys.start)));
            e.event_properties = props(keys.map(|i| format!("k{i}")));
            e.user_property_ops = (0..user_keys)
                .map(|i| (format!("u{i}"), serde_json::json!(1)))
                .collect();
            e
        };
        let half = MAX_EVENT_KEYS_PER_DAY / 2;
        assert!(r.resolve(1, event("user-1", 0..half, 3), 0).is_ok());
        assert!(r.resolve(1, event("user-2", half..2 * half, 0), 0).is_ok());
        // Known keys are always fine; one new key is one too many.
        assert!(r.resolve(1, event("user-3", 10..20, 0), 0).is_ok());
        let over = event("user-4", 2 * half..2 * half + 1, 0);
        assert_eq!(r.resolve(1, over.clone(), 0), Err(KeyKind::Event));
        assert!(r
            .known_users(1, &[], &["user-4".into()])
            .by_user_id
            .is_empty());
        // The refused event's insert_id was not remembered: the next day takes it.
        assert!(r.resolve(1, over, DAY_MS).unwrap().is_some());
        // Another project has its own budget; user-property keys have theirs.
        assert!(r.resolve(2, event("user-1", 5000..5010, 0), 0).is_ok());
        let wide = event("user-5", 0..1, MAX_USER_KEYS_PER_DAY + 1);
        assert_eq!(r.resolve(1, wide, 0), Err(KeyKind::User));
    }
}
