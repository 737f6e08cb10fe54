//! Headless Chromium behind `chromedriver` (Debian's `chromium` and `chromium-driver`,
//! installed by `make deps`), started on a free loopback port with a profile in a temp
//! dir, stopped on drop with any browser it started. Tests drive it over WebDriver.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

/// A running `chromedriver`.
pub struct Chromedriver {
    child: Child,
    port: u16,
    profile: TempDir,
    chromium: PathBuf,
}

fn find(env: &str, candidates: &[&str]) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{} not found (looked in {candidates:?}; set {env} to override): run `make deps`, \
                 which installs Debian's chromium and chromium-driver",
                candidates[0]
            )
        })
}

impl Chromedriver {
    /// Starts `chromedriver` (from `CHROMEDRIVER`, else `/usr/bin/chromedriver`) for the
    /// Chromium at `CHROMIUM` (else `/usr/bin/chromium`).
    pub fn start() -> Self {
        let driver = find("CHROMEDRIVER", &["/usr/bin/chromedriver"]);
        let chromium = find(
            "CHROMIUM",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        );
        let port = free_port();
        let profile = tempfile::Builder::new()
            .prefix("match-stats-chromium-")
            .tempdir()
            .expect("temp dir");
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", driver.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver listens on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Chromedriver {
            child,
            port,
            profile,
            chromium,
        }
    }

    /// The WebDriver URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The W3C capabilities of a headless Chromium session (`--no-sandbox`: tests run as
    /// root in containers), `width` x `height` pixels.
    pub fn capabilities(
        &self,
        width: u32,
        height: u32,
    ) -> serde_json::Map<String, serde_json::Value> {
        let options = serde_json::json!({
            "binary": self.chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                format!("--window-size={width},{height}"),
                format!("--user-data-dir={}", self.profile_dir().display()),
            ],
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), "chrome".into());
        capabilities.insert("goog:chromeOptions".into(), options);
        capabilities
    }

    fn profile_dir(&self) -> &Path {
        self.profile.path()
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Browsers it started (a test that failed before closing its session): each
        // carries the unique profile dir on its command line.
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.profile_dir())
            .status();
    }
}
