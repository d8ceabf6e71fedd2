//! `roost serve`: the HTTP server on the embedded store or PostgreSQL, with graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use roost::kv::{Durability, FjallConfig, FjallStore, KvStore, PostgresConfig, PostgresStore};
use roost::server::{serve, AppState, Auth, ServerConfig};
use roost::{Host, HostConfig, Storage, StorageConfig};

use super::bytes::parse_bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// fjall in the data folder.
    Embedded,
    /// PostgreSQL at `--postgres-url` (one node for now).
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Arguments of `roost serve`; every flag also reads a `ROOST_*` environment variable.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data folder of the embedded store.
    #[arg(long, env = "ROOST_DATA", default_value = "./roost-data")]
    pub data: PathBuf,
    /// Address to listen on. Without tokens only loopback addresses are allowed.
    #[arg(long, env = "ROOST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The process's memory budget (e.g. 512MiB, 2GiB).
    #[arg(long, env = "ROOST_MEMORY_BUDGET", default_value = "512MiB", value_parser = parse_bytes)]
    pub memory_budget: u64,
    #[arg(long, env = "ROOST_STORE", value_enum, default_value = "embedded")]
    pub store: StoreKind,
    /// PostgreSQL to store actors in with `--store postgres`, e.g.
    /// `postgres://user:password@host:5432/database`; its tables are created on first start.
    #[arg(long, env = "ROOST_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
    /// Most connections to PostgreSQL.
    #[arg(long, env = "ROOST_POSTGRES_CONNECTIONS_MAX", default_value_t = 16)]
    pub postgres_connections_max: usize,
    /// Longest PostgreSQL call (waiting for a connection included); beyond it requests answer
    /// 503 `store_unavailable`.
    #[arg(long, env = "ROOST_POSTGRES_TIMEOUT_MS", default_value_t = 10_000)]
    pub postgres_timeout_ms: u64,
    /// `sync`: a commit is acknowledged once durable; `relaxed`: synced periodically.
    #[arg(long, env = "ROOST_DURABILITY", default_value = "sync")]
    pub durability: Durability,
    /// File of bearer tokens: one per line, `TOKEN` or `TOKEN:ACTOR_ID_PREFIX`.
    #[arg(long, env = "ROOST_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Bearer tokens, comma-separated, each `TOKEN` or `TOKEN:ACTOR_ID_PREFIX`.
    #[arg(long, env = "ROOST_TOKENS", hide_env_values = true)]
    pub tokens: Option<String>,
    /// Token for admin and debug endpoints.
    #[arg(long, env = "ROOST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[arg(long, env = "ROOST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Idle actors sleep after this long.
    #[arg(long, env = "ROOST_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// Largest JSON or Hrana request body.
    #[arg(long, env = "ROOST_BODY_BYTES_MAX", default_value = "8MiB", value_parser = parse_bytes)]
    pub body_bytes_max: u64,
    /// Longest SQL statement.
    #[arg(long, env = "ROOST_STATEMENT_BYTES_MAX", default_value = "1MiB", value_parser = parse_bytes)]
    pub statement_bytes_max: u64,
    /// Most rows in one answer.
    #[arg(long, env = "ROOST_ROWS_MAX", default_value_t = 100_000)]
    pub rows_max: usize,
    /// The budget's pool for request bodies, answers and Hrana stream state; a request that
    /// cannot get its bytes answers `overloaded`.
    #[arg(long, env = "ROOST_REQUEST_BUFFERS", default_value = "32MiB", value_parser = parse_bytes)]
    pub request_buffers: u64,
    /// Most bytes one request's answer may take in that pool (rows plus their encoding);
    /// beyond it `response_too_large`.
    #[arg(long, env = "ROOST_RESPONSE_BYTES_MAX", default_value = "16MiB", value_parser = parse_bytes)]
    pub response_bytes_max: u64,
    /// Largest string or blob value SQL may build or read.
    #[arg(long, env = "ROOST_VALUE_BYTES_MAX", default_value = "32MiB", value_parser = parse_bytes)]
    pub value_bytes_max: u64,
    /// Longest statement run time; longer ones are interrupted and rolled back.
    #[arg(long, env = "ROOST_STATEMENT_TIMEOUT_MS", default_value_t = 30_000)]
    pub statement_timeout_ms: u64,
    /// Largest database of one actor.
    #[arg(long, env = "ROOST_DB_BYTES_MAX", default_value = "10GiB", value_parser = parse_bytes)]
    pub db_bytes_max: u64,
    /// Requests served at once; beyond it `overloaded`.
    #[arg(long, env = "ROOST_REQUESTS_IN_FLIGHT_MAX", default_value_t = 1024)]
    pub requests_in_flight_max: usize,
    /// Sample heap allocations so that /debug/pprof/heap can write profiles (restarts the
    /// process with jemalloc profiling on).
    #[arg(long, env = "ROOST_HEAP_PROFILE")]
    pub heap_profile: bool,
    /// Seconds between memory log lines; 0 turns them off.
    #[arg(long, env = "ROOST_MEMORY_LOG_INTERVAL_S", default_value_t = 60)]
    pub memory_log_interval_s: u64,
    /// Block cache of the embedded store.
    #[arg(long, env = "ROOST_STORE_CACHE_BYTES", default_value = "16MiB", value_parser = parse_bytes)]
    pub store_cache_bytes: u64,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROOST_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn auth(args: &ServeArgs) -> Result<Auth, String> {
    let mut text = args.tokens.clone().unwrap_or_default();
    if let Some(path) = &args.tokens_file {
        let file =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        text = format!("{text}\n{file}");
    }
    let tokens = Auth::parse_tokens(&text)?;
    if args.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
        return Err("the admin token must be at least 16 characters long".into());
    }
    Ok(Auth { tokens, admin: args.admin_token.clone() })
}

