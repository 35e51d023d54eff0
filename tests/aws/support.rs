//! The harness of the AWS adapter tests:
//!
//! - [`Moto`]: moto's server, started by the tests themselves on a free loopback port
//!   (one per test binary, shared through [`moto()`]; tests use unique names), with SDK
//!   config pointed at it and helpers that create FIFO queues, topics and the DynamoDB
//!   tables (from [`crate::schema`], the definitions the template is checked against);
//! - (the local stack, whose `@connections` endpoint answers as API Gateway does, for
//!   the pusher, which moto cannot test: `bandsync_testkit::stack`, see pusher.rs);
//! - [`serve`]: a throwaway HTTP server on loopback for answers neither can give on
//!   demand (throttling, refused batch entries).

#![allow(dead_code)]

use crate::schema;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long moto may take to start answering.
const MOTO_START: Duration = Duration::from_secs(60);
pub const REGION: &str = "us-east-1";

/// An SDK config for an emulator at `endpoint`: fixed region and test credentials, and
/// the adapters' own HTTP client (`bandsync::adapters::aws::http_client()`, rustls), which
/// speaks plain `http://` as well: every test here goes through it.
pub fn sdk_config(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "tests",
        )))
        .endpoint_url(endpoint)
        .http_client(bandsync::adapters::aws::http_client())
        .build()
}

/// A name no other test of this run uses (`prefix-<pid>-<n>`).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The moto server every test of this binary shares, started on first use.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(Moto::start)
}

/// A moto server on a free loopback port, killed on drop.
///
/// It runs under a tiny `sh` watchdog that holds a pipe from this process: when the
/// pipe closes (the `Moto` is dropped, or the test process ends in any way, even killed)
/// the watchdog kills moto (SIGKILL: moto keeps nothing worth flushing, and its SIGTERM
/// handler can take a minute to stop a busy server). That is what stops the shared
/// instance, which lives in a static and so is never dropped.
pub struct Moto {
    endpoint: String,
    log: PathBuf,
    watchdog: Child,
    lifeline: Option<ChildStdin>,
}

/// The `moto_server` to run: `$BANDSYNC_MOTO_SERVER`, else `moto_server` on PATH.
fn moto_binary() -> PathBuf {
    const HOW: &str = "run ./infra/test.sh (it installs moto into a virtualenv with \
                       infra/moto.sh), or set BANDSYNC_MOTO_SERVER=$(infra/moto.sh)";
    if let Some(path) = std::env::var_os("BANDSYNC_MOTO_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "BANDSYNC_MOTO_SERVER={} does not exist; {HOW}",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("moto_server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("the AWS adapter tests need moto's server, and there is no BANDSYNC_MOTO_SERVER and no moto_server on PATH: {HOW}")
        })
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Does an HTTP server that says it is moto answer on `port`?
fn answers_as_moto(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = Vec::new();
    let _ = s.take(4096).read_to_end(&mut head);
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    // moto's `Server` header: "Werkzeug/... Python/..., amazon.com".
    head.starts_with("http/1.") && head.contains("amazon.com")
}

