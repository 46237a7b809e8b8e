//! HTTP routes, auth, safe fetching, the durable job store, result storage and the worker.
