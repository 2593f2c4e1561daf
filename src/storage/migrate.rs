//! Migrations, run synchronously before the actix System starts: diesel-async's
//! migration harness cannot run on actix-rt's single-threaded runtimes.

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::{sqlite_path, Backend};

const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to {}: {source}", redacted(url))]
    Connect {
        url: String,
        source: diesel::ConnectionError,
    },
    #[error("migration failed: {0}")]
    Run(String),
    #[error("unsupported database url {:?}: use postgres:// or sqlite://", redacted(.0))]
    Url(String),
}

/// `url` with its password, if any, replaced by `***`: for logs and errors.
pub fn redacted(url: &str) -> String {
    /// Query parameters libpq and tokio-postgres read secrets from.
    const SECRETS: [&str; 3] = ["password", "sslpassword", "passfile"];
    let Ok(mut u) = url::Url::parse(url) else {
        return "<unparsable url>".to_owned();
    };
    let in_query = u.query_pairs().any(|(k, _)| SECRETS.contains(&k.as_ref()));
    if u.password().is_none() && !in_query {
        return url.to_owned();
    }
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if in_query {
        let query: Vec<String> = u
            .query()
            .unwrap_or("")
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if SECRETS.contains(&k) => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        u.set_query(Some(&query.join("&")));
    }
    u.to_string()
}

/// Key of the PostgreSQL advisory lock migrations take, so that instances started
/// at once on an empty database migrate one after the other.
const MIGRATION_LOCK: i64 = 0x6e6f_7374_7273_796e; // "nostrsyn"

/// A blocking PostgreSQL connection, over TLS where the URL's `sslmode` asks for it.
/// Fields drop in order: the connection, then the runtime that drives it.
pub struct PgBlocking {
    pub conn: AsyncConnectionWrapper<AsyncPgConnection>,
    _driver: tokio::runtime::Runtime,
}

impl PgBlocking {
    /// Must not be called from inside an async runtime.
    pub fn connect(url: &str) -> Result<PgBlocking, MigrateError> {
        let connect_err = |source| MigrateError::Connect {
            url: url.to_owned(),
            source,
        };
        // The connection's I/O runs on this runtime's worker while the wrapper blocks
        // on each query from its own.
        let driver = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| connect_err(diesel::ConnectionError::BadConnection(e.to_string())))?;
        let conn = driver
            .block_on(super::tls::connect(url))
            .map_err(connect_err)?;
        Ok(PgBlocking {
            conn: AsyncConnectionWrapper::from(conn),
            _driver: driver,
        })
    }
}

/// Runs `sql` on a fresh PostgreSQL connection (schema set-up for tests and benchmarks).
/// Must not be called from inside an async runtime.
pub fn execute(url: &str, sql: &str) -> Result<(), MigrateError> {
    let mut pg = PgBlocking::connect(url)?;
    pg.conn
        .batch_execute(sql)
        .map_err(|e| MigrateError::Run(e.to_string()))
}

/// Applies pending migrations; returns how many ran. Must not be called from inside
/// an async runtime.
pub fn run_pending(url: &str) -> Result<usize, MigrateError> {
    let connect_err = |source| MigrateError::Connect {
        url: url.to_owned(),
        source,
    };
    match Backend::of_url(url) {
        Some(Backend::Postgres) => {
            let mut pg = PgBlocking::connect(url)?;
            let conn = &mut pg.conn;
            let run = |e: diesel::result::Error| MigrateError::Run(e.to_string());
            // Held until this connection closes, whatever happens below.
            conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                .map_err(run)?;
            let ran = conn
                .run_pending_migrations(POSTGRES)
                .map_err(|e| MigrateError::Run(e.to_string()))?
                .len();
            conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
                .map_err(run)?;
            Ok(ran)
        }
        Some(Backend::Sqlite) => {
            let mut conn = SqliteConnection::establish(sqlite_path(url)).map_err(connect_err)?;
            conn.batch_execute(super::sqlite::PRAGMAS)
                .map_err(|e| MigrateError::Run(e.to_string()))?;
            let ran = conn
                .run_pending_migrations(SQLITE)
                .map_err(|e| MigrateError::Run(e.to_string()))?;
            Ok(ran.len())
        }
        None => Err(MigrateError::Url(url.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let cases = [
            (
                "postgres://sync:s3cr3t@db.example:5432/nostr?sslmode=require",
                "postgres://sync:***@db.example:5432/nostr?sslmode=require",
            ),
            (
                "postgres://root@127.0.0.1/test",
                "postgres://root@127.0.0.1/test",
            ),
            ("sqlite://nostr-sync.db", "sqlite://nostr-sync.db"),
            (
                "postgres://sync@db/nostr?password=s3cr3t&sslmode=require&sslpassword=k",
                "postgres://sync@db/nostr?password=***&sslmode=require&sslpassword=***",
            ),
            ("not a url with password:x@", "<unparsable url>"),
        ];
        for (url, want) in cases {
            assert_eq!(redacted(url), want);
        }
    }
}
