//! The two databases the metadata runs on, behind one small interface: embedded SQLite (the
//! default, one file in the data dir) and PostgreSQL (shared by a deployment's nodes).
//!
//! Every query in this crate is written once, in the SQL both dialects accept, with `?N`
//! placeholders (rewritten to PostgreSQL's `$N`). Values cross the boundary as [`Value`]s:
//! integers are 64-bit in both schemas and booleans are integers, so a row reads the same
//! whichever database it came from.

use crate::NodeRole;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use crate::{MetaError, Result};

/// One parameter or column value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl Value {
    /// What kind of value this is, for errors (never the value itself).
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "integer",
            Value::Text(_) => "text",
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<&i64> for Value {
    fn from(v: &i64) -> Value {
        Value::Int(*v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(v.into())
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(v.into())
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// The most rows one [`execute_rows`] statement carries.
const ROWS_PER_STATEMENT: usize = 256;

/// Runs `sql` once per chunk of `rows`, with `{rows}` in it replaced by the chunk's rows,
/// each written as `row` with its `?`s numbered (`(?, ?)` becomes `(?1, ?2), (?3, ?4)`): a
/// flush that changed 100 000 profiles costs the database a few hundred statements, not
/// 100 000 round trips. Chunks hold up to [`ROWS_PER_STATEMENT`] rows in powers of two, so
/// each statement is prepared in at most nine shapes. An upsert's rows must not repeat a
/// conflict key (one statement cannot change a row twice).
pub(crate) fn execute_rows(
    c: &mut dyn Conn,
    sql: &str,
    row: &str,
    rows: impl IntoIterator<Item = Vec<Value>>,
) -> Result<()> {
    let rows: Vec<Vec<Value>> = rows.into_iter().collect();
    let mut left = rows.len();
    let mut rows = rows.into_iter();
    let mut parts = row.split('?');
    let first = parts.next().unwrap_or_default();
    let parts: Vec<&str> = parts.collect();
    while left > 0 {
        let n = ROWS_PER_STATEMENT.min(1 << left.ilog2());
        let mut list = String::new();
        for r in 0..n {
            if r > 0 {
                list.push_str(", ");
            }
            list.push_str(first);
            for (i, part) in parts.iter().enumerate() {
                list.push_str(&format!("?{}{part}", r * parts.len() + i + 1));
            }
        }
        let params: Vec<Value> = rows.by_ref().take(n).flatten().collect();
        c.execute(&sql.replace("{rows}", &list), &params)?;
        left -= n;
    }
    Ok(())
}

/// The parameters of one statement: `params![a, b]`.
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        &[$(<_ as Into<$crate::sql::Value>>::into($p)),*][..]
    };
}
pub(crate) use params;

/// A column type a [`Row`] can be read as.
pub(crate) trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<i64> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl FromValue for bool {
    fn from_value(v: &Value) -> Option<bool> {
        i64::from_value(v).map(|i| i != 0)
    }
}

impl FromValue for u32 {
    fn from_value(v: &Value) -> Option<u32> {
        i64::from_value(v).and_then(|i| u32::try_from(i).ok())
    }
}

impl FromValue for String {
    fn from_value(v: &Value) -> Option<String> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Option<T>> {
        match v {
            Value::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// One result row.
#[derive(Debug)]
pub(crate) struct Row(Vec<Value>);

impl Row {
    /// Column `i` as `T`; a missing column or another type is corrupt metadata.
    pub(crate) fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        let value = self.0.get(i).unwrap_or(&Value::Null);
        T::from_value(value).ok_or_else(|| {
            MetaError::Corrupt(format!(
                "column {i} holds {} where {} was expected",
                value.kind(),
                std::any::type_name::<T>()
            ))
        })
    }
}

/// A connection to either database.
pub(crate) trait Conn {
    /// Runs a statement; returns how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
    /// Runs a query; returns every row.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;
    /// Runs statements without parameters (transaction control, migrations).
    fn batch(&mut self, sql: &str) -> Result<()>;
}

impl dyn Conn + '_ {
    /// The first row of a query, mapped; an empty result is an error.
    pub(crate) fn query_row<T>(
        &mut self,
        sql: &str,
        params: &[Value],
        map: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<T> {
        self.query_opt(sql, params, map)?
            .ok_or_else(|| MetaError::Corrupt("an expected row is missing".into()))
    }

    /// The first row of a query, mapped, if there is one.
    pub(crate) fn query_opt<T>(
        &mut self,
        sql: &str,
        params: &[Value],
        map: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        self.query(sql, params)?.first().map(map).transpose()
    }

    /// Every row of a query, mapped.
    pub(crate) fn query_map<T>(
        &mut self,
        sql: &str,
        params: &[Value],
        map: impl FnMut(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.query(sql, params)?.iter().map(map).collect()
    }

    /// Runs `work` in one transaction: committed when it returns `Ok`, rolled back otherwise.
    pub(crate) fn transaction<T>(
        &mut self,
        work: impl FnOnce(&mut dyn Conn) -> Result<T>,
    ) -> Result<T> {
        self.batch("BEGIN")?;
        let done = work(self).and_then(|value| self.batch("COMMIT").map(|()| value));
        if done.is_err() {
            // A failed statement or commit may have ended the transaction already.
            let _ = self.batch("ROLLBACK");
        }
        done
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

impl Conn for rusqlite::Connection {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let changed = self
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params))?;
        Ok(changed as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        use rusqlite::types::ValueRef;
        let mut statement = self.prepare_cached(sql)?;
        let columns = statement.column_count();
        let mut rows = statement.query(rusqlite::params_from_iter(params))?;
        let mut all = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..columns)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => Value::Null,
                        ValueRef::Integer(v) => Value::Int(v),
                        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                        ValueRef::Real(_) | ValueRef::Blob(_) => {
                            return Err(MetaError::Corrupt(format!(
                                "column {i} holds a real or a blob"
                            )))
                        }
                    })
                })
                .collect::<Result<_>>()?;
            all.push(Row(values));
        }
        Ok(all)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.execute_batch(sql)?)
    }
}

