//! A real PostgreSQL (Debian's `postgresql` package, installed by `make deps`) for
//! tests: `initdb` in a temporary folder, started on a free loopback port with trust
//! authentication, stopped on drop. PostgreSQL refuses to run as root: as root, both run
//! as the package's `postgres` user (`setpriv`, which execs in place, so the process this
//! harness holds is the server itself).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

/// A running PostgreSQL server.
pub struct PostgresServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    bin: PathBuf,
    durable: bool,
}

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL not found in /usr/lib/postgresql/*/bin (set PG_BIN to override): run \
             `make deps`, which installs Debian's postgresql package"
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `program` as the `postgres` user when this is root, run from `/`: the postgres user
/// may not reach the caller's directory (or it may be gone), and initdb and pg_ctl fail
/// when they cannot identify the current directory.
fn as_postgres(program: PathBuf) -> Command {
    let mut command = if is_root() {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(program);
        command
    } else {
        Command::new(program)
    };
    command.current_dir("/");
    command
}

impl PostgresServer {
    /// Initializes a cluster in a temp dir and starts it on a free port, without fsync
    /// (tests: a process crash loses nothing, only a machine crash would).
    pub fn start() -> Self {
        Self::init(false)
    }

    /// The same with PostgreSQL's default durability (fsync, synchronous commit): for
    /// benchmarks.
    pub fn start_durable() -> Self {
        Self::init(true)
    }

    fn init(durable: bool) -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("match-stats-postgres-")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the temp dir to postgres");
        }
        let out = as_postgres(bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PostgresServer {
            child: None,
            port: free_port(),
            dir,
            bin,
            durable,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let fast = [
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ];
        let child = as_postgres(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(if self.durable { &[][..] } else { &fast[..] })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "postgres accepts connections");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (SIGKILL: a crash; the data stays for [`PostgresServer::restart`]).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            // Its backends notice the postmaster is gone and exit.
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.dir.path().join("data/postmaster.pid"));
        self.launch();
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.kill();
        // Backends still holding the folder (a crash mid-query) go with it.
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.dir.path())
            .status();
    }
}
