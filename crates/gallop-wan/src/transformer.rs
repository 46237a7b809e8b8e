//! Owned by the issue that builds it.
