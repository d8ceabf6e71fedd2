//! `roost serve`: the HTTP server on the embedded store or PostgreSQL, with graceful shutdown.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT: drained, actors asleep, store synced);
//! 1 for a bad configuration or another failure; 2 when the data folder cannot be used (in use
//! by another process, not accessible, unknown format), with one sentence saying what to do;
//! 3 when the store stopped while serving (a supervisor should restart the process, which
//! recovers every acknowledged write).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use roost::cluster::{Cluster, ClusterConfig};
use roost::kv::{
    Claims, Durability, FjallConfig, FjallStore, KvError, KvStore, PostgresConfig, PostgresStore,
    ShardedStore,
};
use roost::server::{serve, AppState, Auth, ServeExit, ServerConfig};
use roost::{Host, HostConfig, Storage, StorageConfig};

use roost_bench::bytes::parse_bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// fjall in the data folder.
    Embedded,
    /// PostgreSQL at `--postgres-url`, shared by every node pointed at it.
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
    /// Give it several times to spread actors over several databases (shards, placed by the
    /// actor id); every node must be given the same set, and a shard may be added (with every
    /// node stopped) but not removed.
    #[arg(long, env = "ROOST_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Vec<String>,
    /// Most connections to each PostgreSQL shard.
    #[arg(long, env = "ROOST_POSTGRES_CONNECTIONS_MAX", default_value_t = 16)]
    pub postgres_connections_max: usize,
    /// Longest PostgreSQL call (waiting for a connection included); beyond it requests answer
    /// 503 `store_unavailable`.
    #[arg(long, env = "ROOST_POSTGRES_TIMEOUT_MS", default_value_t = 10_000)]
    pub postgres_timeout_ms: u64,
    /// With `--store postgres`: this node's name among the nodes sharing the database
    /// (default: host name and listen port).
    #[arg(long, env = "ROOST_NODE_ID")]
    pub node_id: Option<String>,
    /// With `--store postgres`: the URL other nodes forward requests to
    /// (default: `http://` and the listen address, the host name for an unspecified address).
    #[arg(long, env = "ROOST_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// With `--store postgres`: the node's lease; renewed every third of it. A node that dies
    /// loses its actors to other nodes this long after its last renewal.
    #[arg(long, env = "ROOST_LEASE_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(300..))]
    pub lease_ms: u64,
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
    /// An actor idle this long gives back its cached pages and statements (0: when each
    /// request ends; sooner under memory pressure).
    #[arg(long, env = "ROOST_RELEASE_DELAY_MS", default_value_t = 1_000)]
    pub release_delay_ms: u64,
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
    /// Disk for SQLite's scratch files (sorts, temp tables, VACUUM copies) of all actors at
    /// once, in `<data>/scratch`; beyond it the statement fails with `storage_full`.
    #[arg(long, env = "ROOST_SCRATCH_BYTES_MAX", default_value = "4GiB", value_parser = parse_bytes)]
    pub scratch_bytes_max: u64,
    /// Disk for import and export spools at once, in `<data>/scratch`; beyond it `overloaded`.
    /// At least `--db-bytes-max`; default twice it.
    #[arg(long, env = "ROOST_SPOOL_BYTES_MAX", value_parser = parse_bytes)]
    pub spool_bytes_max: Option<u64>,
    /// Free space kept on the data folder's file system: writes answer 507 `storage_full` below
    /// it, so the store can still flush, compact and recover (capped at a quarter of the file
    /// system).
    #[arg(long, env = "ROOST_DISK_RESERVE", default_value = "256MiB", value_parser = parse_bytes)]
    pub disk_reserve: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take before they are cut.
    #[arg(long, env = "ROOST_DRAIN_TIMEOUT_MS", default_value_t = 30_000)]
    pub drain_timeout_ms: u64,
    /// Hrana WebSocket connections open at once; beyond it the upgrade answers `overloaded`.
    #[arg(long, env = "ROOST_HRANA_WS_SOCKETS_MAX", default_value_t = 1_000)]
    pub hrana_ws_sockets_max: usize,
    /// A Hrana WebSocket with no request for this long is closed (10 s while it holds a
    /// transaction, like an idle Hrana stream).
    #[arg(long, env = "ROOST_HRANA_WS_IDLE_MS", default_value_t = 60_000)]
    pub hrana_ws_idle_ms: u64,
    /// A silent Hrana WebSocket is pinged after this long, and closed when the ping stays
    /// unanswered as long again.
    #[arg(long, env = "ROOST_HRANA_WS_PING_MS", default_value_t = 15_000)]
    pub hrana_ws_ping_ms: u64,
}

