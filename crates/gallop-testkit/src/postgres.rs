//! A PostgreSQL cluster for tests, from the distribution's server binaries.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// How long a new cluster may take to accept connections (a loaded 2-core machine included).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Ports tried before giving up (another process may take the free port before the server does).
const PORT_TRIES: usize = 5;

/// A running PostgreSQL cluster in a temp dir, listening on 127.0.0.1 only, trusting every local
/// connection. Dropping it stops the server at once (`pg_ctl stop -m immediate`) and removes the
/// dir. The server also dies with the test process if that is killed.
///
/// ```no_run
/// let pg = gallop_testkit::TempPostgres::shared();
/// let url = pg.fresh_database(); // postgres://postgres@127.0.0.1:PORT/t_1
/// ```
pub struct TempPostgres {
    bins: PathBuf,
    /// Removed on drop, after the server stopped.
    dir: tempfile::TempDir,
    port: u16,
    /// Who runs the server: `postgres` when we are root (the server refuses to run as root).
    user: Option<(u32, u32)>,
    server: Mutex<Option<Child>>,
    databases: AtomicU64,
}

impl TempPostgres {
    /// One cluster for every test of this test binary, started on first use and stopped when the
    /// process exits. Tests keep apart with [`fresh_database`](Self::fresh_database).
    pub fn shared() -> &'static TempPostgres {
        static SHARED: OnceLock<TempPostgres> = OnceLock::new();
        SHARED.get_or_init(|| {
            extern "C" fn stop_shared() {
                if let Some(pg) = SHARED.get() {
                    pg.stop();
                    let _ = std::fs::remove_dir_all(pg.dir.path());
                }
            }
            // Statics are never dropped: stop the server when the test harness exits.
            unsafe { libc::atexit(stop_shared) };
            TempPostgres::start()
        })
    }

    /// A new cluster of its own (initdb takes a second or two: prefer [`shared`](Self::shared)).
    /// Panics with the reason when the binaries are missing or the server does not start.
    pub fn start() -> TempPostgres {
        let bins = find_bins();
        let user = server_user();
        let dir = tempfile::Builder::new()
            .prefix("gallop-pg-")
            .tempdir()
            .expect("temp dir for PostgreSQL");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the PostgreSQL temp dir to the postgres user");
        }
        let mut pg = TempPostgres {
            bins,
            dir,
            port: 0,
            user,
            server: Mutex::new(None),
            databases: AtomicU64::new(0),
        };
        pg.initdb();
        let mut last_error = String::new();
        for _ in 0..PORT_TRIES {
            pg.port = free_port();
            match pg.run_server() {
                Ok(()) => return pg,
                Err(e) => last_error = e,
            }
        }
        panic!("PostgreSQL did not start on any of {PORT_TRIES} ports: {last_error}");
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of the cluster's `postgres` database (the superuser `postgres`, no password).
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// Creates a new empty database and returns its URL: one per test keeps tests apart.
    pub fn fresh_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!("t_{n}");
        let url = self.url();
        // The blocking client runs its own runtime: keep it off any runtime the test runs in.
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut admin = ::postgres::Client::connect(&url, ::postgres::NoTls)
                    .unwrap_or_else(|e| panic!("connect to the test cluster at {url}: {e}"));
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
            })
            .join()
            .expect("create the test database")
        });
        self.url_of(&name)
    }

    /// Stops the server at once, as a crash would (the data stays): for tests of "database
    /// down". [`restart`](Self::restart) brings it back on the same port.
    pub fn stop(&self) {
        let mut server = self.server.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut child) = server.take() {
            // SIGQUIT is what `pg_ctl stop -m immediate` sends: no checkpoint, no waiting for clients.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGQUIT) };
            let _ = child.wait();
        }
    }

    /// Starts the stopped server again on the same port.
    pub fn restart(&self) {
        self.stop();
        self.run_server()
            .unwrap_or_else(|e| panic!("PostgreSQL did not restart on port {}: {e}", self.port));
    }

    fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bins.join(program));
        // The postgres user may not enter the caller's working dir.
        cmd.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn initdb(&self) {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.bins.join("initdb").display()));
        assert!(
            out.status.success(),
            "initdb failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs the server as a child of ours and waits until it accepts connections.
    fn run_server(&self) -> Result<(), String> {
        let log = File::create(self.log_path()).map_err(|e| format!("server log: {e}"))?;
        if let Some((uid, gid)) = self.user {
            let _ = std::os::unix::fs::chown(self.log_path(), Some(uid), Some(gid));
        }
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path())
            // Speed over durability against an OS crash, which never comes: the cluster is
            // thrown away. Commits stay synchronous (written to the WAL before they are
            // acknowledged): `stop` is a server crash, and with `synchronous_commit=off` the
            // commits of the last few hundred ms before it vanished at `restart`.
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let mut child = spawn_tied_to_process(cmd).map_err(|e| format!("spawn postgres: {e}"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("postgres exited ({status}): {}", self.log_tail()));
            }
            if self.accepts_connections() {
                *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGQUIT) };
                let _ = child.wait();
                return Err(format!(
                    "no connection within {READY_TIMEOUT:?}: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn accepts_connections(&self) -> bool {
        let url = self.url();
        std::thread::scope(|s| {
            s.spawn(|| ::postgres::Client::connect(&url, ::postgres::NoTls).is_ok())
                .join()
                .unwrap_or(false)
        })
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory holding `initdb` and `postgres`: the newest `/usr/lib/postgresql/*/bin`
/// (Debian and Ubuntu keep them off PATH), else PATH.
fn find_bins() -> PathBuf {
    let has_all = |dir: &Path| ["initdb", "postgres"].iter().all(|b| dir.join(b).is_file());
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_all(bin))
        .collect();
    versioned.sort();
    if let Some((_, bin)) = versioned.pop() {
        return bin;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).find(|dir| has_all(dir)))
        .unwrap_or_default();
    on_path.unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, postgres) not found under /usr/lib/postgresql/*/bin \
             or on PATH: install the distribution's `postgresql` package (apt-get install postgresql)"
        )
    })
}

/// The server refuses to run as root: then it runs as the `postgres` user (made by the package).
fn server_user() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = CString::new("postgres").expect("no NUL");
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        panic!(
            "running as root, PostgreSQL needs a `postgres` user to run as: install the \
             distribution's `postgresql` package (apt-get install postgresql), which creates it"
        );
    }
    let pw = unsafe { &*pw };
    Some((pw.pw_uid, pw.pw_gid))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Spawns `cmd` with the kernel told to kill it when its parent dies, so a test process killed
/// mid-run leaves no server behind. The parent that counts is the spawning *thread*, so every
/// spawn happens on one thread that lives as long as the process.
fn spawn_tied_to_process(mut cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("temp-postgres-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    unsafe {
        cmd.pre_exec(|| {
            // SIGQUIT: the server's immediate shutdown.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply))
        .map_err(|_| io::Error::other("spawner thread gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("spawner thread gone"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `stop` is a crash, not a data loss: a commit acknowledged just before it is there after
    /// `restart`, as it would be on a production server (whose commits are synchronous).
    #[test]
    fn a_commit_acknowledged_before_stop_survives_restart() {
        let pg = TempPostgres::start();
        let url = pg.fresh_database();
        let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        db.batch_execute("CREATE TABLE t (n INT)").unwrap();
        std::thread::sleep(Duration::from_secs(1));
        db.execute("INSERT INTO t VALUES (1)", &[]).unwrap();
        pg.stop();
        drop(db);
        pg.restart();
        let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        let rows: i64 = db.query_one("SELECT count(*) FROM t", &[]).unwrap().get(0);
        assert_eq!(rows, 1, "the committed row was lost in the crash");
    }
}