impl Moto {
    /// Start moto on a free loopback port and wait until it answers. Panics (never
    /// skips) when moto is missing or does not come up.
    pub fn start() -> Moto {
        let binary = moto_binary();
        let mut last = String::new();
        // A port found free can be taken before moto binds it: try a few.
        for _ in 0..3 {
            let port = free_port();
            let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("moto-{port}.log"));
            let log_file = std::fs::File::create(&log).expect("create moto's log file");
            // fd 3 keeps the pipe from us: background jobs of a non-interactive shell get
            // /dev/null as stdin, an explicit redirection gives the watchdog the pipe.
            let mut watchdog = Command::new("sh")
                .arg("-c")
                .arg(
                    r#"exec 3<&0
"$0" -H 127.0.0.1 -p "$1" </dev/null &
pid=$!
{ read -r _ <&3; kill -9 "$pid" 2>/dev/null; } &
wait "$pid""#,
                )
                .arg(&binary)
                .arg(port.to_string())
                .stdin(Stdio::piped())
                .stdout(log_file.try_clone().expect("log fd"))
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let lifeline = watchdog.stdin.take();
            let deadline = Instant::now() + MOTO_START;
            loop {
                if let Ok(Some(status)) = watchdog.try_wait() {
                    last = format!(
                        "{} exited with {status} on port {port}:\n{}",
                        binary.display(),
                        tail(&log)
                    );
                    break;
                }
                if answers_as_moto(port) {
                    return Moto {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        log,
                        watchdog,
                        lifeline,
                    };
                }
                if Instant::now() > deadline {
                    drop(lifeline);
                    let _ = watchdog.kill();
                    let _ = watchdog.wait();
                    panic!(
                        "moto ({}) did not answer on port {port} within {MOTO_START:?}:\n{}",
                        binary.display(),
                        tail(&log)
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("moto did not start: {last}");
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// moto's own output (requests, tracebacks), for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    pub fn sdk_config(&self) -> SdkConfig {
        sdk_config(&self.endpoint)
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config())
    }

    pub fn sns(&self) -> aws_sdk_sns::Client {
        aws_sdk_sns::Client::new(&self.sdk_config())
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config())
    }

    /// A FIFO queue as the template declares them (explicit dedup ids, no content-based
    /// deduplication); `.fifo` is appended to `name` when missing. Returns its URL.
    pub async fn create_fifo_queue(&self, name: &str) -> String {
        let name = if name.ends_with(".fifo") {
            name.to_owned()
        } else {
            format!("{name}.fifo")
        };
        self.new_queue(&name, true).await
    }

    /// A standard queue (for SNS subscriptions). Returns its URL.
    pub async fn create_queue(&self, name: &str) -> String {
        self.new_queue(name, false).await
    }

    async fn new_queue(&self, name: &str, fifo: bool) -> String {
        let mut request = self.sqs().create_queue().queue_name(name);
        if fifo {
            request = request
                .attributes(QueueAttributeName::FifoQueue, "true")
                .attributes(QueueAttributeName::ContentBasedDeduplication, "false");
        }
        let out = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateQueue {name}: {}", err(e)));
        out.queue_url()
            .expect("CreateQueue returns the URL")
            .to_owned()
    }

    pub async fn queue_arn(&self, queue_url: &str) -> String {
        let out = self
            .sqs()
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetQueueAttributes {queue_url}: {}", err(e)));
        out.attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .expect("QueueArn")
            .clone()
    }

    /// An SNS topic. Returns its ARN.
    pub async fn create_topic(&self, name: &str) -> String {
        let out = self
            .sns()
            .create_topic()
            .name(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateTopic {name}: {}", err(e)));
        out.topic_arn()
            .expect("CreateTopic returns the ARN")
            .to_owned()
    }

    /// Subscribe a queue to a topic (SNS's JSON envelope, not raw delivery).
    pub async fn subscribe_queue(&self, topic_arn: &str, queue_url: &str) {
        let queue_arn = self.queue_arn(queue_url).await;
        self.sns()
            .subscribe()
            .topic_arn(topic_arn)
            .protocol("sqs")
            .endpoint(&queue_arn)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Subscribe {queue_arn} to {topic_arn}: {}", err(e)));
    }

    /// The two tables of template.yaml, from [`schema`]: the key schema, on-demand
    /// billing, TTL on [`schema::TTL_ATTRIBUTE`]. Waits until both are ACTIVE.
    pub async fn create_tables(&self, sync_table: &str, connections_table: &str) {
        let ddb = self.dynamodb();
        for table in [sync_table, connections_table] {
            let mut create = ddb
                .create_table()
                .table_name(table)
                .billing_mode(BillingMode::from(schema::BILLING_MODE));
            for k in schema::KEY_SCHEMA {
                create = create
                    .attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name(k.attribute_name)
                            .attribute_type(ScalarAttributeType::from(k.attribute_type))
                            .build()
                            .expect("attribute definition"),
                    )
                    .key_schema(
                        KeySchemaElement::builder()
                            .attribute_name(k.attribute_name)
                            .key_type(KeyType::from(k.key_type))
                            .build()
                            .expect("key schema element"),
                    );
            }
            create
                .send()
                .await
                .unwrap_or_else(|e| panic!("CreateTable {table}: {}", err(e)));
            ddb.update_time_to_live()
                .table_name(table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(schema::TTL_ATTRIBUTE)
                        .enabled(true)
                        .build()
                        .expect("ttl specification"),
                )
                .send()
                .await
                .unwrap_or_else(|e| panic!("UpdateTimeToLive {table}: {}", err(e)));
            let deadline = Instant::now() + WAIT;
            loop {
                let out = ddb
                    .describe_table()
                    .table_name(table)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("DescribeTable {table}: {}", err(e)));
                let status = out.table().and_then(|t| t.table_status()).cloned();
                if status == Some(TableStatus::Active) {
                    break;
                }
                assert!(Instant::now() < deadline, "{table} is still {status:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Closing the pipe makes the watchdog kill moto and exit.
        drop(self.lifeline.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.watchdog.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

/// An SDK error with its whole chain (service code and message included).
pub fn err(e: impl std::error::Error) -> String {
    aws_sdk_sqs::error::DisplayErrorContext(e).to_string()
}

/// Receive everything a queue holds right now, deleting as it goes (a FIFO group stays
/// locked while its received messages are in flight), in the order SQS hands them out,
/// with all system attributes. Stops at the first empty receive after `expect` messages,
/// or at [`WAIT`].
pub async fn receive_all(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    expect: usize,
) -> Vec<Message> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let out = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .wait_time_seconds(if got.len() < expect { 1 } else { 0 })
            .send()
            .await
            .unwrap_or_else(|e| panic!("ReceiveMessage {queue_url}: {}", err(e)));
        let batch = out.messages().to_vec();
        if batch.is_empty() && (got.len() >= expect || Instant::now() > deadline) {
            return got;
        }
        for m in &batch {
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(m.receipt_handle().expect("receipt handle"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("DeleteMessage {queue_url}: {}", err(e)));
        }
        got.extend(batch);
    }
}

/// A system attribute of a received message.
pub fn attribute(m: &Message, name: MessageSystemAttributeName) -> Option<&str> {
    m.attributes()
        .and_then(|a| a.get(&name))
        .map(String::as_str)
}

/// Serve `router` on a free loopback port for the rest of the test; returns its
/// `http://127.0.0.1:<port>`.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("stub server");
    });
    format!("http://{addr}")
}

#[test]
fn a_dropped_moto_stops_answering() {
    // GIVEN a moto of its own (not the shared one), answering on its port
    let moto = Moto::start();
    let port: u16 = moto
        .endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    assert!(answers_as_moto(port));

    // WHEN it is dropped
    drop(moto);

    // THEN nothing answers on its port any more
    assert!(
        TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            Duration::from_millis(500)
        )
        .is_err(),
        "moto still listens on {port}"
    );
}

/// The push service on fresh DynamoDB tables on moto, with ringo's registered phone
/// (`ringo-phone`, band `demo`) on connection `conn`.
pub struct MotoPush {
    pub ddb: aws_sdk_dynamodb::Client,
    pub sync_table: String,
    pub store: std::sync::Arc<bandsync::adapters::aws::dynamo::DynamoStore>,
    pub push: bandsync::entities::push::PushService,
    pub conn: bandsync::model::Connection,
}

impl MotoPush {
    pub async fn new(conn: &str) -> Self {
        use bandsync::model::{BandId, Connection, ConnectionId, UserId};
        use std::sync::Arc;
        let moto = moto();
        let (sync_table, connections_table) = (unique("sync"), unique("connections"));
        moto.create_tables(&sync_table, &connections_table).await;
        let ddb = moto.dynamodb();
        let store = Arc::new(bandsync::adapters::aws::dynamo::DynamoStore::new(
            ddb.clone(),
            sync_table.clone(),
            connections_table,
        ));
        let push = bandsync::entities::push::PushService::new(
            store.clone(),
            store.clone(),
            bandsync::publish::Publisher::new(
                store.clone(),
                Arc::new(bandsync_testkit::RecordingQueue::new()),
            ),
            Arc::new(bandsync::ports::SystemClock),
        );
        let now = chrono::Utc::now();
        let conn = Connection {
            id: ConnectionId::parse(conn).unwrap(),
            user: UserId::parse("ringo@example.com").unwrap(),
            bands: vec![BandId::parse("demo").unwrap()],
            connected_at: now,
            expires_at: now + chrono::TimeDelta::hours(2),
            device: None,
        };
        let register = serde_json::from_value(
            serde_json::json!({"device": "ringo-phone", "platform": "ios", "name": "Ringo's phone"}),
        )
        .unwrap();
        push.register(&conn, register).await.unwrap();
        Self {
            ddb,
            sync_table,
            store,
            push,
            conn,
        }
    }

    /// A push of `mutations` from ringo's phone to band demo: the verdicts, as JSON.
    pub async fn send(&self, mutations: Vec<serde_json::Value>) -> serde_json::Value {
        let request = serde_json::from_value(serde_json::json!(
            {"band": "demo", "device": "ringo-phone", "mutations": mutations}
        ))
        .unwrap();
        let results = self.push.push(&self.conn, request, 1024).await;
        serde_json::json!(results.expect("the push is answered with verdicts"))
    }
}
