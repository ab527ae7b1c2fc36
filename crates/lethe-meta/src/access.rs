//! Organization, users, API tokens and projects: who may do what, and which keys select a
//! project.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::sql::{params, Conn, Row, Value};
use crate::{now_ms, MetaError, MetaStore, Result};

/// How long a login token (and a console session) stays valid.
pub const TOKEN_TTL_MS: i64 = 7 * 24 * 3_600_000;

/// What a user may do: admins manage and delete, members and viewers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Member,
    Viewer,
}

impl Role {
    /// The role's stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    /// Parses a wire name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// A person who can sign in.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub role: Role,
    pub active: bool,
    pub created_at: i64,
}

/// A project: its API key selects it on the ingestion APIs, the key with its secret on the
/// read APIs. Only a digest of the secret is stored.
#[derive(Debug, Clone, Serialize)]
pub struct Project {
    pub id: i64,
    pub name: String,
    pub api_key: String,
    pub created_at: i64,
    /// The time zone its charts count days and hours in (default UTC).
    pub time_zone: chrono_tz::Tz,
}

/// A project just created (or its secret just rotated), with the secret to show once.
#[derive(Debug, Clone)]
pub struct CreatedProject {
    pub project: Project,
    pub secret_key: String,
}

/// What a first start creates and must show once: the generated secrets.
#[derive(Debug, Clone)]
pub struct NewProject {
    pub project: CreatedProject,
    /// The administrator's generated password, when none was configured.
    pub admin_password: Option<String>,
    pub admin_email: String,
}

/// A member's or viewer's role in one project (administrators reach every project).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectRole {
    /// Reads the project and loads data into it.
    Member,
    /// Reads the project.
    Viewer,
}

impl ProjectRole {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectRole::Member => "member",
            ProjectRole::Viewer => "viewer",
        }
    }

    /// Parses a wire name; `None` for anything else.
    pub fn parse(s: &str) -> Option<ProjectRole> {
        match s {
            "member" => Some(ProjectRole::Member),
            "viewer" => Some(ProjectRole::Viewer),
            _ => None,
        }
    }
}

/// The SHA-256 of a project secret: secrets are 128 random bits, so a fast digest is as
/// good as a password hash and keeps every Basic-auth request cheap.
fn secret_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(format!("lethe-secret:{secret}")))
}

/// Digests (and blanks) project secrets stored in plain text by an older version.
pub(crate) fn digest_plain_secrets(c: &mut dyn Conn) -> Result<()> {
    let plain = c.query_map(
        "SELECT id, secret_key FROM projects WHERE secret_sha256 IS NULL",
        &[],
        |r| Ok((r.get::<i64>(0)?, r.get::<String>(1)?)),
    )?;
    for (id, secret) in plain {
        c.execute(
            "UPDATE projects SET secret_sha256 = ?2, secret_key = '' WHERE id = ?1",
            params![id, secret_digest(&secret)],
        )?;
    }
    Ok(())
}

/// An argon2 hash of no one's password: verified against when an email is unknown, so a
/// sign-in takes as long whether or not the account exists.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_hex(16)).unwrap_or_default())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| MetaError::Corrupt(format!("password hashing failed: {e}")))
}

fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn user_from_row(r: &Row) -> Result<User> {
    let role: String = r.get(2)?;
    Ok(User {
        id: r.get(0)?,
        email: r.get(1)?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        active: r.get(3)?,
        created_at: r.get(4)?,
    })
}

fn project_from_row(r: &Row) -> Result<Project> {
    Ok(Project {
        id: r.get(0)?,
        name: r.get(1)?,
        api_key: r.get(2)?,
        created_at: r.get(3)?,
        time_zone: {
            let name: String = r.get(4)?;
            name.parse()
                .map_err(|_| MetaError::Corrupt(format!("unknown time zone {name:?}")))?
        },
    })
}

const USER_COLS: &str = "id, email, role, active, created_at";
const PROJECT_COLS: &str = "id, name, api_key, created_at, time_zone";

