//! The bare axum handler, the REST baseline: two routes returning static bodies of the
//! service's sizes. In the load test's own process (beside its clients, as the target
//! was first measured) and in a process of its own, as the service runs: this benchmark
//! started again with [`CHILD_ENV`] naming a directory holding the bodies, where the
//! child writes the port it listens on.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Set in the child: the directory with `match`, `leaderboard` and, once listening, `port`.
pub const CHILD_ENV: &str = "LOAD_TEST_BARE_HTTP_DIR";

/// `/match` and `/leaderboard`, each returning its body.
pub fn router(match_body: Bytes, leaderboard_body: Bytes) -> axum::Router {
    axum::Router::new()
        .route(
            "/match",
            axum::routing::get(move || async move { match_body }),
        )
        .route(
            "/leaderboard",
            axum::routing::get(move || async move { leaderboard_body }),
        )
}

/// The child's life: serve the bodies in `dir` until killed.
pub async fn serve_child(dir: &Path) -> anyhow::Result<()> {
    let bodies = (
        Bytes::from(std::fs::read(dir.join("match"))?),
        Bytes::from(std::fs::read(dir.join("leaderboard"))?),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    // Written whole, then renamed: the parent never reads half a port.
    std::fs::write(dir.join("port.tmp"), port.to_string())?;
    std::fs::rename(dir.join("port.tmp"), dir.join("port"))?;
    axum::serve(listener, router(bodies.0, bodies.1)).await?;
    Ok(())
}

/// The bare handler in a process of its own; killed on drop.
pub struct Child {
    process: std::process::Child,
    /// The bodies and the port file; removed on drop.
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Child {
    /// Starts this benchmark's binary again as the bare handler serving these bodies.
    pub fn start(match_body: &[u8], leaderboard_body: &[u8]) -> anyhow::Result<Child> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("match"), match_body)?;
        std::fs::write(dir.path().join("leaderboard"), leaderboard_body)?;
        let process = Command::new(std::env::current_exe()?)
            .env(CHILD_ENV, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let mut child = Child {
            process,
            url: String::new(),
            dir,
        };
        let port_file: PathBuf = child.dir.path().join("port");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(port) = std::fs::read_to_string(&port_file) {
                child.url = format!("http://127.0.0.1:{}", port.trim());
                return Ok(child);
            }
            if let Some(status) = child.process.try_wait()? {
                anyhow::bail!("the bare HTTP child exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("the bare HTTP child did not listen within 10 s")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
