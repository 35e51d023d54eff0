//! The whole pipeline on 127.0.0.1: the HTTP API, the WebSocket API with its
//! @connections endpoint, the queues and their pollers, the folder watcher, all on the
//! embedded store. `LocalStack::start` is what `bandsync-local` runs and what the
//! end-to-end tests start in-process on free ports.

use crate::gateway::{Gateway, Limits, LocalPusher, Registry, RouteHandler, Routes};
use crate::http_api::{HttpApi, HttpHandler, LocalRoutes};
use crate::pollers::{self, SqsHandler};
use anyhow::Context;
use bandsync::adapters::local::watcher::{self, FolderWatch};
use bandsync::adapters::local::{EmbeddedQueue, EmbeddedStore, QueueConfig};
use bandsync::auth::TokenKey;
use bandsync::google::apis::GoogleApis;
use bandsync::google::endpoints::GoogleEndpoints;
use bandsync::google::sealed::CredentialKey;
use bandsync::model::*;
use bandsync::ports::*;
use bandsync::webhook;
use bandsync::wiring::{self, Ports, Watch};
use futures_util::FutureExt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Everything the local stack can be told. `StackConfig::demo` is the embedded default.
#[derive(Debug, Clone)]
pub struct StackConfig {
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub ws_addr: SocketAddr,
    pub stage: String,
    pub band: BandId,
    pub source: SourceId,
    /// The watched folder of the band's folder source.
    pub folder: PathBuf,
    /// File extensions that sync; empty for every file.
    pub file_types: Vec<String>,
    /// HS256 secret for member tokens; generated into the data dir when absent.
    pub jwt_secret: Option<String>,
    pub limits: Limits,
    pub visibility_timeout: Duration,
    pub max_receive_count: u32,
    pub debounce: Duration,
    /// Periodic reconciliation of every source (push is lossy); None disables it.
    pub reconcile_every: Option<Duration>,
    /// How long the channel log keeps events for `resume`.
    pub retention: Duration,
    /// Start the queue pollers (tests turn them off to leave messages queued).
    pub workers: bool,
    pub pollers_per_queue: usize,
    /// Bind to addresses other than loopback (the @connections endpoint has no auth).
    pub allow_non_loopback: bool,
    /// Run a fake of the Google APIs on this address (port 0: any) and give the band a
    /// Drive source on it; None: no Google sources.
    pub google_fake: Option<SocketAddr>,
    /// Where the Google APIs are when there is no fake; Some only when asked for (a
    /// `--google-*-url` flag): Google sources then sync with their bands' stored
    /// credentials (with `credentials_key` set). None: no Google sources without the fake.
    pub google_endpoints: Option<GoogleEndpoints>,
    /// What bands' Google credentials are sealed under (BANDSYNC_CREDENTIALS_KEY); None:
    /// the operator API answers credential uploads with a clear 503.
    pub credentials_key: Option<CredentialKey>,
    /// The public https URL of this stack's `POST /webhooks/google` (a tunnel's): with
    /// `google_endpoints`, Google's watch channels notify it. None: no watch channels
    /// without the fake (Google pushes only to public https addresses).
    pub webhook_url: Option<String>,
    /// How often the scheduler keeps the watch channels (and reconciles); the first
    /// tick runs at start.
    pub channels_every: Duration,
    /// How long a member whose last device went stays online, waiting for it to come
    /// back, and how often the sweep publishes the `presence.left`s that are due.
    pub presence_debounce: Duration,
    pub presence_sweep_every: Duration,
    /// Events one broadcast delivery may take beyond its message's (0: none; the bench
    /// compares both).
    pub broadcast_coalesce: usize,
}

impl StackConfig {
    /// The demo: data in `<base>/.bandsync`, band `demo` syncing `<base>/bandsync-demo`.
    pub fn demo(base: &Path) -> Self {
        Self {
            data_dir: base.join(".bandsync"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8787)),
            ws_addr: SocketAddr::from(([127, 0, 0, 1], 8788)),
            stage: "local".into(),
            band: BandId::parse("demo").expect("valid band id"),
            source: SourceId::parse("folder").expect("valid source id"),
            folder: base.join("bandsync-demo"),
            file_types: vec![],
            jwt_secret: None,
            limits: Limits::default(),
            visibility_timeout: Duration::from_secs(30),
            max_receive_count: 5,
            debounce: Duration::from_millis(30),
            reconcile_every: Some(Duration::from_secs(300)),
            retention: Duration::from_secs(24 * 3600),
            workers: true,
            pollers_per_queue: 2,
            allow_non_loopback: false,
            google_fake: None,
            google_endpoints: None,
            credentials_key: None,
            webhook_url: None,
            channels_every: Duration::from_secs(60),
            presence_debounce: bandsync::presence::DEFAULT_DEBOUNCE,
            presence_sweep_every: Duration::from_secs(1),
            broadcast_coalesce: bandsync::broadcast::DEFAULT_COALESCE,
        }
    }
}

