//! The `match-stats` binary: parses the command line (exit 64 on an invalid setting),
//! builds the runtime, then runs the service or one of the tools.

use clap::{CommandFactory, FromArgMatches};

/// mimalloc: the service allocates many small, short-lived blocks across threads (decoded
/// events, deltas, read-model nodes), where glibc's allocator spent about a third of the
/// CPU in the catch-up profile (BENCHMARKS.md).
#[cfg(not(feature = "heap-profile"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--features heap-profile`: dhat counts every allocation by call site and writes
/// `dhat-heap.json` when the shutdown signal arrives, before anything is torn down, so
/// its "at end" figures are the running service's (BENCHMARKS.md, "Memory"; view it with
/// dhat's `dh_view.html`).
#[cfg(feature = "heap-profile")]
#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

#[cfg(feature = "heap-profile")]
static PROFILER: std::sync::Mutex<Option<dhat::Profiler>> = std::sync::Mutex::new(None);
use std::time::Duration;

use match_stats::app::Abandoned;
use match_stats::cli::{Cli, Command, EXIT_CONFIG, describe_error, effective};
use match_stats::tools::{demo, loadgen, publish, tail};
use match_stats::{App, telemetry};

/// Exit code of a failure.
const EXIT_FAILURE: i32 = 1;
/// Exit code of a shutdown that abandoned work in flight after the grace period
/// (`EX_TEMPFAIL`: NATS redelivers it to the next writer).
const EXIT_ABANDONED: i32 = 75;
/// How long exporting the last spans may take at exit.
const TRACE_FLUSH: Duration = Duration::from_secs(1);
/// How long the runtime's leftover threads may take at exit.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);

fn main() {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (matches, cli)));
    let (matches, mut cli) = match parsed {
        Ok(parsed) => parsed,
        Err(error) if error.use_stderr() => {
            // One clear line naming the variable and the problem, and EX_USAGE.
            eprintln!(
                "match-stats: invalid configuration: {}",
                describe_error(&error)
            );
            std::process::exit(EXIT_CONFIG);
        }
        Err(help_or_version) => help_or_version.exit(),
    };
    if matches!(cli.command, Some(Command::Config)) {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{:#}", effective(&matches));
        return;
    }
    // The hand tools print their own lines: connection notices only when asked for.
    if matches!(
        cli.command,
        Some(Command::Tail(_) | Command::Publish(_) | Command::ErasePlayer { .. })
    ) && matches.value_source("log_level") == Some(clap::parser::ValueSource::DefaultValue)
    {
        cli.config.log_level = "warn".into();
    }
    #[cfg(feature = "heap-profile")]
    PROFILER
        .lock()
        .expect("profiler")
        .replace(dhat::Profiler::new_heap());
    // (tokio's own name for its workers.)
    let runtime = match_stats::runtimes::runtime(cli.config.runtime_workers(), "tokio-rt-worker")
        .expect("the async runtime starts");
    let code = runtime.block_on(run(cli));
    // Nothing left running (a profile in progress, a stuck connection) delays the exit.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    #[cfg(feature = "heap-profile")]
    drop(PROFILER.lock().expect("profiler").take());
    std::process::exit(code);
}

/// `match-stats erase-player <ID>`.
async fn erase_player(config: &match_stats::Config, player_id: &str) -> anyhow::Result<()> {
    use match_stats::history::store;
    let url = config
        .history
        .url()
        .ok_or_else(|| anyhow::anyhow!("DATABASE_URL is not set: there is no history to erase"))?;
    let pool = store::pool(url)?;
    store::migrate(&pool).await?;
    let rows = store::erase_player(&pool, player_id).await?;
    println!("erased {rows} match lines of player {player_id}; they will not be written again");
    Ok(())
}

/// Runs the command; its exit code.
async fn run(cli: Cli) -> i32 {
    let provider = match telemetry::init(
        &cli.config.log_level,
        &cli.config.log_format,
        cli.config.otel_exporter_otlp_endpoint.as_deref(),
        &cli.config.otel_service_name,
    ) {
        Ok(provider) => provider,
        Err(error) => {
            eprintln!("match-stats: invalid configuration: {error}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    let json_logs = cli.config.log_format == "json";
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::DemoFeed(args) => demo::run(&cli.config, args).await,
        Command::Loadgen(args) => loadgen::main(&cli.config, args).await,
        Command::Tail(args) => tail::run(&cli.config, args).await,
        Command::Publish(args) => publish::run(&cli.config, args).await,
        Command::ErasePlayer { player_id } => erase_player(&cli.config, &player_id).await,
        Command::Config => unreachable!("handled above"),
    };
    // Flushing spans to an unreachable collector must not hold the exit.
    let (flushed, flushing) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = flushed.send(provider.shutdown());
    });
    if let Ok(Err(error)) = flushing.recv_timeout(TRACE_FLUSH) {
        tracing::debug!(%error, "trace provider shutdown");
    }
    match result {
        Ok(()) => 0,
        Err(error) => {
            // Once: as a JSON log line where logs are JSON, else as one plain line.
            if json_logs {
                tracing::error!("{error:#}");
            } else {
                eprintln!("match-stats: {error:#}");
            }
            if error.is::<Abandoned>() {
                EXIT_ABANDONED
            } else {
                EXIT_FAILURE
            }
        }
    }
}

async fn serve(config: match_stats::Config) -> anyhow::Result<()> {
    let app = App::build(config).await?;
    let token = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        #[cfg(feature = "heap-profile")]
        drop(PROFILER.lock().expect("profiler").take());
        tracing::info!("shutdown signal received; finishing in-flight work");
        token.cancel();
    });
    app.run_until_stopped().await
}

/// SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
