//! The request and response types of every API shape gallop serves, their validation, and the
//! mapping of each shape to one internal [`GenerationRequest`]. No I/O happens here.

mod cloudflare;
mod dashscope;
mod error;
mod geometry;
mod redact;
mod references;
mod request;
mod validate;

pub use cloudflare::*;
pub use dashscope::*;
pub use error::ApiError;
pub use geometry::output_size;
pub use redact::{REDACTED, redact_secrets, redact_uri};
pub use references::referenced_images;
pub use request::*;
pub use validate::{UriPolicy, ValidationError, parse_input, parse_input_with};
