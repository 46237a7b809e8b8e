//! Building and running one gallop server: open the store and storage, make the first token,
//! start the worker, bind, and serve the router until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::backends::{DatabaseUrl, open_store as open_store_at};
use crate::config::{ServerConfig, public_base};
use crate::http::metrics::Metrics;
use crate::http::{AppState, SharedState, router};
use crate::keys::KeyVault;
use crate::signing::UrlSigner;
use crate::storage::Storage;
use crate::store::{JobStore, StoreConfig};
use crate::worker::{Worker, WorkerConfig};
use gallop_fetch::FetchPolicy;

/// How long a shutdown waits for answers in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The account of the token made when a server starts with none.
pub const FIRST_ACCOUNT: &str = "local";

/// A server that is listening and working.
pub struct RunningServer {
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    /// Base of the URLs handed out.
    pub public_url: String,
    /// The token made for account `local` when the store had none; shown once.
    pub first_token: Option<String>,
    pub state: SharedState,
    /// None with `--no-worker`.
    worker: Option<Worker>,
    shutdown: oneshot::Sender<()>,
    serve: JoinHandle<std::io::Result<()>>,
    observer: JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, lets answers in flight finish, and hands running jobs back to the queue.
    pub async fn shutdown(self) {
        self.state.closing.send_replace(true);
        let _ = self.shutdown.send(());
        // Answers in flight get a few seconds; a client that keeps a connection open does
        // not keep the process alive.
        let abort = self.serve.abort_handle();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.serve)
            .await
            .is_err()
        {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}: closing them");
            abort.abort();
        }
        self.observer.abort();
        if let Some(worker) = self.worker {
            worker.stop().await;
        }
    }

    /// A new token for `account` (tests and tools).
    pub fn create_token(&self, account: &str) -> anyhow::Result<String> {
        Ok(self.state.store.create_token(account)?)
    }
}

/// Opens the configured job store (the one `gallop serve`, `gallop worker` and `gallop token`
/// share): `config.database_url`, else the data directory's SQLite file.
pub fn open_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn JobStore>> {
    let limit = u32::try_from(config.queue_limit).unwrap_or(u32::MAX);
    let per_account = u32::try_from(config.queue_limit_per_account).unwrap_or(u32::MAX);
    let store_config = StoreConfig {
        max_queued_total: limit,
        max_queued_per_account: per_account.min(limit),
        lease_ms: i64::try_from(config.lease.as_millis()).unwrap_or(i64::MAX),
        default_max_attempts: config.max_attempts,
        backoff_base_ms: i64::try_from(config.retry_backoff.as_millis()).unwrap_or(i64::MAX),
        ..StoreConfig::default()
    };
    let url = DatabaseUrl::or_default(config.database_url.as_deref(), &config.data_dir)
        .context("--database-url")?;
    open_store_at(&url, store_config)
        .with_context(|| format!("opening the job store {}", url.describe()))
}

/// `open_store` off the async threads: a store's methods block (PostgreSQL's client would refuse
/// to run on an async task at all).
async fn open_store_blocking(config: &ServerConfig) -> anyhow::Result<Arc<dyn JobStore>> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || open_store(&config)).await?
}

/// The configured storage, else the data directory's `objects` folder.
pub fn open_storage(config: &ServerConfig) -> anyhow::Result<Storage> {
    match &config.storage {
        Some(storage) => Ok(storage.clone()),
        None => Ok(Storage::local(&config.data_dir)?),
    }
}

/// The link signer: `config.signing_key`, else the data directory's key file.
fn link_signer(config: &ServerConfig, public_url: &str) -> anyhow::Result<UrlSigner> {
    match config.signing_key {
        Some(key) => Ok(UrlSigner::new(key, public_url)),
        None => UrlSigner::load_or_create(&config.data_dir, public_url)
            .with_context(|| format!("signing key in {}", config.data_dir.display())),
    }
}

/// The worker a process runs with these settings (inside `gallop serve`, or `gallop worker`).
pub fn worker_config(config: &ServerConfig, vault: Arc<KeyVault>) -> WorkerConfig {
    WorkerConfig {
        concurrency: config.workers.max(1),
        job_timeout: config.job_timeout,
        fetch: FetchPolicy {
            allow_private: config.allow_private_fetch,
            ..FetchPolicy::default()
        },
        result_ttl: config.url_ttl,
        upload_ttl: config.upload_ttl,
        upstreams: config.upstreams.clone(),
        vault,
        render: config.render.clone(),
        ..WorkerConfig::default()
    }
}

