//! A client of an upstream Alibaba Model Studio (DashScope) endpoint for video synthesis:
//! submit a task (`X-DashScope-Async: enable`), read it, cancel it, download its video. Every
//! error says what a caller should do about it ([`UpstreamError::is_transient`]): throttling
//! and an unreachable or failing upstream are worth retrying, a refused key or bad input never.
//! Keys are held in [`ApiKey`], which never prints itself.

mod client;
mod error;
mod key;
mod retry;
mod route;

pub use client::{Upstream, synthesis_body};
pub use error::{UpstreamError, is_bad_input_code};
pub use key::{ApiKey, KeySource};
pub use retry::Backoff;
pub use route::{DEFAULT_PATIENCE, DEFAULT_POLL_INTERVAL, UpstreamRoute};
