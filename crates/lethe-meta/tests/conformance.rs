//! The metadata API behaves the same on both databases: every test here runs on SQLite and,
//! when `LETHE_TEST_POSTGRES` names an administrator URL (as `scripts/test.sh` sets it), on a
//! fresh PostgreSQL database too.

use lethe_meta::{
    CatalogDelta, CatalogKind, Commit, CountDelta, DeliveryStatus, GroupRecord, IdKind,
    IdentityRecord, JobStatus, MetaError, MetaPlace, MetaStore, NodeRole, ProfileRecord,
    ProjectRole, Role, SegmentRecord, Shard, ShardScope, TaskStatus, Unscheduled, ValueTable,
};
use serde_json::json;

/// A single node's shard, and a one-shard cluster's.
const S0: Shard = Shard(0);

/// One database to run a test on.
struct Backend {
    name: &'static str,
    meta: MetaStore,
    /// The PostgreSQL URL, for tests that open a second connection.
    url: Option<String>,
    _dir: tempfile::TempDir,
}

/// A new, empty PostgreSQL database on the test server; its URL.
fn fresh_postgres_database(admin: &str) -> String {
    let name = format!("lethe_meta_{}", uuid::Uuid::new_v4().simple());
    psql(admin, &format!("CREATE DATABASE {name}"));
    let (server, _) = admin
        .rsplit_once('/')
        .expect("admin URL ends with /database");
    format!("{server}/{name}")
}

/// Runs SQL on PostgreSQL (an administrator's statements the metadata API does not offer).
fn psql(url: &str, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("the test server answers");
        tokio::spawn(connection);
        client.batch_execute(sql).await.expect("the statement runs");
    });
}

fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![Backend {
        name: "sqlite",
        meta: MetaStore::open(&dir.path().join("meta.sqlite")).unwrap(),
        url: None,
        _dir: dir,
    }];
    if let Ok(admin) = std::env::var("LETHE_TEST_POSTGRES") {
        let url = fresh_postgres_database(&admin);
        let dir = tempfile::tempdir().unwrap();
        let place: MetaPlace = url.parse().unwrap();
        all.push(Backend {
            name: "postgres",
            meta: MetaStore::open_at(&place, &dir.path().join("unused.sqlite")).unwrap(),
            url: Some(url),
            _dir: dir,
        });
    }
    all
}

fn seg(id: &str) -> SegmentRecord {
    SegmentRecord {
        id: id.into(),
        project_id: 1,
        day: "2026-01-01".into(),
        rows: 3,
        bytes: 100,
        min_time: 1,
        max_time: 2,
        event_types: vec![1, 2],
        event_properties: vec![],
        user_properties: vec![5],
        group_properties: vec![3],
        crc32: Some(u32::MAX),
        sha256: Some("ab".repeat(32)),
    }
}

#[test]
fn people_projects_and_tokens() {
    for b in backends() {
        let meta = &b.meta;
        let first = meta.bootstrap("admin@x.test", Some("pw-one")).unwrap();
        let first = first.expect("a new database is bootstrapped");
        assert!(
            meta.bootstrap("admin@x.test", None).unwrap().is_none(),
            "{}",
            b.name
        );

        let admin = meta
            .verify_password("admin@x.test", "pw-one")
            .unwrap()
            .unwrap();
        assert_eq!(admin.role, Role::Admin);
        assert!(meta
            .verify_password("admin@x.test", "wrong")
            .unwrap()
            .is_none());
        let viewer = meta
            .create_user("v@x.test", "pw-two", Role::Viewer, "admin@x.test")
            .unwrap();
        assert!(
            matches!(
                meta.create_user("v@x.test", "other", Role::Member, "admin@x.test"),
                Err(MetaError::Conflict(_))
            ),
            "{}: a taken email is a conflict",
            b.name
        );
        assert!(matches!(
            meta.update_user(admin.id, Some(Role::Viewer), None, "admin@x.test"),
            Err(MetaError::LastAdmin)
        ));
        assert_eq!(
            meta.list_users().unwrap()[0].role,
            Role::Admin,
            "{}: the refused change was rolled back",
            b.name
        );

        let token = meta.issue_token(viewer.id).unwrap();
        assert_eq!(meta.user_for_token(&token).unwrap().unwrap().id, viewer.id);
        let updated = meta
            .update_user(viewer.id, None, Some(false), "admin@x.test")
            .unwrap();
        assert!(!updated.unwrap().active);
        assert!(
            meta.user_for_token(&token).unwrap().is_none(),
            "{}: deactivation ends sessions",
            b.name
        );

        let default = first.project.project;
        let created = meta.create_project("Second", "admin@x.test").unwrap();
        assert_ne!(created.project.id, default.id);
        let found = meta.project_for_keys(&created.project.api_key, &created.secret_key);
        assert_eq!(found.unwrap().unwrap().name, "Second");
        let rotated = meta
            .rotate_secret(created.project.id, "admin@x.test")
            .unwrap()
            .unwrap();
        assert!(meta
            .project_for_keys(&created.project.api_key, &created.secret_key)
            .unwrap()
            .is_none());
        assert!(meta.project_by_secret(&rotated).unwrap().is_some());
        meta.set_project_role(
            created.project.id,
            viewer.id,
            Some(ProjectRole::Member),
            "a",
        )
        .unwrap();
        assert_eq!(
            meta.granted_projects(viewer.id).unwrap(),
            vec![(created.project.id, ProjectRole::Member)]
        );
        assert!(meta
            .set_project_time_zone(created.project.id, chrono_tz::Europe::Berlin, "a")
            .unwrap());
        assert_eq!(
            meta.project(created.project.id).unwrap().unwrap().time_zone,
            chrono_tz::Europe::Berlin
        );
        let actions: Vec<String> = meta
            .audit_log()
            .unwrap()
            .into_iter()
            .map(|a| a.action)
            .collect();
        for expected in [
            "project.created",
            "user.created",
            "user.updated",
            "project.secret_rotated",
        ] {
            assert!(
                actions.iter().any(|a| a == expected),
                "{}: {expected} audited",
                b.name
            );
        }
    }
}

