//! Opening the job store an operator names by URL (`--database-url`), shared by `gallop serve`,
//! `gallop worker` and the tools. The default keeps it in the data directory:
//! `sqlite://{data_dir}/gallop.db`. (Storage URLs are `gallop_storage::Storage::from_url`'s.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::{JobStore, SqliteStore, StoreConfig, StoreError};

/// Where the job store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// One SQLite file (one machine; API and worker processes may share it).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://user:pass@host:port/db`): any number of processes
    /// on any number of machines.
    Postgres(String),
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(
        "database url must be sqlite:///ABSOLUTE/PATH.db or postgres://USER@HOST/DB, got {0:?}"
    )]
    BadDatabaseUrl(String),
    #[error("job store: {0}")]
    Store(#[from] StoreError),
}

impl DatabaseUrl {
    /// The data directory's own database when no url is given.
    pub fn or_default(url: Option<&str>, data_dir: &Path) -> Result<DatabaseUrl, BackendError> {
        match url {
            None => Ok(DatabaseUrl::Sqlite(data_dir.join("gallop.db"))),
            Some(url) => url.parse(),
        }
    }

    /// The url without its password, for logs and startup lines.
    pub fn describe(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => gallop_api::redact_uri(url),
        }
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = BackendError;

    fn from_str(url: &str) -> Result<DatabaseUrl, BackendError> {
        let bad = || BackendError::BadDatabaseUrl(gallop_api::redact_uri(url));
        if let Some(path) = url.strip_prefix("sqlite://") {
            // sqlite:///abs/path: the path keeps its leading slash.
            if !path.starts_with('/') || path.len() < 2 {
                return Err(bad());
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(url.to_string()));
        }
        Err(bad())
    }
}

/// Opens (creating or migrating) the job store at `url`.
pub fn open_store(
    url: &DatabaseUrl,
    config: StoreConfig,
) -> Result<Arc<dyn JobStore>, BackendError> {
    Ok(match url {
        DatabaseUrl::Sqlite(path) => Arc::new(SqliteStore::open_file(path, config)?),
        DatabaseUrl::Postgres(url) => {
            Arc::new(gallop_store_postgres::PostgresStore::connect(url, config)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_name_their_backend_or_the_rule() {
        let dir = Path::new("/srv/gallop");
        assert_eq!(
            DatabaseUrl::or_default(None, dir).unwrap(),
            DatabaseUrl::Sqlite(dir.join("gallop.db"))
        );
        assert_eq!(
            "sqlite:///var/lib/g.db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Sqlite(PathBuf::from("/var/lib/g.db"))
        );
        assert!(matches!(
            "postgres://gallop@db/gallop"
                .parse::<DatabaseUrl>()
                .unwrap(),
            DatabaseUrl::Postgres(_)
        ));
        for bad in ["sqlite://relative.db", "mysql://x/y", "", "gallop.db"] {
            let err = bad.parse::<DatabaseUrl>().unwrap_err().to_string();
            assert!(err.contains("sqlite:///ABSOLUTE/PATH.db"), "{bad}: {err}");
        }
        let err = "mysql://me:hunter2@db/x"
            .parse::<DatabaseUrl>()
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