/// Why `roost serve` stopped unsuccessfully, with its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self { code: 1, message }
    }
}

impl Failure {
    /// The exit code of a command's outcome, its message printed on failure.
    pub fn exit_code(outcome: Result<(), Failure>) -> ExitCode {
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => {
                eprintln!("error: {}", failure.message);
                ExitCode::from(failure.code)
            }
        }
    }
}

/// Runs `roost serve` and maps its end to an exit code (see the module docs).
pub fn main(args: &ServeArgs) -> ExitCode {
    Failure::exit_code(run(args))
}

/// One sentence for a data folder that cannot be opened: what is wrong, what to do.
pub(crate) fn open_failure(data: &Path, error: KvError) -> Failure {
    let data = data.display();
    let message = match error {
        KvError::InUse => format!(
            "the data folder {data} is in use by another roost process; stop that process first, or start this one with another --data folder"
        ),
        KvError::Inaccessible(why) => format!(
            "the data folder {data} cannot be used ({why}); make it a folder this user can read and write, or pick another --data folder"
        ),
        KvError::UnknownFormat(why) => format!(
            "the data folder {data} holds a store format this roost cannot read ({why}), probably written by a newer version; run that version or a newer one, or pick another --data folder"
        ),
        other => return Failure::from(format!("cannot open {data}: {other}")),
    };
    Failure { code: 2, message }
}

/// The folder, inside the data folder, of scratch files and spools; emptied at start.
fn scratch_dir(data: &std::path::Path) -> PathBuf {
    data.join("scratch")
}

/// Roost's own lines at INFO, dependencies' (the store's recovery and manifest lines) at WARN
/// unless `ROOST_LOG` asks otherwise; colours only on a terminal.
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROOST_LOG")
        .unwrap_or_else(|_| "warn,roost=info,roost_cli=info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
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
        spool_bytes_max: args.spool_bytes_max.unwrap_or(args.db_bytes_max.saturating_mul(2)),
        memory_log_interval_s: args.memory_log_interval_s,
        drain_timeout_ms: args.drain_timeout_ms,
        hrana_ws_sockets_max: args.hrana_ws_sockets_max,
        hrana_ws_idle_ms: args.hrana_ws_idle_ms,
        hrana_ws_ping_ms: args.hrana_ws_ping_ms,
        allocator_stats: Some(crate::alloc::stats),
        heap_profile: Some(crate::alloc::heap_profile),
        auth: auth(args)?,
        ..ServerConfig::default()
    };
    server.validate()?;
    let host = HostConfig {
        memory_budget_bytes: args.memory_budget,
        idle_timeout_ms: args.idle_timeout_ms,
        release_delay_ms: args.release_delay_ms,
        statement_timeout_ms: args.statement_timeout_ms,
        request_buffers_bytes_max: args.request_buffers,
        answer_bytes_max: args.response_bytes_max,
        ..HostConfig::default()
    };
    let defaults = StorageConfig::default();
    let storage = StorageConfig {
        rows_max: args.rows_max,
        db_bytes_max: args.db_bytes_max,
        value_bytes_max: u32::try_from(args.value_bytes_max)
            .map_err(|_| "--value-bytes-max is at most 4GiB")?,
        sql_bytes_max: u32::try_from(args.statement_bytes_max)
            .map_err(|_| "--statement-bytes-max is at most 4GiB")?,
        scratch_dir: Some(scratch_dir(&args.data)),
        limits: roost::vfs::VfsLimits { scratch_bytes_max: args.scratch_bytes_max, ..defaults.limits },
        ..defaults
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
    tracing::info!("shutting down: refusing new requests, finishing in-flight ones");
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

/// The store, and the cluster membership when the store is shared.
type OpenStore = (Arc<dyn KvStore>, Option<Arc<Cluster>>);

/// The host name, for the default node id and advertised URL.
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    match name.trim() {
        "" => "localhost".to_string(),
        name => name.to_string(),
    }
}

