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
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        source: diesel::ConnectionError,
    },
    #[error("migration failed: {0}")]
    Run(String),
    #[error("unsupported database url {0:?}: use postgres:// or sqlite://")]
    Url(String),
}

/// Runs `sql` on a fresh PostgreSQL connection (schema set-up for tests and benchmarks).
/// Must not be called from inside an async runtime.
pub fn execute(url: &str, sql: &str) -> Result<(), MigrateError> {
    let mut conn =
        AsyncConnectionWrapper::<AsyncPgConnection>::establish(url).map_err(|source| {
            MigrateError::Connect {
                url: url.to_owned(),
                source,
            }
        })?;
    conn.batch_execute(sql)
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
            let mut conn =
                AsyncConnectionWrapper::<AsyncPgConnection>::establish(url).map_err(connect_err)?;
            let ran = conn
                .run_pending_migrations(POSTGRES)
                .map_err(|e| MigrateError::Run(e.to_string()))?;
            Ok(ran.len())
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