/// Binds, starts the worker and serves in the background.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding {}", config.addr))?;
    let addr = listener.local_addr()?;
    let public_url = public_base(config.public_url.as_deref(), addr);
    if config.public_url.is_none() && addr.ip().is_unspecified() {
        tracing::warn!(
            "listening on {addr} without --public-url: result links will name {public_url}, \
             which clients elsewhere cannot reach; pass --public-url"
        );
    }

    let store = open_store_blocking(&config).await?;
    let first_token = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || match store.token_count()? {
            0 => store.create_token(FIRST_ACCOUNT).map(Some),
            _ => Ok(None),
        })
        .await??
    };
    let storage = open_storage(&config)?;
    let signer = link_signer(&config, &public_url)?;

    let vault = Arc::new(KeyVault::load_or_create(&config.data_dir)?);
    let worker = config.run_worker.then(|| {
        Worker::spawn(
            store.clone(),
            storage.clone(),
            config.engines.clone(),
            worker_config(&config, vault.clone()),
        )
    });

    let state: SharedState = Arc::new(AppState {
        store,
        storage,
        presign_downloads: config.presign_downloads,
        signer,
        metrics: Metrics::default(),
        public_url: public_url.clone(),
        sync_wait: config.sync_wait,
        body_limit: config.body_limit,
        url_ttl: config.url_ttl,
        upload_ttl: config.upload_ttl,
        uploads: config.uploads,
        upload_lock: tokio::sync::Mutex::new(()),
        engines: config.engines.clone(),
        upstreams: config.upstreams.clone(),
        vault,
        closing: tokio::sync::watch::channel(false).0,
    });
    let observer = tokio::spawn(observe_job_ends(state.clone()));

    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let app = router(state.clone());
    let limits = config.connections;
    let serve = tokio::spawn(crate::connections::serve(
        listener,
        app,
        limits,
        async move {
            let _ = shutdown_rx.await;
        },
    ));
    tracing::info!(%addr, %public_url, data_dir = %config.data_dir.display(), storage = %state.storage.describe(), "gallop serving");
    Ok(RunningServer {
        addr,
        public_url,
        first_token,
        state,
        worker,
        shutdown,
        serve,
        observer,
    })
}

/// `gallop serve`: runs until Ctrl-C (or SIGTERM), printing the first token once.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let server = start(config).await?;
    if let Some(token) = &server.first_token {
        println!(
            "Created the first API token, for account \"{FIRST_ACCOUNT}\" (shown only this once):\n\
             GALLOP_TOKEN={token}"
        );
    }
    println!(
        "gallop is listening on http://{} (public URL {})",
        server.addr, server.public_url
    );
    wait_for_signal().await;
    tracing::info!("shutting down: running jobs go back to the queue");
    server.shutdown().await;
    Ok(())
}

/// `gallop worker`: a worker on the configured store and storage, without HTTP, until Ctrl-C
/// (or SIGTERM); running jobs then go back to the queue.
pub async fn run_worker(config: ServerConfig) -> anyhow::Result<()> {
    let store = open_store_blocking(&config).await?;
    let storage = open_storage(&config)?;
    let vault = Arc::new(KeyVault::load_or_create(&config.data_dir)?);
    let worker_config = worker_config(&config, vault);
    println!(
        "gallop worker {} running {} job(s) at a time from {}",
        worker_config.worker_id,
        worker_config.concurrency,
        DatabaseUrl::or_default(config.database_url.as_deref(), &config.data_dir)?.describe()
    );
    let worker = Worker::spawn(store, storage, config.engines.clone(), worker_config);
    wait_for_signal().await;
    tracing::info!("shutting down: running jobs go back to the queue");
    worker.stop().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Feeds the job-duration histogram: every write wakes this; ended jobs are observed once.
async fn observe_job_ends(state: SharedState) {
    let mut changes = state.store.subscribe();
    loop {
        let id = match changes.recv().await {
            Ok(id) => id,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Ok(Some(job)) = crate::http::with_store(&state, move |s| s.get(&id)).await else {
            continue;
        };
        if let (true, Some(start), Some(end)) = (
            job.status.is_terminal(),
            job.started_at_ms,
            job.finished_at_ms,
        ) {
            let seconds = (end - start).max(0) as f64 / 1000.0;
            state.metrics.observe_job_end(&job.id, job.status, seconds);
        }
    }
}
