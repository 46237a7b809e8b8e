//! Throwaway real servers for tests: no mocks, real processes on loopback, gone when the test
//! ends.
//!
//! - [`TempPostgres`]: a PostgreSQL cluster made with the installed `initdb` and run from a temp
//!   dir on a free loopback port; [`TempPostgres::fresh_database`] hands each test its own empty
//!   database.

mod postgres;

pub use crate::postgres::TempPostgres;
