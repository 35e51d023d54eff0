//! The command line of `bandsync-local`: `serve` (the default) and `token`.

use crate::stack::{LocalStack, StackConfig, token_key};
use anyhow::Context;
use bandsync::model::{BandId, SourceId};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "bandsync-local",
    version,
    about = "The bandsync pipeline on 127.0.0.1: no AWS account, no network"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the local stack (what no subcommand does too).
    Serve,
    /// Print a member token for the local stack (HS256, signed with the data dir's secret).
    Token(TokenArgs),
    /// Follow a channel and print its events, resuming across reconnects (a reference client).
    Listen(ListenArgs),
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// The WebSocket API URL.
    #[arg(long, default_value = "ws://127.0.0.1:8788/local")]
    pub url: String,
    /// The channel to follow.
    #[arg(long, default_value = "band:demo")]
    pub channel: String,
    #[command(flatten)]
    pub token: TokenArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the store, the queues and the token secret live.
    #[arg(
        long,
        env = "BANDSYNC_DATA_DIR",
        default_value = ".bandsync",
        global = true
    )]
    pub data_dir: PathBuf,
    /// The HTTP API (webhooks, /sync/*).
    #[arg(long, env = "BANDSYNC_HTTP_ADDR", default_value = "127.0.0.1:8787")]
    pub http_addr: SocketAddr,
    /// The WebSocket API and its @connections endpoint.
    #[arg(long, env = "BANDSYNC_WS_ADDR", default_value = "127.0.0.1:8788")]
    pub ws_addr: SocketAddr,
    /// The band whose folder is synced.
    #[arg(long, env = "BANDSYNC_BAND", default_value = "demo")]
    pub band: String,
    /// The watched folder (the band's folder source).
    #[arg(long, env = "BANDSYNC_FOLDER", default_value = "bandsync-demo")]
    pub folder: PathBuf,
    /// File extensions that sync (comma-separated); empty for every file.
    #[arg(
        long,
        env = "BANDSYNC_FILE_TYPES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub file_types: Vec<String>,
    /// HS256 secret for member tokens (default: generated into the data dir).
    #[arg(long, env = "BANDSYNC_JWT_SECRET", global = true)]
    pub jwt_secret: Option<String>,
    /// Close idle WebSocket connections after this many seconds (API Gateway: 600).
    #[arg(long, env = "BANDSYNC_IDLE_TIMEOUT_SECS", default_value_t = 600)]
    pub idle_timeout_secs: u64,
    /// Close every WebSocket connection after this many seconds (API Gateway: 7200).
    #[arg(long, env = "BANDSYNC_MAX_CONNECTION_SECS", default_value_t = 7200)]
    pub max_connection_secs: u64,
    /// Allow binding to non-loopback addresses (the @connections endpoint has no auth).
    #[arg(long, env = "BANDSYNC_ALLOW_NON_LOOPBACK")]
    pub allow_non_loopback: bool,
    /// Also run a fake of the Google APIs on this loopback address and sync a Drive
    /// folder from it (no Google account needed); `--google-fake` alone: 127.0.0.1:8789.
    #[arg(long, env = "BANDSYNC_GOOGLE_FAKE", num_args = 0..=1, default_missing_value = "127.0.0.1:8789")]
    pub google_fake: Option<SocketAddr>,
    /// Write CloudWatch EMF metric lines to stdout (off locally by default).
    #[arg(long, env = "BANDSYNC_EMF")]
    pub emf: bool,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The member (`sub`).
    #[arg(long, default_value = "dev")]
    pub user: String,
    /// Bands the member belongs to (repeat or comma-separate).
    #[arg(long = "band", value_delimiter = ',', default_value = "demo")]
    pub bands: Vec<String>,
    /// Lifetime in hours (at most a year).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(i64).range(1..=8760))]
    pub hours: i64,
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("BANDSYNC_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.compact().init();
    }
}

fn mint(key: &bandsync::auth::TokenKey, args: &TokenArgs) -> anyhow::Result<String> {
    for b in &args.bands {
        BandId::parse(b)?;
    }
    bandsync::model::UserId::parse(&args.user)?;
    let bands: Vec<&str> = args.bands.iter().map(String::as_str).collect();
    Ok(key.mint(
        &args.user,
        &bands,
        chrono::Utc::now(),
        chrono::Duration::hours(args.hours),
    ))
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Token(args)) => {
            let key = token_key(&cli.serve.data_dir, cli.serve.jwt_secret.as_deref())?;
            for b in &args.bands {
                BandId::parse(b)?;
            }
            let bands: Vec<&str> = args.bands.iter().map(String::as_str).collect();
            println!(
                "{}",
                key.mint(
                    &args.user,
                    &bands,
                    chrono::Utc::now(),
                    chrono::Duration::hours(args.hours)
                )
            );
            Ok(())
        }
        Some(Command::Listen(args)) => {
            let key = token_key(&cli.serve.data_dir, cli.serve.jwt_secret.as_deref())?;
            let token = mint(&key, &args.token)?;
            crate::listen::listen(&args.url, &token, &args.channel).await
        }
        None | Some(Command::Serve) => serve(cli.serve).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
    bandsync::metrics::set_enabled(args.emf);
    let cwd = std::env::current_dir()?;
    let mut cfg = StackConfig::demo(&cwd);
    cfg.data_dir = args.data_dir;
    cfg.http_addr = args.http_addr;
    cfg.ws_addr = args.ws_addr;
    cfg.band = BandId::parse(&args.band)?;
    cfg.source = SourceId::parse("folder")?;
    cfg.folder = args.folder;
    cfg.file_types = args
        .file_types
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect();
    cfg.jwt_secret = args.jwt_secret;
    cfg.allow_non_loopback = args.allow_non_loopback;
    cfg.limits.idle_timeout = Duration::from_secs(args.idle_timeout_secs);
    cfg.limits.max_duration = Duration::from_secs(args.max_connection_secs);
    cfg.google_fake = args.google_fake;
    let stack = LocalStack::start(cfg)
        .await
        .context("starting the local stack")?;
    let folder = stack
        .config
        .folder
        .canonicalize()
        .unwrap_or(stack.config.folder.clone());
    println!("bandsync local stack is up");
    println!(
        "  HTTP API        {}  (GET {}/sync/health)",
        stack.http_url, stack.http_url
    );
    println!("  WebSocket API   {}?token=<token>", stack.ws_url);
    println!(
        "  @connections    {}/@connections/<id>",
        stack.management_url
    );
    println!(
        "  watched folder  {}  (band {}, source folder)",
        folder.display(),
        stack.config.band
    );
    if let Some(fake) = &stack.google {
        println!(
            "  fake Google     Drive {}  (sources drive, setlist, calendar)",
            fake.base_url()
        );
        println!(
            "  change Drive:   curl -X POST {}/fake/drive/files -d '{{\"name\":\"Autumn Leaves.pdf\",\"content\":\"chart\"}}' -H 'content-type: application/json'",
            stack.http_url
        );
    }
    println!("  data            {}", stack.config.data_dir.display());
    println!(
        "  a token:        {}",
        stack.token("dev", &[stack.config.band.as_str()])
    );
    println!("Ctrl-C stops it.");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("stopping");
    stack.shutdown().await;
    Ok(())
}