/// Shortest HS256 secret accepted: an empty or short secret makes tokens forgeable.
pub const MIN_SECRET_BYTES: usize = 32;

/// The secret for member tokens: configured, or kept in the data dir so tokens survive restarts.
pub fn token_key(data_dir: &Path, configured: Option<&str>) -> anyhow::Result<TokenKey> {
    let checked = |secret: &str, from: &str| {
        let secret = secret.trim();
        anyhow::ensure!(
            secret.len() >= MIN_SECRET_BYTES,
            "the token secret from {from} is {} bytes; at least {MIN_SECRET_BYTES} are needed",
            secret.len()
        );
        Ok(TokenKey::new(secret))
    };
    if let Some(secret) = configured {
        return checked(secret, "BANDSYNC_JWT_SECRET / --jwt-secret");
    }
    let path = data_dir.join("jwt-secret");
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    // create_new: two stacks starting at once agree on the first secret written.
    match options.open(&path) {
        Ok(mut file) => {
            use std::io::Write;
            file.write_all(secret.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(TokenKey::new(secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let stored = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            checked(&stored, &path.display().to_string())
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// A running local stack. Drop or `shutdown` it to stop.
pub struct RunningStack {
    pub http_url: String,
    pub ws_url: String,
    /// The endpoint URL for the apigatewaymanagement client (`.../<stage>`).
    pub management_url: String,
    pub tokens: TokenKey,
    pub store: Arc<EmbeddedStore>,
    pub sync_queue: Arc<EmbeddedQueue>,
    pub sync_dlq: Arc<EmbeddedQueue>,
    pub broadcast_queue: Arc<EmbeddedQueue>,
    pub broadcast_dlq: Arc<EmbeddedQueue>,
    pub registry: Registry,
    pub config: StackConfig,
    /// The fake Google APIs, when `google_fake` is set.
    pub google: Option<crate::google::FakeGoogle>,
    servers: Vec<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
    tasks: Vec<JoinHandle<()>>,
    _watch: Option<FolderWatch>,
    /// The data dir's lock, released when the stack is dropped.
    _lock: std::fs::File,
}

impl Drop for RunningStack {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for (_, server) in &self.servers {
            server.abort();
        }
    }
}

impl RunningStack {
    /// Close every socket (1001, as API Gateway does when it goes away), stop serving,
    /// stop the pollers and the watcher.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.registry.close_all();
        for (stop, server) in self.servers.drain(..) {
            let _ = stop.send(());
            if tokio::time::timeout(Duration::from_secs(3), server)
                .await
                .is_err()
            {
                tracing::warn!("server did not stop in time");
            }
        }
    }

    /// The example page, served (with `POST /local/token`) when the HTTP API is on
    /// loopback only: the token route mints for anyone who asks.
    pub fn app_url(&self) -> Option<String> {
        self.config
            .http_addr
            .ip()
            .is_loopback()
            .then(|| format!("{}/app/", self.http_url))
    }

    /// A member token, as `bandsync-local token` prints it.
    pub fn token(&self, user: &str, bands: &[&str]) -> String {
        self.tokens
            .mint(user, bands, chrono::Utc::now(), chrono::Duration::hours(12))
    }
}

struct QueueHealth(Arc<EmbeddedQueue>);

#[async_trait::async_trait]
impl HealthCheck for QueueHealth {
    async fn check(&self) -> PortResult<()> {
        self.0.depth().await.map(|_| ())
    }
}

/// Hold `<data dir>/bandsync.lock` for as long as the stack runs (the OS drops the lock
/// when the process ends, however it ends), or say who holds it.
pub(crate) fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("bandsync.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another bandsync-local is running on the data dir {} (it holds {}); stop it \
             or pass another --data-dir",
            data_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

fn queue_pair(
    store: &EmbeddedStore,
    name: &str,
    cfg: &StackConfig,
    clock: &Arc<dyn Clock>,
) -> (Arc<EmbeddedQueue>, Arc<EmbeddedQueue>) {
    let dlq_name = format!("{name}-dlq");
    let mut qc = QueueConfig::new(name).with_dead_letter(&dlq_name);
    qc.visibility_timeout = cfg.visibility_timeout;
    qc.max_receive_count = cfg.max_receive_count;
    let queue = Arc::new(EmbeddedQueue::new(store.db(), qc, clock.clone()));
    let dlq = Arc::new(EmbeddedQueue::new(
        store.db(),
        QueueConfig::new(dlq_name),
        clock.clone(),
    ));
    (queue, dlq)
}

async fn serve(
    router: axum::Router,
    addr: SocketAddr,
) -> anyhow::Result<(
    SocketAddr,
    (tokio::sync::oneshot::Sender<()>, JoinHandle<()>),
)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
        {
            tracing::error!(error = %e, "server failed");
        }
    });
    Ok((bound, (stop, task)))
}

/// Make sure the band, its folder source and the folder's watch channel exist.
async fn provision(
    store: &EmbeddedStore,
    cfg: &StackConfig,
    folder: &Path,
    channel_id: &str,
    token: &str,
) -> anyhow::Result<()> {
    if store.get_config(&cfg.band).await?.is_none() {
        store
            .put_config(&SyncConfiguration {
                band: cfg.band.clone(),
                name: cfg.band.to_string(),
                file_types: cfg.file_types.clone(),
                google_credentials: None,
                entity_types: vec![],
                strict_entities: false,
                history_days: None,
            })
            .await?;
    }
    let location = folder.to_string_lossy().into_owned();
    let source = match store.get_source(&cfg.band, &cfg.source).await? {
        Some(s) if s.location == location => s,
        _ => Source::new(
            cfg.band.clone(),
            cfg.source.clone(),
            SourceKind::Folder,
            location.clone(),
        ),
    };
    store.put_source(&source).await?;
    let previous = store.get_watch_channel(channel_id).await?;
    store
        .put_watch_channel(&WatchChannel {
            id: channel_id.to_owned(),
            band: cfg.band.clone(),
            source: cfg.source.clone(),
            resource_id: format!("folder:{location}"),
            token_hash: webhook::token_hash(token),
            expires_at: None,
            last_message: previous.as_ref().and_then(|c| c.last_message),
            last_message_at: previous.and_then(|c| c.last_message_at),
            kind: Some(SourceKind::Folder),
            created_at: None,
        })
        .await?;
    Ok(())
}

/// The band's sources on the fakes (cursors cleared); the channels of an earlier run's
/// fakes are forgotten (the new fakes do not have them).
async fn provision_google(
    store: &EmbeddedStore,
    band: &BandId,
    fake: &crate::google::FakeGoogle,
) -> anyhow::Result<()> {
    for source in fake.sources(band) {
        store.put_source(&source).await?;
    }
    for channel in store.list_watch_channels(band).await? {
        if channel.kind.is_some_and(|k| k != SourceKind::Folder) {
            store.delete_watch_channel(&channel).await?;
        }
    }
    Ok(())
}

/// Google's clients without the fake: only when an endpoint was asked for (so that a
/// shell exporting the key does not make the stack call Google), with the bands' stored
/// credentials, as on AWS. None without a key: no Google sources.
fn stored_google(
    cfg: &StackConfig,
    configs: Arc<dyn ConfigStore>,
) -> anyhow::Result<Option<Arc<GoogleApis>>> {
    let Some(endpoints) = &cfg.google_endpoints else {
        return Ok(None);
    };
    let Some(key) = cfg.credentials_key.clone() else {
        tracing::warn!(
            "Google endpoints are configured but BANDSYNC_CREDENTIALS_KEY is not: no Google sources"
        );
        return Ok(None);
    };
    let apis = endpoints
        .stored_credentials(configs, key, bandsync::deployment::Deployment::Local)
        .context("building the Google clients")?;
    Ok(Some(Arc::new(apis)))
}

/// Where Google's watch channels notify, when they can be kept: the fakes push to this
/// stack's own webhook; real Google (or an emulator of it) only to a public https address,
/// so without one the channels are off (said once, at start).
fn watch_address(cfg: &StackConfig, http_addr: SocketAddr) -> Option<String> {
    if cfg.google_fake.is_some() {
        return Some(format!("http://{http_addr}/webhooks/google"));
    }
    match &cfg.webhook_url {
        Some(url) if url.starts_with("https://") => Some(url.clone()),
        _ => {
            tracing::info!(
                "watch channels are off: Google pushes only to a public https address \
                 (--webhook-url); sources sync on the periodic reconcile and on request"
            );
            None
        }
    }
}

pub struct LocalStack;

impl LocalStack {
    pub async fn start(cfg: StackConfig) -> anyhow::Result<RunningStack> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
        std::fs::create_dir_all(&cfg.folder)
            .with_context(|| format!("creating {}", cfg.folder.display()))?;
        let folder = cfg
            .folder
            .canonicalize()
            .context("resolving the watched folder")?;
        let data_dir = cfg
            .data_dir
            .canonicalize()
            .context("resolving the data dir")?;
        // Every write to the database would be a change in the folder: an endless loop.
        anyhow::ensure!(
            !data_dir.starts_with(&folder),
            "the data dir {} is inside the watched folder {}; put it elsewhere",
            data_dir.display(),
            folder.display()
        );
        for addr in [cfg.http_addr, cfg.ws_addr]
            .into_iter()
            .chain(cfg.google_fake)
        {
            // @connections has no auth (as API Gateway's is IAM-signed): loopback only.
            anyhow::ensure!(
                addr.ip().is_loopback() || cfg.allow_non_loopback,
                "{addr} is not a loopback address; the local stack has no authentication on \
                 @connections (pass --allow-non-loopback to bind it anyway)"
            );
        }
        // What follows treats everything the previous run left as dead (its connections,
        // its messages in flight): true only while one process owns the data dir.
        let lock = lock_data_dir(&data_dir)?;
        let tokens = token_key(&cfg.data_dir, cfg.jwt_secret.as_deref())?;
        let store = Arc::new(EmbeddedStore::open(&cfg.data_dir.join("bandsync.db"))?);
        let stale = store.clear_connections()?;
        if stale > 0 {
            tracing::info!(stale, "forgot the connections of the previous run");
        }
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (sync_queue, sync_dlq) = queue_pair(&store, "sync", &cfg, &clock);
        let (broadcast_queue, broadcast_dlq) = queue_pair(&store, "broadcast", &cfg, &clock);
        for queue in [&sync_queue, &broadcast_queue] {
            let released = queue.release_in_flight().await?;
            if released > 0 {
                let queue = &queue.config().name;
                tracing::info!(
                    released,
                    queue,
                    "handed out again what the previous run held"
                );
            }
        }
        let registry = Registry::default();
        let pusher: Arc<dyn Pusher> = Arc::new(LocalPusher {
            registry: registry.clone(),
            max_message: cfg.limits.max_message,
        });

        let (fake, google) = match cfg.google_fake {
            Some(addr) => {
                let fake = crate::google::FakeGoogle::start(addr)
                    .await
                    .with_context(|| format!("starting the fake Google APIs on {addr}"))?;
                provision_google(&store, &cfg.band, &fake).await?;
                let apis = Arc::new(fake.apis()?);
                (Some(fake), Some(apis))
            }
            None => (None, stored_google(&cfg, store.clone())?),
        };
        // The functions, built by the same wiring as their Lambda mains.
        let mut backend = Ports {
            pusher: Some(pusher),
            tokens: Some(tokens.clone()),
            credentials_key: cfg.credentials_key.clone(),
            health_checks: vec![
                ("store".into(), store.clone()),
                (
                    "sync_queue".into(),
                    Arc::new(QueueHealth(sync_queue.clone())),
                ),
                (
                    "broadcast_queue".into(),
                    Arc::new(QueueHealth(broadcast_queue.clone())),
                ),
            ],
            google: google.clone(),
            presence_debounce: cfg.presence_debounce,
            ..Ports::new(
                store.clone(),
                sync_queue.clone(),
                broadcast_queue.clone(),
                clock,
            )
        };
        let worker = Arc::new(wiring::sync_worker(&backend)?);
        let mut broadcaster = wiring::broadcaster(&backend)?;
        broadcaster.coalesce = cfg.broadcast_coalesce;
        let broadcaster = Arc::new(broadcaster);
        let intake = Arc::new(wiring::webhook(&backend)?);
        let api = Arc::new(wiring::api(&backend)?);
        let connect = Arc::new(wiring::ws_connect(&backend)?);
        let disconnect = Arc::new(wiring::ws_disconnect(&backend)?);
        let message = Arc::new(wiring::ws_message(&backend)?);

        let on_connect: RouteHandler = Arc::new(move |r| {
            let h = connect.clone();
            async move { h.handle(r).await }.boxed()
        });
        let on_disconnect: RouteHandler = Arc::new(move |r| {
            let h = disconnect.clone();
            async move { h.handle(r).await }.boxed()
        });
        let on_message: RouteHandler = Arc::new(move |r| {
            let h = message.clone();
            async move { h.handle(r).await }.boxed()
        });
        let gateway = Gateway {
            stage: cfg.stage.clone(),
            routes: Routes::default()
                .route("$connect", on_connect)
                .route("$disconnect", on_disconnect)
                .route("$default", on_message),
            registry: registry.clone(),
            limits: cfg.limits.clone(),
        };
        let webhook_handler: HttpHandler = {
            let h = intake.clone();
            Arc::new(move |r| {
                let h = h.clone();
                async move { h.handle(r).await }.boxed()
            })
        };
        let api_handler: HttpHandler = Arc::new(move |r| {
            let h = api.clone();
            async move { h.handle(r).await }.boxed()
        });
        let mut http_router = HttpApi {
            webhook: webhook_handler,
            api: api_handler,
        }
        .router();
        // The WebSocket API first: the example page is served with its address.
        let (ws_addr, ws_server) = serve(gateway.router(), cfg.ws_addr).await?;
        let ws_url = format!("ws://{ws_addr}/{}", cfg.stage);
        // The fakes' control API and the dev token route have no auth: only ever on loopback.
        if let Some(fake) = fake.as_ref().filter(|_| cfg.http_addr.ip().is_loopback()) {
            http_router = axum::Router::new()
                .nest("/fake", fake.control())
                .merge(http_router);
        }
        if cfg.http_addr.ip().is_loopback() {
            let local = LocalRoutes {
                tokens: tokens.clone(),
                ws_url: ws_url.clone(),
                registry: registry.clone(),
                connections: store.clone(),
            };
            http_router = local.router().merge(http_router);
        }
        let http_router = crate::http_api::with_local_cors(http_router);
        let (http_addr, http_server) = serve(http_router, cfg.http_addr).await?;

        let mut tasks = Vec::new();
        if cfg.workers {
            let on_sync: SqsHandler = Arc::new(move |e| {
                let w = worker.clone();
                async move { w.handle_sqs(e, None).await }.boxed()
            });
            let on_broadcast: SqsHandler = Arc::new(move |e| {
                let b = broadcaster.clone();
                async move { b.handle_sqs(e, None).await }.boxed()
            });
            for _ in 0..cfg.pollers_per_queue.max(1) {
                tasks.push(tokio::spawn(pollers::run(
                    sync_queue.clone(),
                    on_sync.clone(),
                )));
                tasks.push(tokio::spawn(pollers::run(
                    broadcast_queue.clone(),
                    on_broadcast.clone(),
                )));
            }
        }

        // The folder's push channel: a fresh token each start, message numbers that only grow.
        let channel_id = format!("folder-{}-{}", cfg.band, cfg.source);
        let token = uuid::Uuid::new_v4().simple().to_string();
        provision(&store, &cfg, &folder, &channel_id, &token).await?;
        let numbers = Arc::new(AtomicU64::new(
            chrono::Utc::now().timestamp_millis() as u64 * 1000,
        ));
        let notify = {
            let (intake, channel_id, resource_id) = (
                intake.clone(),
                channel_id.clone(),
                format!("folder:{}", folder.to_string_lossy()),
            );
            move |state: &'static str| {
                let (intake, channel_id, resource_id, token) = (
                    intake.clone(),
                    channel_id.clone(),
                    resource_id.clone(),
                    token.clone(),
                );
                let number = numbers.fetch_add(1, Ordering::SeqCst);
                async move {
                    let mut req = aws_lambda_events::apigw::ApiGatewayV2httpRequest::default();
                    req.raw_path = Some("/webhooks/folder".into());
                    req.request_context.http.method = http::Method::POST;
                    for (k, v) in [
                        (webhook::H_CHANNEL_ID, channel_id),
                        (webhook::H_CHANNEL_TOKEN, token),
                        (webhook::H_RESOURCE_ID, resource_id),
                        (webhook::H_RESOURCE_STATE, state.to_owned()),
                        (webhook::H_MESSAGE_NUMBER, number.to_string()),
                    ] {
                        if let Ok(v) = http::HeaderValue::from_str(&v) {
                            req.headers.insert(k, v);
                        }
                    }
                    let resp = intake.handle(req).await;
                    if resp.status_code >= 300 {
                        tracing::error!(status = resp.status_code, "folder notification refused");
                    }
                }
            }
        };
        notify("sync").await;
        let watch = {
            let notify = notify.clone();
            watcher::watch(&folder, cfg.debounce, move || notify("change"))
                .context("watching the folder")?
        };

        // The scheduler: reconcile now (changes made while we were down), then periodically.
        let reconcile = {
            // The watch channels' address is known once the webhook is bound.
            backend.watch = google.as_ref().and_then(|apis| {
                Some(Watch {
                    api: apis.clone(),
                    address: watch_address(&cfg, http_addr)?,
                })
            });
            let mut scheduler = wiring::scheduler(&backend)?;
            scheduler.retention = cfg.retention;
            let mut every = cfg.reconcile_every;
            // The fakes' channels expire quickly (so that renewal is seen locally).
            if cfg.google_fake.is_some() {
                every = Some(every.map_or(cfg.channels_every, |e| e.min(cfg.channels_every)));
            }
            let bands = vec![cfg.band.clone()];
            async move {
                loop {
                    match scheduler.tick(&bands).await {
                        Ok(report) => tracing::debug!(?report, "scheduler tick"),
                        Err(e) => tracing::error!(error = %e, "scheduler tick failed"),
                    }
                    let Some(every) = every else { break };
                    tokio::time::sleep(every).await;
                }
            }
        };
        tasks.push(tokio::spawn(reconcile));

        // Presence: publish the `presence.left`s whose debounce ran out (on AWS the
        // scheduler's tick and every $connect / $disconnect do this).
        let presence = wiring::presence(&backend)?;
        let sweep_every = cfg.presence_sweep_every;
        tasks.push(tokio::spawn(async move {
            loop {
                presence.sweep_quietly().await;
                tokio::time::sleep(sweep_every).await;
            }
        }));

        Ok(RunningStack {
            http_url: format!("http://{http_addr}"),
            ws_url,
            management_url: format!("http://{ws_addr}/{}", cfg.stage),
            tokens,
            store,
            sync_queue,
            sync_dlq,
            broadcast_queue,
            broadcast_dlq,
            registry,
            config: cfg,
            google: fake,
            servers: vec![http_server, ws_server],
            tasks,
            _watch: Some(watch),
            _lock: lock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> Arc<dyn ConfigStore> {
        Arc::new(EmbeddedStore::open(&dir.join("bandsync.db")).unwrap())
    }

    #[test]
    fn google_is_called_only_when_an_endpoint_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StackConfig::demo(dir.path());
        // GIVEN a credentials key (a shell exporting it) but no endpoint flag
        cfg.credentials_key = Some(CredentialKey::generate().unwrap());
        // THEN no Google clients, as before there were endpoint flags
        assert!(stored_google(&cfg, store(dir.path())).unwrap().is_none());
        // GIVEN an endpoint but no key: none either (nothing to open credentials with)
        let endpoints = GoogleEndpoints::default();
        let no_key = StackConfig {
            credentials_key: None,
            google_endpoints: Some(endpoints.clone()),
            ..cfg.clone()
        };
        assert!(stored_google(&no_key, store(dir.path())).unwrap().is_none());
        // GIVEN both: the stored-credentials clients
        cfg.google_endpoints = Some(endpoints);
        assert!(stored_google(&cfg, store(dir.path())).unwrap().is_some());
    }

    #[test]
    fn watch_channels_need_the_fakes_or_a_public_https_webhook() {
        let dir = tempfile::tempdir().unwrap();
        let bound = SocketAddr::from(([127, 0, 0, 1], 8787));
        let mut cfg = StackConfig::demo(dir.path());
        cfg.google_endpoints = Some(GoogleEndpoints::default());
        // GIVEN real endpoints and no webhook URL, or a plain http one: no channels
        assert_eq!(watch_address(&cfg, bound), None);
        cfg.webhook_url = Some("http://tunnel.example/webhooks/google".into());
        assert_eq!(watch_address(&cfg, bound), None);
        // GIVEN a public https URL: the channels notify it
        cfg.webhook_url = Some("https://tunnel.example/webhooks/google".into());
        assert_eq!(
            watch_address(&cfg, bound).as_deref(),
            Some("https://tunnel.example/webhooks/google")
        );
        // GIVEN the fakes: this stack's own webhook, on loopback
        cfg.google_fake = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(
            watch_address(&cfg, bound).as_deref(),
            Some("http://127.0.0.1:8787/webhooks/google")
        );
    }
}