#[test]
fn catalog_ids_are_stable_and_counts_add_up() {
    for b in backends() {
        let meta = &b.meta;
        let project = meta
            .bootstrap("a@x.test", Some("pw"))
            .unwrap()
            .unwrap()
            .project
            .project
            .id;
        let wanted = [
            (CatalogKind::Event, vec!["Played", "Paused"]),
            (CatalogKind::EventProperty, vec!["song"]),
        ];
        let ids = meta.ensure_catalog_ids(project, &wanted).unwrap();
        assert_eq!(
            meta.ensure_catalog_ids(project, &wanted).unwrap(),
            ids,
            "{}",
            b.name
        );
        let more = meta.ensure_catalog_ids(project, &[(CatalogKind::Event, vec!["Stopped"])]);
        assert_eq!(
            more.unwrap()[0]["Stopped"],
            3,
            "{}: ids are dense per kind",
            b.name
        );
        let played = ids[0]["Played"];
        let song = ids[1]["song"];
        let delta = |count, seen| CatalogDelta {
            counts: vec![CountDelta {
                kind: CatalogKind::Event,
                id: played,
                count,
                seen,
            }],
            pairs: vec![(played, song, count)],
        };
        for d in [
            delta(5, Some((200, 300))),
            delta(2, Some((100, 250))),
            delta(-3, None),
        ] {
            meta.commit(&Commit {
                catalog: vec![(project, d)],
                ..Default::default()
            })
            .unwrap();
        }
        let entry = meta
            .list_catalog(project, CatalogKind::Event)
            .unwrap()
            .into_iter()
            .find(|e| e.name == "Played")
            .unwrap();
        assert_eq!(
            (entry.event_count, entry.first_seen, entry.last_seen),
            (4, Some(100), Some(300)),
            "{}",
            b.name
        );
        assert_eq!(
            meta.event_property_pairs(project).unwrap(),
            vec![(played, song, 4)]
        );
    }
}

