//! [`TempS3`]: `s3s-fs` serving a temp directory as S3 on 127.0.0.1, with one fixed access key,
//! so clients sign every request for real (an unsigned request is refused).
//!
//! The server runs on its own thread and Tokio runtime: it keeps answering while a test's own
//! runtime is blocked or gone, and child processes (the real `gallop` binary) reach it over TCP
//! with the variables from [`TempS3::env`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::sync::oneshot;

/// A throwaway S3-compatible server; stops and deletes its data when dropped.
pub struct TempS3 {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TempS3 {
    pub const ACCESS_KEY: &'static str = "gallop-test-access-key";
    pub const SECRET_KEY: &'static str = "gallop-test-secret-key";
    pub const REGION: &'static str = "us-east-1";
    /// The bucket made at start.
    pub const BUCKET: &'static str = "gallop-test";

    /// Starts the server with the empty bucket [`TempS3::BUCKET`]. Panics if it cannot (a test
    /// helper: the panic names what failed).
    pub fn start() -> TempS3 {
        let dir = tempfile::tempdir().expect("temp dir for the S3 server");
        let (addr, stop, thread) = serve(dir.path()).expect("starting the S3 server");
        let s3 = TempS3 {
            dir,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        };
        s3.create_bucket(TempS3::BUCKET);
        s3
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `s3://gallop-test/{prefix}` (the prefix may be empty).
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", TempS3::BUCKET)
    }

    /// What a client (this process or a child) needs to reach the server: AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION and AWS_ENDPOINT_URL.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", TempS3::ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", TempS3::SECRET_KEY.to_string()),
            ("AWS_REGION", TempS3::REGION.to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Where the server keeps object `key` of `bucket` on disk (to look behind the API).
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.dir.path().join(bucket).join(key)
    }

    /// Makes another empty bucket (a directory of the server's root).
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.dir.path().join(name)).expect("bucket directory");
    }
}

impl Drop for TempS3 {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `root` (one directory per bucket) on a free loopback port from a thread of its own.
fn serve(root: &Path) -> std::io::Result<(SocketAddr, oneshot::Sender<()>, JoinHandle<()>)> {
    let fs = s3s_fs::FileSystem::new(root)
        .map_err(|e| std::io::Error::other(format!("s3s-fs on {}: {e:?}", root.display())))?;
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(
        TempS3::ACCESS_KEY,
        TempS3::SECRET_KEY,
    ));
    let service = builder.build();

    // Bound here, before the thread starts: the port is known and connections made before
    // the accept loop runs wait in the backlog.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("temp-s3".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("S3 server runtime");
            runtime.block_on(accept_loop(listener, service, stopped));
        })?;
    Ok((addr, stop, thread))
}

async fn accept_loop(
    listener: std::net::TcpListener,
    service: S3Service,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("S3 listener");
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                // Out of descriptors and the like: the next accept may pass.
                Err(_) => continue,
            },
            _ = &mut stopped => return,
        };
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