impl MetaStore {
    /// Creates the organization, its first administrator and the `Default` project when the
    /// database is new. Returns the secrets to print once, or `None` on a later start.
    pub fn bootstrap(
        &self,
        admin_email: &str,
        admin_password: Option<&str>,
    ) -> Result<Option<NewProject>> {
        let exists: bool = self.with(|c| {
            c.query_row("SELECT EXISTS(SELECT 1 FROM organization)", &[], |r| {
                r.get(0)
            })
        })?;
        if exists {
            return Ok(None);
        }
        let generated = admin_password.is_none().then(|| random_hex(12));
        let password = admin_password.map(str::to_string).or(generated.clone());
        let hash = hash_password(password.as_deref().unwrap_or_default())?;
        let project = self.tx(|tx| {
            let created = tx.execute(
                "INSERT INTO organization (id, name, created_at) VALUES (1, 'lethe', ?1)
                 ON CONFLICT (id) DO NOTHING",
                params![now_ms()],
            )?;
            if created == 0 {
                // Another node of a cluster, starting at the same moment, made it.
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO users (email, password_hash, role, created_at) VALUES (?1, ?2, 'admin', ?3)",
                params![admin_email, hash, now_ms()],
            )?;
            Ok(Some(insert_project(tx, "Default", "system")?))
        })?;
        let Some(project) = project else {
            return Ok(None);
        };
        Ok(Some(NewProject {
            project,
            admin_password: generated,
            admin_email: admin_email.to_string(),
        }))
    }

