//! Organization, users, API tokens and projects: who may do what, and which keys select a
//! project.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use rand::RngCore;
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::db::all_rows;
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

/// A project: its keys select it on the Amplitude-compatible APIs.
#[derive(Debug, Clone, Serialize)]
pub struct Project {
    pub id: i64,
    pub name: String,
    pub api_key: String,
    #[serde(skip)]
    pub secret_key: String,
    pub created_at: i64,
}

/// What a first start creates and must show once: the generated secrets.
#[derive(Debug, Clone)]
pub struct NewProject {
    pub project: Project,
    /// The administrator's generated password, when none was configured.
    pub admin_password: Option<String>,
    pub admin_email: String,
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

fn user_from_row(r: &Row) -> rusqlite::Result<User> {
    let role: String = r.get(2)?;
    Ok(User {
        id: r.get(0)?,
        email: r.get(1)?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        active: r.get(3)?,
        created_at: r.get(4)?,
    })
}

fn project_from_row(r: &Row) -> rusqlite::Result<Project> {
    Ok(Project {
        id: r.get(0)?,
        name: r.get(1)?,
        api_key: r.get(2)?,
        secret_key: r.get(3)?,
        created_at: r.get(4)?,
    })
}

const USER_COLS: &str = "id, email, role, active, created_at";
const PROJECT_COLS: &str = "id, name, api_key, secret_key, created_at";

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

impl MetaStore {
    /// Creates the organization, its first administrator and the `Default` project when the
    /// database is new. Returns the secrets to print once, or `None` on a later start.
    pub fn bootstrap(
        &self,
        admin_email: &str,
        admin_password: Option<&str>,
    ) -> Result<Option<NewProject>> {
        let exists: bool = self.with(|c| {
            Ok(
                c.query_row("SELECT EXISTS(SELECT 1 FROM organization)", [], |r| {
                    r.get(0)
                })?,
            )
        })?;
        if exists {
            return Ok(None);
        }
        let generated = admin_password.is_none().then(|| random_hex(12));
        let password = admin_password.map(str::to_string).or(generated.clone());
        let hash = hash_password(password.as_deref().unwrap_or_default())?;
        let project = self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO organization (id, name, created_at) VALUES (1, 'lethe', ?1)",
                [now_ms()],
            )?;
            tx.execute(
                "INSERT INTO users (email, password_hash, role, created_at) VALUES (?1, ?2, 'admin', ?3)",
                params![admin_email, hash, now_ms()],
            )?;
            let project = insert_project(&tx, "Default")?;
            tx.commit()?;
            Ok(project)
        })?;
        Ok(Some(NewProject {
            project,
            admin_password: generated,
            admin_email: admin_email.to_string(),
        }))
    }

    /// Adds a user; `Conflict` when the email is taken.
    pub fn create_user(&self, email: &str, password: &str, role: Role) -> Result<User> {
        let hash = hash_password(password)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO users (email, password_hash, role, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![email, hash, role.as_str(), now_ms()],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    MetaError::Conflict("a user with this email")
                } else {
                    e.into()
                }
            })?;
            let id = c.last_insert_rowid();
            Ok(c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                [id],
                user_from_row,
            )?)
        })
    }

    /// Every user, oldest first.
    pub fn list_users(&self) -> Result<Vec<User>> {
        self.with(|c| {
            all_rows(
                c,
                &format!("SELECT {USER_COLS} FROM users ORDER BY id"),
                [],
                user_from_row,
            )
        })
    }

    /// Checks a password; returns the active user it belongs to.
    pub fn verify_password(&self, email: &str, password: &str) -> Result<Option<User>> {
        let found = self.with(|c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {USER_COLS}, password_hash FROM users WHERE email = ?1 AND active = 1"
                ),
                [email],
                |r| Ok((user_from_row(r)?, r.get::<_, String>(5)?)),
            )
            .optional()?)
        })?;
        Ok(found.and_then(|(user, hash)| {
            let parsed = PasswordHash::new(&hash).ok()?;
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .ok()
                .map(|_| user)
        }))
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
            Ok(c.query_row(
                "SELECT u.id, u.email, u.role, u.active, u.created_at FROM api_tokens t
                 JOIN users u ON u.id = t.user_id
                 WHERE t.token_sha256 = ?1 AND t.expires_at > ?2 AND u.active = 1",
                params![token_digest(token), now_ms()],
                user_from_row,
            )
            .optional()?)
        })
    }

    /// Ends a session: the token stops working at once.
    pub fn revoke_token(&self, token: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM api_tokens WHERE token_sha256 = ?1",
                [token_digest(token)],
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
        self.with(|c| {
            let tx = c.transaction()?;
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
                [],
                |r| r.get(0),
            )?;
            if admins == 0 {
                return Err(MetaError::LastAdmin);
            }
            if active == Some(false) {
                tx.execute("DELETE FROM api_tokens WHERE user_id = ?1", [id])?;
            }
            let user = tx.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                [id],
                user_from_row,
            )?;
            let detail = serde_json::json!({
                "user_id": id, "email": user.email, "role": user.role, "active": user.active,
            });
            crate::tasks::audit_in(&tx, actor, "user.updated", None, &detail)?;
            tx.commit()?;
            Ok(Some(user))
        })
    }

    /// Creates a project with fresh keys.
    pub fn create_project(&self, name: &str) -> Result<Project> {
        self.with(|c| insert_project(c, name))
    }

    /// Every project, oldest first.
    pub fn list_projects(&self) -> Result<Vec<Project>> {
        self.with(|c| {
            all_rows(
                c,
                &format!("SELECT {PROJECT_COLS} FROM projects ORDER BY id"),
                [],
                project_from_row,
            )
        })
    }

    /// The project an ingestion API key selects.
    pub fn project_by_api_key(&self, api_key: &str) -> Result<Option<Project>> {
        self.project_where("api_key = ?1", api_key)
    }

    /// A project by id.
    pub fn project(&self, id: i64) -> Result<Option<Project>> {
        self.project_where("id = ?1", id)
    }

    fn project_where(&self, cond: &str, arg: impl rusqlite::ToSql) -> Result<Option<Project>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {PROJECT_COLS} FROM projects WHERE {cond}"),
                [arg],
                project_from_row,
            )
            .optional()?)
        })
    }
}

fn insert_project(c: &rusqlite::Connection, name: &str) -> Result<Project> {
    let (api_key, secret_key, now) = (random_hex(16), random_hex(16), now_ms());
    c.execute(
        "INSERT INTO projects (name, api_key, secret_key, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![name, api_key, secret_key, now],
    )?;
    Ok(Project {
        id: c.last_insert_rowid(),
        name: name.to_string(),
        api_key,
        secret_key,
        created_at: now,
    })
}