/// A connection to PostgreSQL. tokio-postgres's client is driven by a connection task on a
/// runtime of its own, and its calls are awaited on the calling thread, so the metadata
/// stays a blocking API that any thread (async or not) may call, as with SQLite.
pub(crate) struct Postgres {
    config: tokio_postgres::Config,
    tls: Tls,
    client: tokio_postgres::Client,
    /// Prepared statements by their text in this crate's spelling.
    statements: HashMap<String, tokio_postgres::Statement>,
    /// A call failed because the connection is gone.
    lost: bool,
    /// A transaction is open (a panic in the middle of one leaves it so: see `recover`).
    in_transaction: bool,
    /// Held for the deployment: the session-level advisory lock, taken again on reconnect.
    node_lock: Option<NodeRole>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The advisory lock key every node holds for as long as it runs ("lethe"): exclusively a
/// single node, shared a cluster's members.
const SOLE_NODE_LOCK: i64 = 0x006c_6574_6865;

impl Postgres {
    /// Connects to `url` (`postgres://user:password@host:port/database?options`).
    pub(crate) fn connect(url: &str) -> Result<Postgres> {
        let config = tokio_postgres::Config::from_str(url)?;
        let tls = Tls::for_config(&config)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lethe-postgres")
            .enable_all()
            .build()
            .map_err(|e| MetaError::Unavailable(format!("start the PostgreSQL client: {e}")))?;
        let client = match open_client(&runtime, &config, &tls) {
            Ok(client) => client,
            Err(e) => {
                // Without waiting, as in `drop`: a server opens its store on an async thread.
                runtime.shutdown_background();
                return Err(e);
            }
        };
        Ok(Postgres {
            config,
            tls,
            client,
            statements: HashMap::new(),
            lost: false,
            in_transaction: false,
            node_lock: None,
            runtime: Some(runtime),
        })
    }

    /// Makes the connection usable for a new call: reconnects after a lost connection, and
    /// ends a transaction a panic left open.
    pub(crate) fn recover(&mut self) -> Result<()> {
        if self.lost || self.client.is_closed() {
            let runtime = self.runtime.as_ref().expect("runtime lives until drop");
            self.client = open_client(runtime, &self.config, &self.tls)?;
            self.statements.clear();
            self.lost = false;
            self.in_transaction = false;
            if let Some(role) = self.node_lock {
                self.claim_node(role)?;
            }
        }
        if self.in_transaction {
            self.batch("ROLLBACK")?;
        }
        Ok(())
    }

    /// Takes the deployment's session lock: exclusively for a single node, so that a second
    /// node refuses to start instead of sharing the manifest and queue without coordination;
    /// shared for a cluster's members, which coordinate through the writer lease (and then a
    /// single node cannot start beside them, nor a member beside a single node).
    pub(crate) fn claim_node(&mut self, role: NodeRole) -> Result<()> {
        self.recover()?;
        let sql = match role {
            NodeRole::Sole => "SELECT pg_try_advisory_lock(?1)",
            NodeRole::ClusterMember => "SELECT pg_try_advisory_lock_shared(?1)",
        };
        let held = self.query(sql, params![SOLE_NODE_LOCK])?;
        match held.first().map(|r| r.get::<bool>(0)).transpose()? {
            Some(true) => {
                self.node_lock = Some(role);
                Ok(())
            }
            _ => Err(MetaError::DeploymentInUse(role)),
        }
    }