#[test]
fn a_commit_writes_every_changed_identity_profile_and_group_however_many() {
    // 517 = 256 + 256 + 4 + 1: full statements, and the smaller ones of the remainder.
    let users = 517;
    for b in backends() {
        let meta = &b.meta;
        meta.bootstrap("a@b.c", Some("pw")).unwrap();
        let identities: Vec<IdentityRecord> = (0..users)
            .map(|i| IdentityRecord {
                project_id: 1,
                kind: if i % 2 == 0 {
                    IdKind::User
                } else {
                    IdKind::Device
                },
                external_id: format!("id-{i}"),
                amplitude_id: i,
            })
            .collect();
        let profile = |i: i64, plan: &str, as_of: i64| ProfileRecord {
            project_id: 1,
            amplitude_id: i,
            user_id: (i % 3 == 0).then(|| format!("id-{i}")),
            properties: format!(r#"{{"plan":"{plan}-{i}"}}"#),
            as_of,
        };
        let group = |i: i64, as_of: i64| GroupRecord {
            project_id: 1,
            group_type: "org".into(),
            group_value: format!("org-{i}"),
            properties: format!(r#"{{"seats":{i}}}"#),
            as_of,
        };
        meta.commit(&Commit {
            identities: identities.clone(),
            profiles: (0..users).map(|i| profile(i, "free", 10)).collect(),
            groups: (0..users).map(|i| group(i, 10)).collect(),
            ..Default::default()
        })
        .unwrap();
        // The next commit changes a third of the profiles and moves the others' times
        // (several times for some: the latest counts, never an earlier one).
        meta.commit(&Commit {
            profiles: (0..users)
                .filter(|i| i % 3 == 0)
                .map(|i| profile(i, "pro", 20))
                .collect(),
            // A time for a user or group with no row (erased meanwhile) brings none back.
            profile_times: (0..users)
                .filter(|i| i % 3 != 0)
                .flat_map(|i| [(1, i, 30 + i), (1, i, 5)])
                .chain([(1, users + 1, 99)])
                .collect(),
            group_times: (0..users)
                .map(|i| (1, "org".to_string(), format!("org-{i}"), 40 + i))
                .chain([(1, "org".to_string(), "gone".to_string(), 99)])
                .collect(),
            ..Default::default()
        })
        .unwrap();
        let mut loaded = meta.load_identities(ShardScope::ALL).unwrap();
        loaded.sort_by_key(|id| id.amplitude_id);
        assert_eq!(loaded, identities, "{}", b.name);
        let mut profiles = meta.load_profiles(ShardScope::ALL).unwrap();
        profiles.sort_by_key(|p| p.amplitude_id);
        let expected: Vec<ProfileRecord> = (0..users)
            .map(|i| match i % 3 {
                0 => profile(i, "pro", 20),
                _ => profile(i, "free", 30 + i),
            })
            .collect();
        assert_eq!(profiles, expected, "{}", b.name);
        let mut groups = meta.load_groups(ShardScope::ALL).unwrap();
        groups.sort_by_key(|g| g.as_of);
        let expected: Vec<GroupRecord> = (0..users).map(|i| group(i, 40 + i)).collect();
        assert_eq!(groups, expected, "{}", b.name);
    }
}

#[test]
fn commits_swap_segments_atomically_and_refuse_stale_inputs() {
    for b in backends() {
        let meta = &b.meta;
        meta.bootstrap("a@b.c", Some("pw")).unwrap();
        let identity = IdentityRecord {
            project_id: 1,
            kind: IdKind::User,
            external_id: "u-1".into(),
            amplitude_id: 7,
        };
        let profile = ProfileRecord {
            project_id: 1,
            amplitude_id: 7,
            user_id: Some("u-1".into()),
            properties: r#"{"plan":"pro"}"#.into(),
            as_of: 10,
        };
        meta.commit(&Commit {
            add: vec![seg("a"), seg("b")],
            identities: vec![identity.clone()],
            profiles: vec![profile.clone()],
            amplitude_id_high: 7,
            wal_checkpoint: Some(7),
            ..Default::default()
        })
        .unwrap();
        meta.commit(&Commit {
            add: vec![seg("c")],
            remove: vec!["a".into(), "b".into()],
            profile_times: vec![(1, 7, 5), (1, 7, 20)],
            amplitude_id_high: 3,
            wal_checkpoint: Some(4),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(meta.live_segments().unwrap(), vec![seg("c")], "{}", b.name);
        assert_eq!(
            meta.wal_checkpoint(S0).unwrap(),
            7,
            "{}: the checkpoint never moves back",
            b.name
        );
        assert_eq!(meta.amplitude_id_high().unwrap(), 7);
        assert_eq!(
            meta.load_identities(ShardScope::ALL).unwrap(),
            vec![identity]
        );
        assert_eq!(
            meta.load_profiles(ShardScope::ALL).unwrap()[0].as_of,
            20,
            "{}",
            b.name
        );

        let stale = meta.commit(&Commit {
            add: vec![seg("d")],
            remove: vec!["a".into()],
            ..Default::default()
        });
        assert!(
            matches!(stale, Err(MetaError::StaleManifest(_))),
            "{}",
            b.name
        );
        assert_eq!(
            meta.live_segments().unwrap(),
            vec![seg("c")],
            "failed commit changed nothing"
        );
    }
}

#[test]
fn every_status_change_of_a_task_is_one_delivery_per_webhook_kept_until_delivered() {
    for b in backends() {
        let meta = &b.meta;
        meta.bootstrap("a@b.c", Some("pw")).unwrap();
        let spec = json!({"clauses": []});
        let before = meta
            .submit_task(1, "before", ((&spec, &spec), &json!({})), &[], "a@b.c")
            .unwrap();
        let hook = meta
            .add_webhook("http://127.0.0.1:9/hook", "whsec_x", "a@b.c")
            .unwrap();
        let other = meta
            .add_webhook("http://127.0.0.1:9/other", "whsec_y", "a@b.c")
            .unwrap();
        let task = meta
            .submit_task(1, "t", ((&spec, &spec), &json!({})), &[], "a@b.c")
            .unwrap();
        meta.start_task(task.id).unwrap();
        meta.start_task(task.id).unwrap(); // resumed: no change, no delivery
        meta.fail_task(task.id, "disk full").unwrap();
        meta.retry_task(task.id, "a@b.c").unwrap();
        meta.start_task(task.id).unwrap();
        meta.complete_task(task.id, &json!({"events_deleted": 3, "timings": {}}), None)
            .unwrap();
        let types = |webhook: i64| -> Vec<String> {
            let mut d = meta.deliveries(webhook, 100).unwrap();
            d.reverse();
            d.into_iter().map(|d| d.event_type).collect()
        };
        let expected = [
            "queued",
            "running",
            "failed",
            "queued",
            "running",
            "completed",
        ]
        .map(|s| format!("deletion_task.{s}"));
        assert_eq!(types(hook.id), expected, "{}", b.name);
        assert_eq!(types(other.id), expected, "{}", b.name);
        let all = meta.deliveries(hook.id, 100).unwrap();
        assert!(
            all.iter().all(|d| d.task_id == Some(task.id)),
            "not {}",
            before.id
        );
        let completed: serde_json::Value = serde_json::from_str(&all[0].payload).unwrap();
        assert_eq!(completed["data"]["events_deleted"], 3);
        assert!(completed["data"].get("timings").is_none());
        assert_eq!(completed["id"], all[0].event_id.as_str());

        // Each webhook's oldest pending delivery is due, with its secret; an attempt is
        // recorded, retried or given up, and a deferred one holds back its webhook's later ones.
        let due = meta.due_deliveries(lethe_meta::now_ms(), 100).unwrap();
        let heads: Vec<(i64, &str)> = due
            .iter()
            .map(|d| (d.delivery.webhook_id, d.delivery.event_type.as_str()))
            .collect();
        assert_eq!(
            heads,
            [
                (hook.id, "deletion_task.queued"),
                (other.id, "deletion_task.queued")
            ],
            "{}",
            b.name
        );
        assert_eq!(
            (due[0].url.as_str(), due[0].secret.as_str()),
            ("http://127.0.0.1:9/hook", "whsec_x")
        );
        let (first, second) = (due[0].delivery.id, due[1].delivery.id);
        meta.record_attempt(first, Ok(204), None).unwrap();
        meta.record_attempt(second, Err((Some(500), "answered 500")), Some(i64::MAX))
            .unwrap();
        let due = meta.due_deliveries(lethe_meta::now_ms(), 100).unwrap();
        assert_eq!(
            due.len(),
            1,
            "{}: the deferred one holds back the other's",
            b.name
        );
        assert_eq!(
            (
                due[0].delivery.webhook_id,
                due[0].delivery.event_type.as_str()
            ),
            (hook.id, "deletion_task.running")
        );
        meta.record_attempt(due[0].delivery.id, Err((None, "refused")), None)
            .unwrap();
        let next = meta.due_deliveries(lethe_meta::now_ms(), 100).unwrap();
        assert_eq!(
            next[0].delivery.event_type, "deletion_task.failed",
            "given up: no longer in the way"
        );
        let mut log = meta.deliveries(hook.id, 100).unwrap();
        log.extend(meta.deliveries(other.id, 100).unwrap());
        let find = |id: i64| log.iter().find(|d| d.id == id).unwrap();
        assert_eq!(find(first).status, DeliveryStatus::Delivered);
        assert_eq!(
            (
                find(second).status,
                find(second).last_status,
                find(second).attempts
            ),
            (DeliveryStatus::Pending, Some(500), 1)
        );
        assert_eq!(find(due[0].delivery.id).status, DeliveryStatus::Failed);

        // A test event is one more delivery; the log forgets what was sent before a time.
        assert!(meta.queue_test_delivery(hook.id).unwrap());
        assert!(!meta.queue_test_delivery(999).unwrap());
        assert_eq!(
            meta.deliveries(hook.id, 100).unwrap()[0].event_type,
            "webhook.test"
        );
        assert_eq!(meta.prune_deliveries(0).unwrap(), 0);
        let pruned = meta.prune_deliveries(i64::MAX).unwrap();
        assert_eq!(pruned, 2, "{}: the delivered and the given-up one", b.name);
        assert_eq!(meta.deliveries(hook.id, 100).unwrap().len(), 5);

        assert!(meta.remove_webhook(other.id, "a@b.c").unwrap());
        assert!(!meta.remove_webhook(other.id, "a@b.c").unwrap());
        assert_eq!(meta.webhooks().unwrap(), vec![hook], "{}", b.name);
        assert!(meta.deliveries(other.id, 100).unwrap().is_empty());
    }
}

#[test]
fn the_queue_runs_tasks_in_order_and_audits_every_step() {
    for b in backends() {
        let meta = &b.meta;
        meta.bootstrap("a@b.c", Some("pw")).unwrap();
        // The first names a value: stored to run, audited and kept after completion redacted.
        let spec = json!({"clauses": [{"event_type": "Test"}]});
        let valued = json!({"clauses": [{"event_type": "Test", "where": "value-marker"}]});
        let redacted = json!({"clauses": [{"event_type": "Test", "where": "digest"}]});
        let first = meta
            .submit_task(
                1,
                "first",
                ((&valued, &redacted), &json!({"rows": 3})),
                &[],
                "a@b.c",
            )
            .unwrap();
        assert!(first.spec.contains("value-marker"));
        let second = meta
            .submit_task(
                1,
                "second",
                ((&spec, &spec), &json!({"rows": 1})),
                &[],
                "a@b.c",
            )
            .unwrap();
        assert_eq!(first.status, TaskStatus::Queued);
        assert_eq!(
            meta.next_task(ShardScope::ALL).unwrap().unwrap().id,
            first.id,
            "{}",
            b.name
        );
        meta.start_task(second.id).unwrap();
        assert_eq!(
            meta.next_task(ShardScope::ALL).unwrap().unwrap().id,
            second.id,
            "{}: an interrupted task resumes first",
            b.name
        );
        meta.fail_task(second.id, "disk full").unwrap();
        let failed = meta.task(second.id).unwrap().unwrap();
        assert_eq!((failed.status, failed.attempts), (TaskStatus::Failed, 1));
        assert!(meta.retry_task(second.id, "a@b.c").unwrap());
        assert!(
            !meta.retry_task(second.id, "a@b.c").unwrap(),
            "only a failed task is retried"
        );
        meta.start_task(first.id).unwrap();
        meta.complete_task(first.id, &json!({"rows": 3}), Some(&redacted))
            .unwrap();
        meta.purge_deleted_rows(&[ValueTable::Tasks]).unwrap();
        let done = meta.task(first.id).unwrap().unwrap();
        assert_eq!(done.status, TaskStatus::Completed);
        assert_eq!(done.spec, redacted.to_string(), "{}", b.name);
        assert_eq!(
            meta.text_columns_holding("value-marker").unwrap(),
            Vec::<String>::new(),
            "{}: neither the audit nor the completed task holds the value",
            b.name
        );
        assert_eq!(done.result.as_deref(), Some(r#"{"rows":3}"#));
        assert!(done.finished_at.is_some() && done.started_at.is_some());
        let tasks: Vec<i64> = meta.tasks().unwrap().iter().map(|t| t.id).collect();
        assert_eq!(tasks, vec![second.id, first.id], "{}: newest first", b.name);
        let audited: Vec<(String, Option<i64>)> = meta
            .audit_log()
            .unwrap()
            .into_iter()
            .filter(|a| a.task_id.is_some())
            .map(|a| (a.action, a.task_id))
            .collect();
        assert_eq!(
            audited,
            [
                ("task.submitted", first.id),
                ("task.submitted", second.id),
                ("task.started", second.id),
                ("task.failed", second.id),
                ("task.retried", second.id),
                ("task.started", first.id),
                ("task.completed", first.id),
            ]
            .map(|(a, t)| (a.to_string(), Some(t))),
            "{}",
            b.name
        );
    }
}

#[test]
fn privacy_jobs_gather_lock_and_finish_with_their_task() {
    for b in backends() {
        let meta = &b.meta;
        meta.bootstrap("a@b.c", Some("pw")).unwrap();
        meta.request_erasure(1, "2026-02-01", 100, &[7, 8], "dpo", "a@b.c")
            .unwrap();
        let job = meta
            .request_erasure(1, "2026-02-01", 50, &[8, 9], "dpo", "a@b.c")
            .unwrap();
        assert_eq!(job.amplitude_ids().len(), 3, "{}: one job per day", b.name);
        assert_eq!(
            job.run_at, 100,
            "{}: every request keeps its grace period",
            b.name
        );
        assert!(matches!(
            meta.unschedule_erasure(1, 9, "2026-02-01", "a@b.c")
                .unwrap(),
            Unscheduled::Removed(_)
        ));
        assert_eq!(
            meta.unschedule_erasure(1, 9, "2026-02-01", "a@b.c")
                .unwrap(),
            Unscheduled::NotFound
        );
        assert!(
            meta.lock_due_erasures(99, ShardScope::ALL)
                .unwrap()
                .is_empty(),
            "{}: not yet due",
            b.name
        );
        let due = meta.lock_due_erasures(100, ShardScope::ALL).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].status, JobStatus::Submitted);
        assert_eq!(
            meta.unschedule_erasure(1, 7, "2026-02-01", "a@b.c")
                .unwrap(),
            Unscheduled::Locked(JobStatus::Submitted)
        );
        let task = meta
            .queue_erasure(due[0].id, "erase", &json!({}), &json!({}))
            .unwrap();
        assert!(
            meta.lock_due_erasures(200, ShardScope::ALL)
                .unwrap()
                .is_empty(),
            "a queued job is not listed again"
        );
        meta.complete_task(task.id, &json!({}), None).unwrap();
        let jobs = meta.erasure_jobs(1, "2026-01-01", "2026-12-31").unwrap();
        assert_eq!(
            (jobs[0].status, jobs[0].task_id),
            (JobStatus::Done, Some(task.id))
        );

        meta.suppress(1, &["h1".into(), "h2".into(), "h1".into()], "a@b.c")
            .unwrap();
        let listed = meta.suppressions(Some(1)).unwrap();
        assert_eq!(listed.len(), 2, "{}: a repeated hash is kept once", b.name);
        assert_eq!(meta.suppressions(None).unwrap().len(), 2);
        assert!(meta.lift_suppression(1, listed[0].id, "a@b.c").unwrap());
        assert!(!meta.lift_suppression(1, listed[0].id, "a@b.c").unwrap());

        meta.commit(&Commit {
            identities: vec![IdentityRecord {
                project_id: 1,
                kind: IdKind::Device,
                external_id: "d-7".into(),
                amplitude_id: 7,
            }],
            profiles: vec![ProfileRecord {
                project_id: 1,
                amplitude_id: 7,
                user_id: None,
                properties: "{}".into(),
                as_of: 1,
            }],
            ..Default::default()
        })
        .unwrap();
        meta.forget_users(1, &[7]).unwrap();
        meta.purge_erased().unwrap();
        assert!(
            meta.load_identities(ShardScope::ALL).unwrap().is_empty(),
            "{}",
            b.name
        );
        assert!(
            meta.load_profiles(ShardScope::ALL).unwrap().is_empty(),
            "{}",
            b.name
        );
    }
}

#[test]
fn one_node_holds_a_postgres_database_and_survives_a_lost_connection() {
    for b in backends() {
        let Some(url) = &b.url else { continue };
        b.meta.bootstrap("a@b.c", Some("pw")).unwrap();
        b.meta.claim_node(NodeRole::Sole).unwrap();
        let place: MetaPlace = url.parse().unwrap();
        let second = MetaStore::open_at(&place, b._dir.path()).unwrap();
        assert!(matches!(
            second.claim_node(NodeRole::Sole),
            Err(MetaError::DeploymentInUse(NodeRole::Sole))
        ));

        let database = url.rsplit_once('/').unwrap().1;
        psql(
            url,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = '{database}' AND pid <> pg_backend_pid()"
            ),
        );
        // A call in flight when the connection drops may fail with it (whether it reached
        // the server is unknown, so it is not retried); the next call reconnects.
        if b.meta.list_users().is_err() {
            assert_eq!(
                b.meta.list_users().unwrap().len(),
                1,
                "the next call reconnects"
            );
        }
        b.meta.claim_node(NodeRole::Sole).unwrap();
        let claimed = match second.claim_node(NodeRole::Sole) {
            Err(MetaError::Postgres(_)) => second.claim_node(NodeRole::Sole),
            other => other,
        };
        assert!(
            matches!(claimed, Err(MetaError::DeploymentInUse(NodeRole::Sole))),
            "the reconnected node took its lock back: {claimed:?}"
        );
    }
}

#[test]
fn cluster_members_share_a_database_that_a_single_node_cannot_join() {
    for b in backends() {
        let Some(url) = &b.url else { continue };
        let place: MetaPlace = url.parse().unwrap();
        let second = MetaStore::open_at(&place, b._dir.path()).unwrap();
        let single = MetaStore::open_at(&place, b._dir.path()).unwrap();
        b.meta.claim_node(NodeRole::ClusterMember).unwrap();
        second.claim_node(NodeRole::ClusterMember).unwrap();
        assert!(matches!(
            single.claim_node(NodeRole::Sole),
            Err(MetaError::DeploymentInUse(NodeRole::Sole))
        ));
    }
}

#[test]
fn one_writer_at_a_time_and_a_taken_over_writer_commits_nothing() {
    for b in backends() {
        let meta = &b.meta;
        assert_eq!(meta.writer(S0).unwrap(), None, "{}", b.name);
        let secret = meta.cluster_secret("first").unwrap();
        assert_eq!(meta.cluster_secret("second").unwrap(), secret, "one secret");

        // Node a takes the lease; b cannot while it holds.
        assert_eq!(
            meta.take_writer(S0, "a", "http://a", 1_000, 500).unwrap(),
            Some(1)
        );
        meta.fence(S0, 1);
        let node_b = second_connection(&b);
        assert_eq!(
            node_b.take_writer(S0, "b", "http://b", 1_400, 500).unwrap(),
            None
        );
        meta.renew_writer(S0, 1, 2_000).unwrap();
        assert_eq!(
            node_b.take_writer(S0, "b", "http://b", 1_600, 500).unwrap(),
            None
        );
        let project = meta
            .bootstrap("a@b.c", Some("pw"))
            .unwrap()
            .unwrap()
            .project
            .project;
        assert!(meta.project(project.id).unwrap().is_some(), "a commits");

        // a's lease lapses: b takes it with the next epoch, and a is fenced from then on.
        assert_eq!(
            node_b.take_writer(S0, "b", "http://b", 2_001, 500).unwrap(),
            Some(2)
        );
        node_b.fence(S0, 2);
        let writer = meta.writer(S0).unwrap().unwrap();
        assert_eq!(
            (writer.node.as_str(), writer.address.as_str(), writer.epoch),
            ("b", "http://b", 2)
        );
        assert!(matches!(
            meta.renew_writer(S0, 1, 9_000),
            Err(MetaError::Fenced(1))
        ));
        assert!(matches!(
            meta.resign_writer(S0, 1),
            Err(MetaError::Fenced(1))
        ));
        let refused = meta.submit_task(
            project.id,
            "t",
            ((&json!({}), &json!({})), &json!({})),
            &[],
            "admin",
        );
        assert!(
            matches!(refused, Err(MetaError::Fenced(1))),
            "{}: {refused:?}",
            b.name
        );
        assert!(
            meta.tasks().unwrap().is_empty(),
            "nothing of the fenced commit stored"
        );
        node_b
            .submit_task(
                project.id,
                "t",
                ((&json!({}), &json!({})), &json!({})),
                &[],
                "admin",
            )
            .unwrap();

        // A node restarted on its data dir takes its own lease back at once; a resigned
        // lease is free at once.
        assert_eq!(
            node_b
                .take_writer(S0, "b", "http://b2", 2_100, 500)
                .unwrap(),
            Some(3)
        );
        node_b.resign_writer(S0, 3).unwrap();
        assert_eq!(
            meta.take_writer(S0, "a", "http://a", 2_200, 500).unwrap(),
            Some(4)
        );
    }
}

#[test]
fn each_shard_has_a_writer_and_a_wal_checkpoint_of_its_own() {
    let s1 = Shard(1);
    for b in backends() {
        let a = &b.meta;
        let node_b = second_connection(&b);
        assert_eq!(
            a.shard_count().unwrap(),
            1,
            "{}: one until a cluster says",
            b.name
        );
        assert_eq!(
            a.cluster_shards(Some(3)).unwrap(),
            3,
            "the first node's count"
        );
        assert_eq!(
            node_b.cluster_shards(Some(5)).unwrap(),
            3,
            "fixed from then on"
        );
        assert_eq!(node_b.cluster_shards(None).unwrap(), 3);
        assert_eq!(
            a.take_writer(S0, "a", "http://a", 1_000, 500).unwrap(),
            Some(1)
        );
        a.fence(S0, 1);
        // Another shard's lease is free while shard 0's is held, and starts its own epochs.
        assert_eq!(
            node_b.take_writer(s1, "b", "http://b", 1_000, 500).unwrap(),
            Some(1),
            "{}",
            b.name
        );
        node_b.fence(s1, 1);
        assert_eq!(a.writer(s1).unwrap().unwrap().node, "b");
        let writers: Vec<(Shard, String)> = (a.writers().unwrap().into_iter())
            .map(|w| (w.shard, w.node))
            .collect();
        assert_eq!(writers, [(S0, "a".to_string()), (s1, "b".to_string())]);
        assert_eq!(a.shard(), S0);
        assert_eq!(node_b.shard(), s1);

        // Each writer's commits move its own shard's checkpoint only.
        a.commit(&Commit {
            wal_checkpoint: Some(5),
            ..Default::default()
        })
        .unwrap();
        node_b
            .commit(&Commit {
                wal_checkpoint: Some(9),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(a.wal_checkpoint(S0).unwrap(), 5, "{}", b.name);
        assert_eq!(node_b.wal_checkpoint(s1).unwrap(), 9, "{}", b.name);

        // Shard 1 taken over (its lease lapsed): its old writer is fenced, shard 0's is not.
        let node_c = second_connection(&b);
        assert_eq!(
            node_c.take_writer(s1, "c", "http://c", 1_501, 500).unwrap(),
            Some(2)
        );
        node_c.fence(s1, 2);
        let stale = node_b.commit(&Commit {
            wal_checkpoint: Some(10),
            ..Default::default()
        });
        assert!(
            matches!(stale, Err(MetaError::Fenced(1))),
            "{}: {stale:?}",
            b.name
        );
        a.commit(&Commit {
            wal_checkpoint: Some(6),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            node_c.wal_checkpoint(s1).unwrap(),
            9,
            "nothing of the fenced commit"
        );
        assert_eq!(a.wal_checkpoint(S0).unwrap(), 6);

        // A shard's writer loads the identities, profiles and groups of its projects alone.
        a.bootstrap("a@b.c", Some("pw")).unwrap();
        let projects = [(); 4].map(|()| a.create_project("p", "a@b.c").unwrap().project.id);
        a.commit(&Commit {
            identities: projects
                .map(|p| IdentityRecord {
                    project_id: p,
                    kind: IdKind::User,
                    external_id: format!("u-{p}"),
                    amplitude_id: p,
                })
                .to_vec(),
            profiles: projects
                .map(|p| ProfileRecord {
                    project_id: p,
                    amplitude_id: p,
                    user_id: Some(format!("u-{p}")),
                    properties: "{}".into(),
                    as_of: 1,
                })
                .to_vec(),
            groups: projects
                .map(|p| GroupRecord {
                    project_id: p,
                    group_type: "org".into(),
                    group_value: "o".into(),
                    properties: "{}".into(),
                    as_of: 1,
                })
                .to_vec(),
            ..Default::default()
        })
        .unwrap();
        let of_shard_1 = ShardScope {
            shard: s1,
            count: 2,
        };
        let mut loaded: Vec<i64> = (a.load_identities(of_shard_1).unwrap().into_iter())
            .map(|i| i.project_id)
            .chain(
                a.load_profiles(of_shard_1)
                    .unwrap()
                    .into_iter()
                    .map(|p| p.project_id),
            )
            .chain(
                a.load_groups(of_shard_1)
                    .unwrap()
                    .into_iter()
                    .map(|g| g.project_id),
            )
            .collect();
        loaded.sort();
        let odd: Vec<i64> = projects.iter().filter(|p| *p % 2 == 1).copied().collect();
        let expected: Vec<i64> = odd.iter().flat_map(|p| [*p; 3]).collect();
        assert_eq!(loaded, expected, "{}", b.name);
        assert_eq!(odd.len(), 2);
        assert_eq!(a.load_identities(ShardScope::ALL).unwrap().len(), 4);

        // Each shard's worker takes its own projects' tasks.
        let even = *projects.iter().find(|p| *p % 2 == 0).unwrap();
        let odd = odd[0];
        for project in [odd, even] {
            let spec = ((&json!({}), &json!({})), &json!({}));
            a.submit_task(project, "t", spec, &[], "admin").unwrap();
        }
        let next = |scope| a.next_task(scope).unwrap().map(|t| t.project_id);
        assert_eq!(next(of_shard_1), Some(odd), "{}", b.name);
        let of_shard_0 = ShardScope {
            shard: S0,
            count: 2,
        };
        assert_eq!(next(of_shard_0), Some(even), "{}", b.name);
        assert_eq!(next(ShardScope::ALL), Some(odd), "the oldest of all");
    }
}

/// Another connection to the backend's database, as another node has.
#[test]
fn the_live_nodes_are_those_whose_heartbeat_has_not_lapsed() {
    for b in backends() {
        let other = second_connection(&b);
        assert_eq!(
            b.meta.heartbeat("a", 1_000, 1_500).unwrap(),
            ["a"],
            "{}",
            b.name
        );
        assert_eq!(other.heartbeat("b", 1_100, 1_600).unwrap(), ["a", "b"]);
        // a's heartbeat lapsed: b alone is alive, until a beats again.
        assert_eq!(other.heartbeat("b", 1_501, 2_001).unwrap(), ["b"]);
        assert_eq!(b.meta.heartbeat("a", 1_502, 2_002).unwrap(), ["a", "b"]);
        // A node that stops leaves at once.
        other.leave("b").unwrap();
        assert_eq!(
            b.meta.heartbeat("a", 1_600, 2_100).unwrap(),
            ["a"],
            "{}",
            b.name
        );
        // A node that came back beats again; one long gone does not come back by itself.
        other.heartbeat("c", 1_700, 2_200).unwrap();
        assert_eq!(b.meta.heartbeat("a", 3_700_000, 3_700_500).unwrap(), ["a"]);
        assert_eq!(
            other.heartbeat("b", 3_700_001, 3_700_500).unwrap(),
            ["a", "b"]
        );
    }
}

fn second_connection(b: &Backend) -> MetaStore {
    match &b.url {
        Some(url) => MetaStore::open_at(&url.parse().unwrap(), b._dir.path()).unwrap(),
        None => MetaStore::open(&b._dir.path().join("meta.sqlite")).unwrap(),
    }
}

#[test]
fn nodes_starting_together_make_the_organization_once() {
    for b in backends() {
        let others: Vec<MetaStore> = (0..4).map(|_| second_connection(&b)).collect();
        let made = std::thread::scope(|s| {
            let starts: Vec<_> = others
                .iter()
                .map(|meta| s.spawn(move || meta.bootstrap("a@b.c", Some("pw")).unwrap()))
                .collect();
            starts
                .into_iter()
                .filter_map(|start| start.join().unwrap())
                .count()
        });
        assert_eq!(made, 1, "{}", b.name);
        assert_eq!(b.meta.list_projects().unwrap().len(), 1, "{}", b.name);
        assert_eq!(b.meta.list_users().unwrap().len(), 1, "{}", b.name);
    }
}

/// Runs SQL on the backend's database behind lethe's back, as someone with access to it
/// could (the append-only triggers dropped or disabled first).
fn tamper(b: &Backend, sql: &str) {
    match &b.url {
        Some(url) => psql(
            url,
            &format!("ALTER TABLE audit DISABLE TRIGGER audit_is_append_only; {sql}"),
        ),
        None => {
            let c = rusqlite::Connection::open(b._dir.path().join("meta.sqlite")).unwrap();
            c.execute_batch(&format!(
                "DROP TRIGGER IF EXISTS audit_is_append_only_update;
                 DROP TRIGGER IF EXISTS audit_is_append_only_delete; {sql}"
            ))
            .unwrap();
        }
    }
}

#[test]
fn a_changed_removed_or_inserted_audit_entry_breaks_the_chain_there() {
    for b in backends() {
        let meta = &b.meta;
        for n in 0..4 {
            meta.audit("admin@x.test", "test.action", &json!({ "n": n }))
                .unwrap();
        }
        let log = meta.audit_log().unwrap();
        let ids: Vec<i64> = log.iter().map(|e| e.id).collect();
        let check = meta.verify_audit().unwrap();
        assert_eq!(
            (check.entries, check.problems.len(), check.head.clone()),
            (4, 0, log[3].hash.clone()),
            "{}",
            b.name
        );

        tamper(
            &b,
            &format!(
                "UPDATE audit SET detail = '{{\"n\": 99}}' WHERE id = {}",
                ids[1]
            ),
        );
        let problems = meta.verify_audit().unwrap().problems;
        assert_eq!(problems.len(), 1, "{}: {problems:?}", b.name);
        assert!(problems[0].starts_with(&format!("entry {}:", ids[1])));

        tamper(&b, &format!("DELETE FROM audit WHERE id = {}", ids[1]));
        let problems = meta.verify_audit().unwrap().problems;
        assert_eq!(problems.len(), 1, "{}: {problems:?}", b.name);
        assert!(problems[0].starts_with(&format!("entry {}:", ids[2])));

        tamper(
            &b,
            "INSERT INTO audit (at, actor, action, detail) VALUES (1, 'x', 'forged', '{}')",
        );
        let problems = meta.verify_audit().unwrap().problems;
        assert_eq!(problems.len(), 2, "{}: {problems:?}", b.name);
        assert!(problems[1].contains("has no hash"), "{problems:?}");
    }
}
