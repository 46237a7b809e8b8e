//! Every integration test of this crate, in one binary (see DEVELOPERS.md).

mod fetch_guard;
