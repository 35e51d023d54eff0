//! The command line of `bandsync-local`: `serve` (the default), `token` (a member's or,
//! with `--admin`, an operator's), `credentials-key`, `listen` and `rebuild`.

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
    /// Print a member token for the local stack (HS256, signed with the data dir's secret,
    /// or with --jwt-secret for a deployment's JwtSecret); --admin: an operator's token.
    Token(TokenArgs),
    /// Print a new random key for bands' sealed Google credentials (base64 of 32 bytes):
    /// the CredentialsKey parameter / BANDSYNC_CREDENTIALS_KEY.
    CredentialsKey,
    /// Follow a channel and print its events, resuming across reconnects (a reference client).
    Listen(ListenArgs),
    /// Check a band's stored entities against their rebuild from history, on the data
    /// dir of a stopped stack (a running one: POST /sync/bands/<band>/entities/rebuild
    /// with an operator's token). Prints the report; exits non-zero on a mismatch.
    Rebuild(RebuildArgs),
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The band to check.
    #[arg(long)]
    pub band: String,
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
    /// Without --google-fake, any of the `--google-*-url` flags turns on Google sources
    /// with their bands' stored credentials (BANDSYNC_CREDENTIALS_KEY must be set): the
    /// Drive API at this base URL (an emulator or a proxy; default Google's).
    #[arg(long, env = "BANDSYNC_GOOGLE_DRIVE_URL")]
    pub google_drive_url: Option<String>,
    /// The Sheets API's base URL (default Google's).
    #[arg(long, env = "BANDSYNC_GOOGLE_SHEETS_URL")]
    pub google_sheets_url: Option<String>,
    /// The Calendar API's base URL (default Google's).
    #[arg(long, env = "BANDSYNC_GOOGLE_CALENDAR_URL")]
    pub google_calendar_url: Option<String>,
    /// The OAuth2 token endpoint for every band (default: each credentials file's
    /// `token_uri`, Google's unless it says otherwise).
    #[arg(long, env = "BANDSYNC_GOOGLE_TOKEN_URL")]
    pub google_token_url: Option<String>,
    /// The public https URL of this stack's `POST /webhooks/google` (a tunnel to it):
    /// with a `--google-*-url` flag, Google's watch channels notify it; without it there
    /// are no watch channels (Google pushes only to public https addresses).
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// The key bands' Google credentials are sealed under (`credentials-key` prints
    /// one); unset: credential uploads are refused with a 503.
    #[arg(long, env = "BANDSYNC_CREDENTIALS_KEY", hide_env_values = true)]
    pub credentials_key: Option<String>,
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
    /// An operator's token (the `admin` claim, no band): may register bands, sources and
    /// credentials through /sync/bands/...
    #[arg(long, conflicts_with = "bands")]
    pub admin: bool,
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
    let (now, ttl) = (chrono::Utc::now(), chrono::Duration::hours(args.hours));
    Ok(if args.admin {
        key.mint_admin(&args.user, now, ttl)
    } else {
        key.mint(&args.user, &bands, now, ttl)
    })
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Token(args)) => {
            let key = token_key(&cli.serve.data_dir, cli.serve.jwt_secret.as_deref())?;
            println!("{}", mint(&key, &args)?);
            Ok(())
        }
        Some(Command::CredentialsKey) => {
            let key = bandsync::google::sealed::CredentialKey::generate()
                .context("generating a credentials key")?;
            println!("{}", key.to_base64());
            Ok(())
        }
        Some(Command::Listen(args)) => {
            let key = token_key(&cli.serve.data_dir, cli.serve.jwt_secret.as_deref())?;
            let token = mint(&key, &args.token)?;
            crate::listen::listen(&args.url, &token, &args.channel).await
        }
        Some(Command::Rebuild(args)) => {
            let report = rebuild(&cli.serve.data_dir, &args.band).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.matched {
                anyhow::bail!(
                    "{} of {} entities of band {} differ from their rebuild",
                    report.mismatched,
                    report.checked,
                    report.band
                );
            }
            if report.partial > 0 {
                eprintln!(
                    "{} of {} entities matched from their oldest kept version only (the \
                     history retention pruned the versions before it)",
                    report.partial, report.checked
                );
            }
            Ok(())
        }
        None | Some(Command::Serve) => serve(cli.serve).await,
    }
}

/// The rebuild check of `band` on the store of `data_dir`, which no stack may hold: the
/// report is then of a state nothing changes while it is read.
pub async fn rebuild(
    data_dir: &std::path::Path,
    band: &str,
) -> anyhow::Result<bandsync::wire::http::RebuildReport> {
    use bandsync::ports::ConfigStore;
    let band = BandId::parse(band)?;
    let path = data_dir.join("bandsync.db");
    anyhow::ensure!(
        path.exists(),
        "no store at {} (pass the stack's --data-dir)",
        path.display()
    );
    let _lock = crate::stack::lock_data_dir(data_dir).context(
        "a running stack holds the data dir: ask it instead, \
         POST /sync/bands/<band>/entities/rebuild with `bandsync-local token --admin`",
    )?;
    let store = bandsync::adapters::local::EmbeddedStore::open(&path)?;
    let config = store
        .get_config(&band)
        .await?
        .with_context(|| format!("band {band} is not registered in {}", path.display()))?;
    let types =
        bandsync::entities::types::BandTypes::new(config.entity_types, config.strict_entities);
    let engine = bandsync::entities::merge::Engine::new();
    let check = bandsync::entities::rebuild::Rebuild {
        entities: &store,
        log: &store,
        engine: &engine,
    };
    Ok(check
        .check_all(&band, &types, bandsync::entities::rebuild::MAX_PAGE)
        .await?)
}