fn cluster_config(args: &ServeArgs) -> ClusterConfig {
    let port = args.listen.port();
    let node_id = args.node_id.clone().unwrap_or_else(|| format!("{}:{port}", host_name()));
    let advertise_url = args.advertise_url.clone().unwrap_or_else(|| match args.listen.ip() {
        ip if ip.is_unspecified() => format!("http://{}:{port}", host_name()),
        _ => format!("http://{}", args.listen),
    });
    let forward_timeout_ms = args.statement_timeout_ms.saturating_add(args.lease_ms);
    ClusterConfig { node_id, advertise_url, lease_ms: args.lease_ms, forward_timeout_ms }
}

/// Opens the store `--store` names, outside the server's runtime: store calls block. With
/// PostgreSQL the node also joins the cluster of nodes sharing the database.
fn open_store(args: &ServeArgs) -> Result<OpenStore, Failure> {
    match args.store {
        StoreKind::Embedded => {
            let mut store = FjallConfig::new(&args.data);
            store.durability = args.durability;
            store.cache_bytes_max = args.store_cache_bytes;
            store.disk_reserve_bytes = args.disk_reserve;
            let store = FjallStore::open(store).map_err(|e| open_failure(&args.data, e))?;
            Ok((Arc::new(store), None))
        }
        StoreKind::Postgres => {
            if args.postgres_url.is_empty() {
                return Err(
                    String::from("--store postgres needs --postgres-url (or ROOST_POSTGRES_URL)").into()
                );
            }
            let mut shards = Vec::with_capacity(args.postgres_url.len());
            for (at, url) in args.postgres_url.iter().enumerate() {
                let mut config = PostgresConfig::new(url.clone());
                config.durability = args.durability;
                config.connections_max = args.postgres_connections_max;
                config.call_timeout_ms = args.postgres_timeout_ms;
                let store = PostgresStore::open(config)
                    .map_err(|e| format!("cannot open PostgreSQL store {} of --postgres-url: {e}", at + 1))?;
                shards.push(Arc::new(store));
            }
            let store = ShardedStore::new(shards, roost::vfs::layout::placement)
                .map_err(|e| format!("cannot use these PostgreSQL stores together: {e}"))?;
            let store = Arc::new(store);
            let cluster = Cluster::join(store.clone(), cluster_config(args))
                .map_err(|e| format!("cannot register this node in PostgreSQL: {e}"))?;
            Ok((store, Some(cluster)))
        }
    }
}

fn run(args: &ServeArgs) -> Result<(), Failure> {
    if args.heap_profile {
        restart_with_profiling()?;
    }
    init_logs(args.log_format);
    let (server, host_config, storage_config) = configs(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let (store, cluster) = open_store(args)?;
    let result = runtime.block_on(async {
        let claims = cluster.clone().map(|c| c as Arc<dyn Claims>);
        let storage = Storage::with_claims(store, claims, storage_config).map_err(|e| e.to_string())?;
        let host = Host::new(storage, host_config).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind(server.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", server.listen))?;
        if server.auth.is_open() {
            tracing::warn!("no tokens configured: anyone who can reach {} has full access", server.listen);
        }
        let plan = *host.plan();
        let node = cluster.as_ref().map(|c| c.node_id().to_string());
        tracing::info!(
            listen = %server.listen, store = ?args.store, data = %args.data.display(), memory_budget = plan.budget_bytes,
            awake_max = plan.awake_max, node, "roost is serving"
        );
        let state = AppState::with_cluster(host, server, cluster);
        let exit = serve(listener, state, shutdown_signal()).await.map_err(|e| e.to_string())?;
        match exit {
            ServeExit::Shutdown { requests_cut } => {
                tracing::info!(requests_cut, "all actors asleep; store synced and closed");
                Ok(())
            }
            ServeExit::StoreFailed(why) => Err(Failure {
                code: 3,
                message: format!("the store stopped ({why}); exiting so that a supervisor restarts roost, which recovers every acknowledged write"),
            }),
        }
    });
    // Connections of requests cut at the drain timeout close here; statements still running
    // on blocking threads are not waited for (the store was synced; nothing they do now was
    // acknowledged).
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}
