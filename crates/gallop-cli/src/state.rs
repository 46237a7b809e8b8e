//! Where a gallop service keeps its state: flags shared by `serve`, `worker`, `token` and `keys`,
//! so every process of one service can be pointed at the same database and bucket.

use std::path::PathBuf;

use anyhow::Context;
use gallop_server::ServerConfig;
use gallop_server::storage::Storage;

#[derive(clap::Args, Clone)]
pub struct StateArgs {
    /// Holds the job database, inputs, results and the link-signing key, except what
    /// --database-url, --storage-url or GALLOP_SIGNING_KEY place elsewhere.
    #[arg(long, default_value = "gallop-data")]
    pub data_dir: PathBuf,
    /// The job database: sqlite:///ABSOLUTE/PATH.db (default: DATA_DIR/gallop.db; one machine)
    /// or postgres://USER:PASSWORD@HOST:PORT/DB (any number of API and worker processes).
    #[arg(long, env = "GALLOP_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Inputs and results: file:///ABSOLUTE/DIR (default: DATA_DIR/objects) or
    /// s3://BUCKET/PREFIX (credentials from the standard AWS_* variables; AWS_ENDPOINT_URL for
    /// an S3-compatible server).
    #[arg(long, env = "GALLOP_STORAGE_URL")]
    pub storage_url: Option<String>,
}

impl StateArgs {
    /// A server config holding these locations (the storage opened) and defaults for the rest.
    pub fn config(&self) -> anyhow::Result<ServerConfig> {
        let storage = match &self.storage_url {
            Some(url) => Some(Storage::from_url(url).context("--storage-url")?),
            None => None,
        };
        Ok(ServerConfig {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            storage,
            ..ServerConfig::default()
        })
    }
}
