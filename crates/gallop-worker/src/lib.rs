//! The worker side of gallop: the claim loop with leases, retries and the sweeper
//! (`worker`), the engines it runs (`engines`), models routed to an upstream service
//! (`upstreams`) and the vault that seals accounts' upstream keys (`keys`).
//! It reaches jobs only through `gallop_store::JobStore` and objects only through
//! `gallop_storage::Storage`, so it runs inside `gallop serve` or as its own process.

pub mod engines;
pub mod keys;
pub mod upstreams;
pub mod worker;

pub use engines::EngineMap;
