//! Throwaway real servers for tests: no mocks, real processes on loopback, gone when the test
//! ends.
//!
//! - [`TempPostgres`]: a PostgreSQL cluster made with the installed `initdb` and run from a temp
//!   dir on a free loopback port; [`TempPostgres::fresh_database`] hands each test its own empty
//!   database.
//! - [`TempS3`]: an S3-compatible server (`s3s` over a temp directory) on a free loopback port,
//!   checking real SigV4 signatures, usable by this process and by child processes alike.

mod postgres;
mod s3;

pub use crate::postgres::TempPostgres;
pub use crate::s3::TempS3;
