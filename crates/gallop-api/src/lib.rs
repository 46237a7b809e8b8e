//! The request and response types of every API shape gallop serves, their validation, and the
//! mapping of each shape to one internal [`GenerationRequest`]. No I/O happens here.

mod request;

pub use request::*;
