//! HTTP routes for each API shape, auth, OpenAPI, metrics and the process that serves them
//! (with an embedded worker unless told not to). The job store, storage and worker live in
//! their own crates below this one. No model math.

pub mod app;
pub mod backends;
pub mod config;
pub mod connections;
pub mod http;

// The layers below, under the paths the routes (and embedders) have always used.
pub use gallop_storage::signing;
pub use gallop_worker::{engines, keys, upstreams, worker};
pub mod storage {
    pub use gallop_storage::*;
}
pub mod store {
    pub use gallop_store::*;
    pub use gallop_store_sqlite::SqliteStore;
}

pub use app::{RunningServer, run, start};
pub use config::ServerConfig;
pub use engines::EngineMap;