fn configs(args: &ServeArgs) -> Result<(ServerConfig, HostConfig, StorageConfig), String> {
    let server = ServerConfig {
        listen: args.listen,
        body_bytes_max: args.body_bytes_max as usize,
        statement_bytes_max: args.statement_bytes_max as usize,
        requests_in_flight_max: args.requests_in_flight_max,
        import_bytes_max: args.db_bytes_max,
        memory_log_interval_s: args.memory_log_interval_s,
        allocator_stats: Some(crate::alloc::stats),
        heap_profile: Some(crate::alloc::heap_profile),
        auth: auth(args)?,
        ..ServerConfig::default()
    };
    server.validate()?;
    let host = HostConfig {
        memory_budget_bytes: args.memory_budget,
        idle_timeout_ms: args.idle_timeout_ms,
        statement_timeout_ms: args.statement_timeout_ms,
        request_buffers_bytes_max: args.request_buffers,
        answer_bytes_max: args.response_bytes_max,
        ..HostConfig::default()
    };
    let storage = StorageConfig {
        rows_max: args.rows_max,
        db_bytes_max: args.db_bytes_max,
        value_bytes_max: u32::try_from(args.value_bytes_max)
            .map_err(|_| "--value-bytes-max is at most 4GiB")?,
        sql_bytes_max: u32::try_from(args.statement_bytes_max)
            .map_err(|_| "--statement-bytes-max is at most 4GiB")?,
        ..StorageConfig::default()
    };
    Ok((server, host, storage))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler can be installed");
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// jemalloc reads `MALLOC_CONF` when the process starts: to profile, start again with it set.
fn restart_with_profiling() -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    if std::env::var("MALLOC_CONF").is_ok_and(|c| c.contains("prof:true")) {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("MALLOC_CONF", crate::alloc::PROFILING_CONF)
        .exec();
    Err(format!("cannot restart with heap profiling: {error}"))
}

/// Opens the store `--store` names, outside the server's runtime: store calls block.
fn open_store(args: &ServeArgs) -> Result<Arc<dyn KvStore>, String> {
    match args.store {
        StoreKind::Embedded => {
            let mut store = FjallConfig::new(&args.data);
            store.durability = args.durability;
            store.cache_bytes_max = args.store_cache_bytes;
            let store =
                FjallStore::open(store).map_err(|e| format!("cannot open {}: {e}", args.data.display()))?;
            Ok(Arc::new(store))
        }
        StoreKind::Postgres => {
            let url = args
                .postgres_url
                .clone()
                .ok_or("--store postgres needs --postgres-url (or ROOST_POSTGRES_URL)")?;
            let mut config = PostgresConfig::new(url);
            config.durability = args.durability;
            config.connections_max = args.postgres_connections_max;
            config.call_timeout_ms = args.postgres_timeout_ms;
            let store =
                PostgresStore::open(config).map_err(|e| format!("cannot open the PostgreSQL store: {e}"))?;
            Ok(Arc::new(store))
        }
    }
}

pub fn run(args: &ServeArgs) -> Result<(), String> {
    if args.heap_profile {
        restart_with_profiling()?;
    }
    init_logs(args.log_format);
    let (server, host_config, storage_config) = configs(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let store = open_store(args)?;
    runtime.block_on(async {
        let storage = Storage::new(store, storage_config).map_err(|e| e.to_string())?;
        let host = Host::new(storage, host_config).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind(server.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", server.listen))?;
        if server.auth.is_open() {
            tracing::warn!("no tokens configured: anyone who can reach {} has full access", server.listen);
        }
        let plan = *host.plan();
        tracing::info!(
            listen = %server.listen, store = ?args.store, data = %args.data.display(), memory_budget = plan.budget_bytes,
            awake_max = plan.awake_max, "roost is serving"
        );
        serve(listener, AppState::new(host, server), shutdown_signal()).await.map_err(|e| e.to_string())?;
        tracing::info!("all actors asleep; store closed");
        Ok(())
    })
}