    /// Adds a user; `Conflict` when the email is taken. Audited.
    pub fn create_user(
        &self,
        email: &str,
        password: &str,
        role: Role,
        actor: &str,
    ) -> Result<User> {
        let hash = hash_password(password)?;
        self.tx(|c| {
            let id: i64 = c
                .query_row(
                    "INSERT INTO users (email, password_hash, role, created_at)
                     VALUES (?1, ?2, ?3, ?4) RETURNING id",
                    params![email, hash, role.as_str(), now_ms()],
                    |r| r.get(0),
                )
                .map_err(|e| {
                    if e.is_unique_violation() {
                        MetaError::Conflict("a user with this email")
                    } else {
                        e
                    }
                })?;
            let user = c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                params![id],
                user_from_row,
            )?;
            let detail =
                serde_json::json!({ "user_id": id, "email": user.email, "role": user.role });
            crate::audit::audit_in(c, actor, "user.created", None, &detail)?;
            Ok(user)
        })
    }

    /// Every user, oldest first.
    pub fn list_users(&self) -> Result<Vec<User>> {
        self.with(|c| {
            c.query_map(
                &format!("SELECT {USER_COLS} FROM users ORDER BY id"),
                &[],
                user_from_row,
            )
        })
    }

    /// Checks a password; returns the active user it belongs to.
    pub fn verify_password(&self, email: &str, password: &str) -> Result<Option<User>> {
        let found = self.with(|c| {
            c.query_opt(
                &format!(
                    "SELECT {USER_COLS}, password_hash FROM users WHERE email = ?1 AND active = 1"
                ),
                params![email],
                |r| Ok((user_from_row(r)?, r.get::<String>(5)?)),
            )
        })?;
        let hash = found.as_ref().map_or(decoy_hash(), |(_, h)| h.as_str());
        let verified = PasswordHash::new(hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        });
        Ok(found.filter(|_| verified).map(|(user, _)| user))
    }

    /// Audits a sign-in attempt. A failure names the account only when it exists: what was
    /// typed as an email might be anything (a password in the wrong field).
    pub fn audit_sign_in(&self, email: &str, user: Option<&User>) -> Result<()> {
        let (actor, action, detail) = match user {
            Some(u) => (
                u.email.clone(),
                "auth.signed_in",
                serde_json::json!({ "user_id": u.id }),
            ),
            None => {
                let known: Option<i64> = self.with(|c| {
                    c.query_opt(
                        "SELECT id FROM users WHERE email = ?1",
                        params![email],
                        |r| r.get(0),
                    )
                })?;
                let detail = serde_json::json!({ "user_id": known, "known_user": known.is_some() });
                let actor = if known.is_some() { email } else { "unknown" };
                (actor.to_string(), "auth.sign_in_failed", detail)
            }
        };
        self.with(|c| crate::audit::audit_in(c, &actor, action, None, &detail))
    }

    /// Issues a bearer token for a signed-in user; only its SHA-256 is stored.
    pub fn issue_token(&self, user_id: i64) -> Result<String> {
        let token = random_hex(32);
        let now = now_ms();
        self.with(|c| {
            c.execute(
                "INSERT INTO api_tokens (token_sha256, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![token_digest(&token), user_id, now, now + TOKEN_TTL_MS],
            )?;
            Ok(())
        })?;
        Ok(token)
    }

    /// The active user a bearer token belongs to, if the token is valid and unexpired.
    pub fn user_for_token(&self, token: &str) -> Result<Option<User>> {
        self.with(|c| {
            c.query_opt(
                "SELECT u.id, u.email, u.role, u.active, u.created_at FROM api_tokens t
                 JOIN users u ON u.id = t.user_id
                 WHERE t.token_sha256 = ?1 AND t.expires_at > ?2 AND u.active = 1",
                params![token_digest(token), now_ms()],
                user_from_row,
            )
        })
    }

    /// Ends a session: the token stops working at once.
    pub fn revoke_token(&self, token: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM api_tokens WHERE token_sha256 = ?1",
                params![token_digest(token)],
            )?;
            Ok(())
        })
    }

    /// Changes a user's role and/or deactivates or reactivates them, refusing any change
    /// that would leave the organization without an active administrator. Deactivation ends
    /// the user's sessions. `None` when there is no such user. Audited.
    pub fn update_user(
        &self,
        id: i64,
        role: Option<Role>,
        active: Option<bool>,
        actor: &str,
    ) -> Result<Option<User>> {
        self.tx(|tx| {
            let changed = tx.execute(
                "UPDATE users SET role = COALESCE(?2, role), active = COALESCE(?3, active)
                 WHERE id = ?1",
                params![id, role.map(Role::as_str), active],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            let admins: i64 = tx.query_row(
                "SELECT COUNT(*) FROM users WHERE role = 'admin' AND active = 1",
                &[],
                |r| r.get(0),
            )?;
            if admins == 0 {
                return Err(MetaError::LastAdmin);
            }
            if active == Some(false) {
                tx.execute("DELETE FROM api_tokens WHERE user_id = ?1", params![id])?;
            }
            let user = tx.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                params![id],
                user_from_row,
            )?;
            let detail = serde_json::json!({
                "user_id": id, "email": user.email, "role": user.role, "active": user.active,
            });
            crate::audit::audit_in(tx, actor, "user.updated", None, &detail)?;
            Ok(Some(user))
        })
    }

    /// Creates a project with fresh keys. Audited.
    pub fn create_project(&self, name: &str, actor: &str) -> Result<CreatedProject> {
        self.tx(|tx| {
            let created = insert_project(tx, name, actor)?;
            Ok(created)
        })
    }

    /// The project that `api_key` selects, if `secret` is its secret key.
    pub fn project_for_keys(&self, api_key: &str, secret: &str) -> Result<Option<Project>> {
        let found = self.with(|c| {
            c.query_opt(
                &format!("SELECT {PROJECT_COLS}, secret_sha256 FROM projects WHERE api_key = ?1"),
                params![api_key],
                |r| Ok((project_from_row(r)?, r.get::<String>(5)?)),
            )
        })?;
        let digest = secret_digest(secret);
        Ok(found
            .filter(|(_, stored)| constant_time_eq(stored.as_bytes(), digest.as_bytes()))
            .map(|(p, _)| p))
    }

    /// Gives a project a new secret key (the old one stops working at once); returns it, to
    /// show once. `None` when there is no such project. Audited.
    pub fn rotate_secret(&self, project_id: i64, actor: &str) -> Result<Option<String>> {
        let secret = random_hex(16);
        self.tx(|tx| {
            let changed = tx.execute(
                "UPDATE projects SET secret_sha256 = ?2 WHERE id = ?1",
                params![project_id, secret_digest(&secret)],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            let detail = serde_json::json!({ "project_id": project_id });
            crate::audit::audit_in(tx, actor, "project.secret_rotated", None, &detail)?;
            Ok(Some(secret))
        })
    }

    /// Grants a member or viewer a role in a project, or takes it away (`None`). Audited.
    pub fn set_project_role(
        &self,
        project_id: i64,
        user_id: i64,
        role: Option<ProjectRole>,
        actor: &str,
    ) -> Result<()> {
        self.tx(|tx| {
            match role {
                Some(role) => tx.execute(
                    "INSERT INTO project_members (project_id, user_id, role) VALUES (?1, ?2, ?3)
                     ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role",
                    params![project_id, user_id, role.as_str()],
                )?,
                None => tx.execute(
                    "DELETE FROM project_members WHERE project_id = ?1 AND user_id = ?2",
                    params![project_id, user_id],
                )?,
            };
            let detail = serde_json::json!({
                "project_id": project_id, "user_id": user_id, "role": role,
            });
            crate::audit::audit_in(tx, actor, "project.member_changed", None, &detail)?;
            Ok(())
        })
    }

    /// The members and viewers of a project, with their roles there.
    pub fn project_members(&self, project_id: i64) -> Result<Vec<(User, ProjectRole)>> {
        self.with(|c| {
            c.query_map(
                "SELECT u.id, u.email, u.role, u.active, u.created_at, m.role
                 FROM project_members m JOIN users u ON u.id = m.user_id
                 WHERE m.project_id = ?1 ORDER BY u.id",
                params![project_id],
                |r| {
                    let role: String = r.get(5)?;
                    Ok((
                        user_from_row(r)?,
                        ProjectRole::parse(&role).unwrap_or(ProjectRole::Viewer),
                    ))
                },
            )
        })
    }

    /// Every project a (non-administrator) user was granted, with the role there.
    pub fn granted_projects(&self, user_id: i64) -> Result<Vec<(i64, ProjectRole)>> {
        self.with(|c| {
            c.query_map(
                "SELECT project_id, role FROM project_members WHERE user_id = ?1 ORDER BY project_id",
                params![user_id],
                |r| {
                    let role: String = r.get(1)?;
                    Ok((r.get(0)?, ProjectRole::parse(&role).unwrap_or(ProjectRole::Viewer)))
                },
            )
        })
    }

    /// Every project, oldest first.
    pub fn list_projects(&self) -> Result<Vec<Project>> {
        self.with(|c| {
            c.query_map(
                &format!("SELECT {PROJECT_COLS} FROM projects ORDER BY id"),
                &[],
                project_from_row,
            )
        })
    }

    /// The project an ingestion API key selects.
    pub fn project_by_api_key(&self, api_key: &str) -> Result<Option<Project>> {
        self.project_where("api_key = ?1", api_key)
    }

    /// Sets the time zone a project's charts count in; `false` when there is no such
    /// project. Audited.
    pub fn set_project_time_zone(
        &self,
        project_id: i64,
        time_zone: chrono_tz::Tz,
        actor: &str,
    ) -> Result<bool> {
        self.tx(|tx| {
            let changed = tx.execute(
                "UPDATE projects SET time_zone = ?2 WHERE id = ?1",
                params![project_id, time_zone.name()],
            )?;
            if changed == 1 {
                let detail =
                    serde_json::json!({ "project_id": project_id, "time_zone": time_zone.name() });
                crate::audit::audit_in(tx, actor, "project.time_zone_set", None, &detail)?;
            }
            Ok(changed == 1)
        })
    }

    /// The project a secret key alone selects (the User Profile API's `Api-Key` header).
    /// Secrets are random, so digests never collide across projects.
    pub fn project_by_secret(&self, secret: &str) -> Result<Option<Project>> {
        self.project_where("secret_sha256 = ?1", secret_digest(secret))
    }

    /// A project by id.
    pub fn project(&self, id: i64) -> Result<Option<Project>> {
        self.project_where("id = ?1", id)
    }

    fn project_where(&self, cond: &str, arg: impl Into<Value>) -> Result<Option<Project>> {
        self.with(|c| {
            c.query_opt(
                &format!("SELECT {PROJECT_COLS} FROM projects WHERE {cond}"),
                params![arg],
                project_from_row,
            )
        })
    }
}