/// The Google endpoints the flags (or their `BANDSYNC_GOOGLE_*` variables) name; None
/// when none is given (no Google sources without the fake).
fn google_endpoints(
    args: &ServeArgs,
) -> anyhow::Result<Option<bandsync::google::endpoints::GoogleEndpoints>> {
    let given = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
    let (drive, sheets, calendar, token) = (
        given(&args.google_drive_url),
        given(&args.google_sheets_url),
        given(&args.google_calendar_url),
        given(&args.google_token_url),
    );
    if [&drive, &sheets, &calendar, &token]
        .iter()
        .all(|v| v.is_none())
    {
        return Ok(None);
    }
    Ok(Some(
        bandsync::google::endpoints::GoogleEndpoints::from_parts(
            None, drive, sheets, calendar, token,
        )?,
    ))
}

/// The credentials key of `--credentials-key` / BANDSYNC_CREDENTIALS_KEY; blank is unset.
fn credentials_key(
    args: &ServeArgs,
) -> anyhow::Result<Option<bandsync::google::sealed::CredentialKey>> {
    Ok(bandsync::google::sealed::CredentialKey::from_setting(
        args.credentials_key.as_deref(),
    )?)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
    bandsync::transport::metrics::set_enabled(args.emf);
    let cwd = std::env::current_dir()?;
    let mut cfg = StackConfig::demo(&cwd);
    cfg.google_endpoints = google_endpoints(&args)?;
    cfg.credentials_key = credentials_key(&args)?;
    cfg.webhook_url = args.webhook_url.clone();
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
    if let Some(app) = stack.app_url() {
        println!("  example page    {app}");
        println!(
            "  dev tokens      POST {}/local/token  {{\"user\":\"alice\",\"band\":\"{}\"}}",
            stack.http_url, stack.config.band
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn token_args(argv: &[&str]) -> Result<TokenArgs, clap::Error> {
        let cli = Cli::try_parse_from(argv)?;
        match cli.command {
            Some(Command::Token(args)) => Ok(args),
            other => panic!("not the token subcommand: {other:?}"),
        }
    }

    #[test]
    fn token_admin_mints_an_operators_token_with_no_band() {
        let key = bandsync::auth::TokenKey::new("cli-test-secret");
        let now = chrono::Utc::now();
        // GIVEN `token --admin`; WHEN minted THEN it is an operator's, in no band
        let admin = token_args(&["bandsync-local", "token", "--admin", "--user", "ops"]).unwrap();
        let member = key.verify(&mint(&key, &admin).unwrap(), now).unwrap();
        assert!(member.admin);
        assert!(member.bands.is_empty());
        // AND a plain `token` is a member's of the default band
        let plain = token_args(&["bandsync-local", "token"]).unwrap();
        let member = key.verify(&mint(&key, &plain).unwrap(), now).unwrap();
        assert!(!member.admin);
        assert_eq!(member.bands.len(), 1);
        // AND --admin with --band is refused (an operator is not a member)
        assert!(token_args(&["bandsync-local", "token", "--admin", "--band", "x"]).is_err());
    }

    #[test]
    fn rebuild_is_a_subcommand_that_needs_a_band() {
        let cli = Cli::try_parse_from(["bandsync-local", "rebuild", "--band", "demo"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Rebuild(a)) if a.band == "demo"));
        assert!(Cli::try_parse_from(["bandsync-local", "rebuild"]).is_err());
    }

    #[test]
    fn credentials_key_is_a_subcommand() {
        let cli = Cli::try_parse_from(["bandsync-local", "credentials-key"]).unwrap();
        assert!(matches!(cli.command, Some(Command::CredentialsKey)));
    }

    #[test]
    fn google_endpoints_are_flags() {
        // GIVEN no flag: no Google endpoints (no Google sources without the fake)
        let cli = Cli::try_parse_from(["bandsync-local"]).unwrap();
        assert_eq!(google_endpoints(&cli.serve).unwrap(), None);
        // GIVEN one flag: that API there, Google's for the rest
        let cli =
            Cli::try_parse_from(["bandsync-local", "--google-token-url=http://127.0.0.1:9/t"])
                .unwrap();
        let e = google_endpoints(&cli.serve).unwrap().unwrap();
        assert_eq!(
            e.urls,
            bandsync::google::endpoints::GoogleEndpoints::default().urls
        );
        // GIVEN an emulator's URLs: each API and the token endpoint go there
        let cli = Cli::try_parse_from([
            "bandsync-local",
            "--google-drive-url=http://127.0.0.1:9000",
            "--google-sheets-url=http://127.0.0.1:9001",
            "--google-calendar-url=http://127.0.0.1:9002",
            "--google-token-url=http://127.0.0.1:9003/token",
        ])
        .unwrap();
        let e = google_endpoints(&cli.serve).unwrap().unwrap();
        assert_eq!(e.urls.drive, "http://127.0.0.1:9000");
        assert_eq!(e.urls.sheets, "http://127.0.0.1:9001");
        assert_eq!(e.urls.calendar, "http://127.0.0.1:9002");
        assert_eq!(e.token_url.as_deref(), Some("http://127.0.0.1:9003/token"));
        // AND a bad one is refused at start
        let cli = Cli::try_parse_from(["bandsync-local", "--google-drive-url=drive"]).unwrap();
        assert!(google_endpoints(&cli.serve).is_err());
    }
}
