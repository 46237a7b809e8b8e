//! Owned by the core server task.