fn insert_project(c: &mut dyn Conn, name: &str, actor: &str) -> Result<CreatedProject> {
    let (api_key, secret_key, now) = (random_hex(16), random_hex(16), now_ms());
    let id = c.query_row(
        "INSERT INTO projects (name, api_key, secret_key, secret_sha256, created_at)
         VALUES (?1, ?2, '', ?3, ?4) RETURNING id",
        params![name, &api_key, secret_digest(&secret_key), now],
        |r| r.get(0),
    )?;
    let project = Project {
        id,
        name: name.to_string(),
        api_key,
        created_at: now,
        time_zone: chrono_tz::Tz::UTC,
    };
    let detail = serde_json::json!({ "project_id": project.id, "name": project.name });
    crate::audit::audit_in(c, actor, "project.created", None, &detail)?;
    Ok(CreatedProject {
        project,
        secret_key,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_secrets_of_older_databases_become_digests_and_still_work() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.sqlite");
        let meta = MetaStore::open(&path).unwrap();
        let first = meta.bootstrap("a@b.c", Some("password")).unwrap().unwrap();
        let api_key = first.project.project.api_key.clone();
        // As an older version stored it.
        meta.with(|c| {
            c.execute(
                "UPDATE projects SET secret_key = 'legacy-secret', secret_sha256 = NULL",
                &[],
            )?;
            Ok(())
        })
        .unwrap();
        drop(meta);
        let meta = MetaStore::open(&path).unwrap();
        let stored: String = meta
            .with(|c| c.query_row("SELECT secret_key FROM projects", &[], |r| r.get(0)))
            .unwrap();
        assert_eq!(stored, "", "the plain secret is blanked");
        assert!(meta
            .project_for_keys(&api_key, "legacy-secret")
            .unwrap()
            .is_some());
        assert!(meta.project_for_keys(&api_key, "other").unwrap().is_none());
        assert!(meta
            .project_for_keys(&api_key, &first.project.secret_key)
            .unwrap()
            .is_none());
    }
}
