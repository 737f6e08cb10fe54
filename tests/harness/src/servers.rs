//! Real `nats-server` and `redis-server` processes for tests.
//!
//! Each server binds a free loopback port, keeps its data in its own temporary
//! directory, writes its log there, and is killed (and its directory removed) on drop.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where [`free_port`] looks: from here up to the kernel's ephemeral range.
const PORTS_FROM: u16 = 10_000;

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take), below the
/// kernel's ephemeral range when there is room: `bind(0)` and every outgoing connection
/// take their ports from that range, so a port picked there could be some client's
/// before the server binds it (a 3-node cluster's node once failed to start so).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let below = ephemeral_start();
    if below > PORTS_FROM {
        let span = u32::from(below - PORTS_FROM);
        // Each test process starts at its own point of the range.
        let start = std::process::id().wrapping_mul(7919) % span;
        for _ in 0..span {
            let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
            let port = PORTS_FROM + offset as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

/// The first port of the kernel's ephemeral range (Linux's default where it cannot be
/// read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// The repository root (for the project-local `.tools/` folder).
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Finds a server binary: `$<ENV>`, then `.tools/bin/<name>`, then `PATH`.
fn find_binary(name: &str, env: &str, install: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return path.into();
    }
    let local = repo_root().join(".tools/bin").join(name);
    if local.exists() {
        return local;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found (set {env}, or install it: {install})"))
}

fn wait_until_listening(port: u16, child: &mut Child, log: &Path, name: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{name} exited with {status} before listening on {port}:\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not listen on {port} within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether our redis-server answers on `port` (with a password set, it answers NOAUTH).
fn answers_ping(port: u16, auth: bool) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reply = [0u8; 7];
    let expected: &[u8; 7] = if auth { b"-NOAUTH" } else { b"+PONG\r\n" };
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == expected
}

/// A server process, killed on drop.
#[derive(Default)]
struct Process(Option<Child>);

impl Process {
    /// Sends a signal (`STOP`, `CONT`...) with `kill`.
    fn signal(&self, signal: &str) {
        let Some(child) = &self.0 else { return };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", child.id());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A frozen process must be able to die.
        if let Some(child) = &self.0 {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// A `nats-server` with JetStream (file storage in a temporary directory).
pub struct NatsServer {
    child: Process,
    port: u16,
    dir: TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl NatsServer {
    /// Starts a server on a port it picks itself (no race with other tests).
    pub fn start() -> Self {
        Self::start_with(&[], None)
    }

    /// Starts a server with extra command-line arguments (e.g. `--user`, `--pass`) and,
    /// if given, a configuration file with this text (e.g. a `tls {}` block).
    pub fn start_with(args: &[&str], config: Option<&str>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("match-stats-nats-")
            .tempdir()
            .expect("temp dir");
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if let Some(config) = config {
            let file = dir.path().join("nats.conf");
            std::fs::write(&file, config).expect("write nats.conf");
            args.extend(["-c".to_owned(), file.display().to_string()]);
        }
        let mut server = NatsServer {
            child: Process::default(),
            port: 0,
            dir,
            args,
            env: Vec::new(),
        };
        server.spawn();
        server
    }

    /// The server's temporary directory (for certificates and the like).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        let bin = find_binary("nats-server", "NATS_SERVER_BIN", "make deps");
        let log = self.dir.path().join("nats.log");
        let ports_dir = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).expect("ports dir");
        // First start: -1 lets the server pick a free port and write it to a ports file.
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let mut command = Command::new(bin);
        command.args(["-a", "127.0.0.1", "-p", &port, "-js"]);
        if self.env.is_empty() {
            // (cluster nodes name their store in the configuration)
            command.arg("-sd").arg(self.dir.path().join("jetstream"));
        }
        let mut child = command
            .args(&self.args)
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("-l")
            .arg(&log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let deadline = Instant::now() + START_TIMEOUT;
        let ports_file = ports_dir.join(format!("nats-server_{}.ports", child.id()));
        self.port = loop {
            if let Some(port) = std::fs::read_to_string(&ports_file)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|ports| ports["nats"][0].as_str()?.rsplit(':').next()?.parse().ok())
            {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("nats-server exited with {status} before listening:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        wait_until_listening(self.port, &mut child, &log, "nats-server");
        self.child = Process(Some(child));
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs (for its CPU time in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.0.as_ref().map(Child::id)
    }

    /// Kills the process (like a crash); its stored data stays for [`NatsServer::restart`].
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Kills and starts again on the same port with the same stored data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

/// The users of `nats/cluster/node.conf` and the passwords the harness gives them.
pub const CLUSTER_USERS: [(&str, &str, &str); 3] = [
    ("MATCH_STATS_PASSWORD", "match-stats", "test-service-secret"),
    (
        "GAME_SERVER_PASSWORD",
        "game-server",
        "test-game-server-secret",
    ),
    (
        "DELTA_READER_PASSWORD",
        "delta-reader",
        "test-reader-secret",
    ),
];

/// Three `nats-server`s forming a JetStream cluster on loopback, each configured by the
/// repository's `nats/cluster/node.conf` (with its users: see [`CLUSTER_USERS`]).
pub struct NatsCluster {
    /// The nodes, in order.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts three nodes on free loopback ports (they elect a JetStream leader shortly
    /// after; clients should retry their first JetStream call).
    pub fn start() -> Self {
        Self::start_with(&repo_root().join("nats/cluster/node.conf"))
    }

    /// Same, with another node configuration file (same variables).
    pub fn start_with(config: &Path) -> Self {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let route = |i: usize| format!("nats-route://127.0.0.1:{}", ports[i].1);
        let mut nodes: Vec<NatsServer> = (0..3)
            .map(|i| {
                let dir = tempfile::Builder::new()
                    .prefix("match-stats-nats-cluster-")
                    .tempdir()
                    .expect("temp dir");
                let others: Vec<usize> = (0..3).filter(|&j| j != i).collect();
                let mut env: Vec<(String, String)> = CLUSTER_USERS
                    .iter()
                    .map(|(var, _, password)| (var.to_string(), password.to_string()))
                    .collect();
                env.extend([
                    ("NODE_NAME".to_owned(), format!("n{}", i + 1)),
                    ("CLIENT_PORT".to_owned(), ports[i].0.to_string()),
                    ("CLUSTER_PORT".to_owned(), ports[i].1.to_string()),
                    (
                        "STORE_DIR".to_owned(),
                        dir.path().join("jetstream").display().to_string(),
                    ),
                    ("ROUTE_A".to_owned(), route(others[0])),
                    ("ROUTE_B".to_owned(), route(others[1])),
                ]);
                NatsServer {
                    child: Process::default(),
                    port: ports[i].0,
                    dir,
                    args: vec!["-c".to_owned(), config.display().to_string()],
                    env,
                }
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        NatsCluster { nodes }
    }

    /// Every node's URL, comma-separated (what a client's `NATS_URL` takes).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A `redis-server` without persistence.
pub struct RedisServer {
    child: Process,
    port: u16,
    dir: TempDir,
    args: Vec<String>,
    tls: bool,
}

impl RedisServer {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra arguments (e.g. `--requirepass`).
    pub fn start_with(args: &[&str]) -> Self {
        Self::launch(args, false)
    }

    /// Starts a server that speaks only TLS on its port, with this server certificate
    /// and key; clients must present a certificate signed by `ca`.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Self {
        let files = [cert, key, ca].map(|p| p.display().to_string());
        let args = [
            "--tls-cert-file",
            &files[0],
            "--tls-key-file",
            &files[1],
            "--tls-ca-cert-file",
            &files[2],
            "--tls-auth-clients",
            "yes",
        ];
        Self::launch(&args, true)
    }

    fn launch(args: &[&str], tls: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("match-stats-redis-")
            .tempdir()
            .expect("temp dir");
        let mut server = RedisServer {
            child: Process::default(),
            port: 0,
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            tls,
        };
        server.spawn_on_free_port();
        server
    }

    fn spawn(&mut self) {
        let bin = find_binary(
            "redis-server",
            "REDIS_SERVER_BIN",
            "make deps (or: apt-get install redis-server)",
        );
        let log = self.dir.path().join("redis.log");
        let mut child = Command::new(bin)
            .args(["--bind", "127.0.0.1"])
            .args(if self.tls {
                vec![
                    "--port".to_owned(),
                    "0".to_owned(),
                    "--tls-port".to_owned(),
                    self.port.to_string(),
                ]
            } else {
                vec!["--port".to_owned(), self.port.to_string()]
            })
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .args(&self.args)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        wait_until_listening(self.port, &mut child, &log, "redis-server");
        self.child = Process(Some(child));
    }

    /// Spawns on a free port; if another process took that port first (the server
    /// exits, or something else answers), tries again on another.
    fn spawn_on_free_port(&mut self) {
        for _ in 0..5 {
            self.port = free_port();
            self.spawn();
            std::thread::sleep(Duration::from_millis(30));
            let alive = self
                .child
                .0
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
            if alive
                && (self.tls
                    || answers_ping(self.port, self.args.iter().any(|a| a == "--requirepass")))
            {
                return;
            }
            self.kill();
        }
        panic!("redis-server could not get a free port in 5 tries");
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the process (its data is gone: no persistence).
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Kills and starts again, empty, on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Freezes the process (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.child.signal("STOP");
    }

    /// Resumes a frozen process (SIGCONT).
    pub fn thaw(&self) {
        self.child.signal("CONT");
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};

    use super::*;

    fn first_line(port: u16, send: &[u8]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(send).unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        line
    }

    #[test]
    fn nats_server_speaks_nats_with_jetstream_and_restarts_on_the_same_port() {
        let mut nats = NatsServer::start();
        let info = first_line(nats.port(), b"");
        assert!(
            info.starts_with("INFO ") && info.contains("\"jetstream\":true"),
            "{info}"
        );
        let port = nats.port();
        nats.restart();
        assert_eq!(nats.port(), port);
        assert!(first_line(port, b"").starts_with("INFO "));
        nats.kill();
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "killed means gone"
        );
    }

    #[test]
    fn redis_server_answers_ping_and_is_gone_after_drop() {
        let redis = RedisServer::start();
        let port = redis.port();
        assert_eq!(first_line(port, b"PING\r\n"), "+PONG\r\n");
        drop(redis);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
