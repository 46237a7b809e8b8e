//! HTTP routes for each API shape, auth, the durable job store, result
//! storage and the worker loop. No model math.

pub mod app;
pub mod config;
pub mod connections;
pub mod engines;
pub mod http;
pub mod keys;
pub mod signing;
pub mod storage;
pub mod store;
pub mod upstreams;
pub mod worker;

pub use app::{RunningServer, run, start};
pub use config::ServerConfig;
pub use engines::EngineMap;