    /// Passes a call's outcome on, noting a lost connection: the connection task may not
    /// have ended yet when its call fails, so `recover` would not see the client closed.
    fn seen<T>(&mut self, outcome: std::result::Result<T, tokio_postgres::Error>) -> Result<T> {
        outcome.map_err(|e| {
            self.lost |= connection_lost(&e);
            e.into()
        })
    }

    fn statement(&mut self, sql: &str) -> Result<tokio_postgres::Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let prepared = futures_executor::block_on(self.client.prepare(&numbered(sql)));
        let statement = self.seen(prepared)?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Without waiting: the store may be dropped on an async thread, where blocking panics.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// How the connection is secured: `sslmode=require` in the URL asks for TLS, and lethe then
/// verifies the server's certificate (as libpq's `verify-full`) against the system's roots
/// and the CA file `PGSSLROOTCERT` names, if set; otherwise plain TCP.
#[derive(Clone)]
pub(crate) enum Tls {
    Plain,
    Verified(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Tls {
    pub(crate) fn for_config(config: &tokio_postgres::Config) -> Result<Tls> {
        if config.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
            return Ok(Tls::Plain);
        }
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if let Ok(path) = std::env::var("PGSSLROOTCERT") {
            let unusable =
                |e: &dyn std::fmt::Display| MetaError::Unavailable(format!("PGSSLROOTCERT: {e}"));
            for cert in CertificateDer::pem_file_iter(&path).map_err(|e| unusable(&e))? {
                roots
                    .add(cert.map_err(|e| unusable(&e))?)
                    .map_err(|e| unusable(&e))?;
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| MetaError::Unavailable(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls::Verified(
            tokio_postgres_rustls::MakeRustlsConnect::new(tls),
        ))
    }
}

fn open_client(
    runtime: &tokio::runtime::Runtime,
    config: &tokio_postgres::Config,
    tls: &Tls,
) -> Result<tokio_postgres::Client> {
    let (config, tls) = (config.clone(), tls.clone());
    let connecting = runtime.spawn(async move {
        // The connection task ends when the server closes the session or the client is
        // dropped; the next call sees a closed client and reconnects.
        let client = match tls {
            Tls::Plain => {
                let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                client
            }
            Tls::Verified(tls) => {
                let (client, connection) = config.connect(tls).await?;
                tokio::spawn(connection);
                client
            }
        };
        Ok::<_, tokio_postgres::Error>(client)
    });
    let client = futures_executor::block_on(connecting)
        .map_err(|e| MetaError::Unavailable(format!("the PostgreSQL client stopped: {e}")))??;
    Ok(client)
}

/// Whether a failure means the session is gone (or going): the client closed, an I/O error,
/// or the server's connection-exception and shutdown codes (class 08, 57P01-57P03; a
/// terminated session answers 57P01 before the client notices it closed).
pub(crate) fn connection_lost(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
    }
}

/// `?N` placeholders as PostgreSQL's `$N`.
fn numbered(sql: &str) -> String {
    sql.replace('?', "$")
}

impl Conn for Postgres {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let changed = futures_executor::block_on(self.client.execute(&statement, &params));
        self.seen(changed)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = futures_executor::block_on(self.client.query(&statement, &params));
        let rows = self.seen(rows)?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| column_value(row, i))
                    .collect::<Result<_>>()
                    .map(Row)
            })
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        let done = futures_executor::block_on(self.client.batch_execute(sql));
        self.seen(done)?;
        match sql {
            "BEGIN" => self.in_transaction = true,
            "COMMIT" | "ROLLBACK" => self.in_transaction = false,
            _ => {}
        }
        Ok(())
    }
}

fn column_value(row: &tokio_postgres::Row, i: usize) -> Result<Value> {
    let ty = row.columns()[i].type_();
    Ok(match *ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.into(),
        Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(i64::from).into(),
        Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(i64::from).into(),
        Type::BOOL => row.try_get::<_, Option<bool>>(i)?.into(),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            row.try_get::<_, Option<String>>(i)?.into()
        }
        _ => {
            return Err(MetaError::Corrupt(format!(
                "column {i} has the unsupported type {ty}"
            )))
        }
    })
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(v), &Type::INT8) => v.to_sql(ty, out),
            (Value::Int(v), &Type::INT4) => i32::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), &Type::INT2) => i16::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), &Type::BOOL) => (*v != 0).to_sql(ty, out),
            (Value::Text(s), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME) => {
                s.as_str().to_sql(ty, out)
            }
            (value, ty) => {
                Err(format!("a {} parameter where {ty} is expected", value.kind()).into())
            }
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT8
                | Type::INT4
                | Type::INT2
                | Type::BOOL
                | Type::TEXT
                | Type::VARCHAR
                | Type::BPCHAR
                | Type::NAME
        )
    }

    to_sql_checked!();
}
