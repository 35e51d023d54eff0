use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use bandsync::model::{BandId, SourceId, SyncJob, Trigger};
use bandsync::model::{ChannelName, WatchChannel};
use bandsync::ports::{SourceStore, WatchChannelStore};
use bandsync::webhook::*;
use bandsync_testkit::*;

const CHANNEL: &str = "01234567-89ab-cdef-0123-456789abcdef";

/// Band `demo` with a watch channel on its source `charts` (token `s3cret-token`,
/// resource `res-42`), as the watcher or Google's watch call registered it.
async fn watched() -> Harness {
    let h = Harness::new();
    let demo = h.add_band("demo").await;
    let dir = std::env::temp_dir().join("bandsync-webhook-test-source");
    std::fs::create_dir_all(&dir).unwrap();
    h.add_source(&demo, "charts", dir.to_str().unwrap()).await;
    h.store
        .put_watch_channel(&WatchChannel {
            id: CHANNEL.into(),
            band: band("demo"),
            source: source_id("charts"),
            resource_id: "res-42".into(),
            token_hash: token_hash("s3cret-token"),
            expires_at: None,
            last_message: None,
            last_message_at: None,
            kind: Some(bandsync::model::SourceKind::Folder),
            created_at: None,
        })
        .await
        .unwrap();
    h
}

/// The dedup id of `demo/charts` at a generation.
fn charts_at(generation: u64) -> String {
    pending_dedup_id(&band("demo"), &source_id("charts"), generation)
}

#[test]
fn dedup_ids_fit_sqs_for_the_longest_ids() {
    // GIVEN the longest band and source ids there can be
    let band_id = BandId::parse(&"b".repeat(64)).unwrap();
    let source = SourceId::parse(&"s".repeat(63)).unwrap();
    // THEN the dedup id is within SQS's 128 characters, and differs by source
    let id = pending_dedup_id(&band_id, &source, u64::MAX);
    assert!(id.len() <= 128, "{} characters", id.len());
    assert_ne!(
        charts_at(0),
        pending_dedup_id(&band("demo"), &source_id("takes"), 0)
    );
}

/// A notification's headers: a valid change (`update`, message 7) with `changes`
/// applied (`None` drops the header).
fn notification(changes: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = [
        (H_CHANNEL_ID, CHANNEL),
        (H_CHANNEL_TOKEN, "s3cret-token"),
        (H_RESOURCE_ID, "res-42"),
        (H_RESOURCE_STATE, "update"),
        (H_MESSAGE_NUMBER, "7"),
        ("x-goog-channel-expiration", "Sun, 01 Mar 2026 13:00:00 GMT"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    for (name, value) in changes {
        headers.retain(|(k, _)| k != name);
        if let Some(v) = value {
            headers.push(((*name).to_owned(), (*v).to_owned()));
        }
    }
    headers
}

/// The notification as API Gateway hands it to the function.
fn request(headers: &[(String, String)]) -> ApiGatewayV2httpRequest {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    http_event("POST", "/webhooks/google", &headers, None)
}

async fn post(h: &Harness, headers: &[(String, String)]) -> ApiGatewayV2httpResponse {
    h.webhook().handle(request(headers)).await
}

async fn intake(h: &Harness, headers: &[(String, String)]) -> Result<Intake, IntakeError> {
    h.webhook().intake(&request(headers).headers).await
}

#[tokio::test]
async fn a_change_notification_queues_a_job_deduplicated_by_channel_and_number() {
    // GIVEN a registered channel
    let h = watched().await;

    // WHEN a valid change notification arrives
    let result = intake(&h, &notification(&[])).await.unwrap();

    // THEN a notification job for the channel's source is queued, deduplicated by
    // channel:number, in the band/source group
    let Intake::Queued(job) = result else {
        panic!("expected Queued, got {result:?}")
    };
    assert_eq!((job.band.as_str(), job.source.as_str()), ("demo", "charts"));
    assert_eq!(job.trigger, Trigger::Notification);
    assert!(!job.full);
    let queued = h.sync_queue.messages();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].dedup_id, charts_at(0));
    assert_eq!(queued[0].group, "demo/charts");
    assert_eq!(h.sync_queue.bodies::<SyncJob>(), [job]);
    // AND the channel remembers its newest message
    let channel = h.store.get_watch_channel(CHANNEL).await.unwrap().unwrap();
    assert_eq!(channel.last_message, Some(7));
    // (a band channel is untouched: publishing is the worker's job)
    assert!(h.log(&ChannelName::Band(band("demo"))).await.is_empty());
}

#[tokio::test]
async fn a_repeated_message_number_is_a_duplicate_and_queues_nothing() {
    // GIVEN message 7 was accepted, and the worker has since started its pass (the
    // source's generation moved, so a new send would get a new dedup id)
    let h = watched().await;
    let Ok(Intake::Queued(job)) = intake(&h, &notification(&[])).await else {
        panic!("message 7 is queued")
    };
    h.sync_worker().run(&job).await.unwrap();
    let sent = h.sync_queue.attempts();

    // WHEN message 7 is replayed (Google's retry, or someone who recorded it)
    let response = post(&h, &notification(&[])).await;

    // THEN it is acknowledged as a duplicate and nothing more is sent to the queue
    assert_eq!(response.status(), 200);
    assert_eq!(response.body_json()["status"], "duplicate");
    assert_eq!(h.sync_queue.attempts(), sent, "a replay queues no work");
    assert_eq!(h.sync_queue.deduplicated().len(), 1);
    // AND message 8 is new
    let eight = intake(&h, &notification(&[(H_MESSAGE_NUMBER, Some("8"))])).await;
    assert!(matches!(eight, Ok(Intake::Queued(_))));
    assert_eq!(h.sync_queue.deduplicated().len(), 2);
}

#[tokio::test]
async fn a_burst_queues_one_job_until_the_worker_starts_a_pass() {
    // GIVEN a registered channel
    let h = watched().await;

    // WHEN a burst of 5 notifications arrives before the worker runs
    let mut jobs = Vec::new();
    for n in 7..12 {
        let number = n.to_string();
        let result = intake(&h, &notification(&[(H_MESSAGE_NUMBER, Some(&number))])).await;
        let Ok(Intake::Queued(job)) = result else {
            panic!("expected Queued, got {result:?}")
        };
        jobs.push(job);
    }

    // THEN each was accepted, but the FIFO queue passes on one job only
    assert_eq!(h.sync_queue.messages().len(), 5);
    let passed = h.sync_queue.deduplicated();
    assert_eq!(passed.len(), 1, "{passed:?}");

    // WHEN the worker starts that job's pass (it bumps the source's generation
    // before reading the folder), and another notification arrives
    h.sync_worker().run(&jobs[0]).await.unwrap();
    let generation = h
        .store
        .generation(&band("demo"), &source_id("charts"))
        .await
        .unwrap();
    assert_eq!(generation, 1);
    let late = intake(&h, &notification(&[(H_MESSAGE_NUMBER, Some("12"))])).await;

    // THEN that one is queued as a new job: the running pass may have read too early
    assert!(matches!(late, Ok(Intake::Queued(_))), "{late:?}");
    let passed: Vec<String> = h
        .sync_queue
        .deduplicated()
        .into_iter()
        .map(|m| m.dedup_id)
        .collect();
    assert_eq!(passed, [charts_at(0), charts_at(1)]);
}

#[tokio::test]
async fn an_expired_channel_is_refused_with_410() {
    // GIVEN a channel that expired a minute ago
    let h = watched().await;
    let mut chan = h.store.get_watch_channel(CHANNEL).await.unwrap().unwrap();
    chan.expires_at = Some(h.now() - chrono::Duration::minutes(1));
    h.store.put_watch_channel(&chan).await.unwrap();
    // WHEN a notification arrives on it THEN it is refused and nothing is queued
    let response = post(&h, &notification(&[])).await;
    assert_eq!(response.status(), 410);
    assert_eq!(response.body_json()["error"]["code"], "channel_expired");
    assert!(h.sync_queue.messages().is_empty());
}

#[tokio::test]
async fn the_sync_handshake_and_unknown_states_queue_nothing() {
    // GIVEN a registered channel
    let h = watched().await;

    // WHEN the `sync` handshake and a state we do not know arrive
    let sync = intake(&h, &notification(&[(H_RESOURCE_STATE, Some("sync"))])).await;
    let odd = intake(&h, &notification(&[(H_RESOURCE_STATE, Some("wobble"))])).await;
    let response = post(&h, &notification(&[(H_RESOURCE_STATE, Some("sync"))])).await;

    // THEN both are acknowledged and nothing is queued
    assert_eq!(sync.unwrap(), Intake::SyncHandshake);
    assert_eq!(odd.unwrap(), Intake::Ignored("wobble".into()));
    assert_eq!(response.status(), 200);
    assert_eq!(response.body_json()["status"], "sync_acknowledged");
    assert_eq!(h.sync_queue.attempts(), 0);
}

#[tokio::test]
async fn bad_notifications_are_refused_with_the_right_status() {
    let h = watched().await;
    let cases = [
        (&[(H_CHANNEL_TOKEN, Some("guessed"))], 403, "forbidden"),
        (&[(H_CHANNEL_TOKEN, None)], 403, "forbidden"),
        (&[(H_RESOURCE_ID, Some("res-other"))], 403, "forbidden"),
        (&[(H_CHANNEL_ID, Some("not-ours"))], 404, "not_found"),
        (&[(H_CHANNEL_ID, None)], 400, "missing_header"),
        (&[(H_MESSAGE_NUMBER, None)], 400, "missing_header"),
        (&[(H_MESSAGE_NUMBER, Some("seven"))], 400, "invalid_header"),
    ];
    for (changes, status, code) in cases {
        // GIVEN a notification with a wrong or missing header
        // WHEN it is posted
        let response = post(&h, &notification(changes)).await;
        // THEN it is refused with that status and code
        assert_eq!(response.status(), status, "{changes:?}");
        assert_eq!(response.body_json()["error"]["code"], code, "{changes:?}");
    }
    // AND nothing was queued, and no message number was remembered
    assert_eq!(h.sync_queue.attempts(), 0);
    let channel = h.store.get_watch_channel(CHANNEL).await.unwrap().unwrap();
    assert_eq!(channel.last_message, None);
}

#[tokio::test]
async fn when_queueing_fails_the_answer_is_503_and_the_retry_is_accepted() {
    // GIVEN the sync queue fails the next send
    let h = watched().await;
    h.sync_queue.fail_next_send();

    // WHEN message 7 arrives
    let response = post(&h, &notification(&[])).await;

    // THEN the answer is 503 so that Google retries, and nothing is queued
    assert_eq!(response.status(), 503);
    assert_eq!(response.body_json()["error"]["code"], "unavailable");
    assert!(h.sync_queue.messages().is_empty());

    // WHEN Google retries message 7
    let retry = post(&h, &notification(&[])).await;

    // THEN it is not taken for a duplicate: the job is queued
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.body_json()["status"], "queued");
    let queued = h.sync_queue.messages();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].dedup_id, charts_at(0));
}

/// Everything logged while `f` runs, at info and above.
async fn logged<F: std::future::Future>(f: F) -> (F::Output, String) {
    use tracing::instrument::WithSubscriber as _;
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = f.with_subscriber(subscriber).await;
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

#[tokio::test]
async fn a_huge_channel_id_is_logged_cut_and_escaped() {
    // GIVEN a notification with a 16 KB channel id, with a quote and a tab in it (what
    // a header value may carry to forge a field)
    let h = watched().await;
    let huge = format!("forged\" level=ERROR\t{}", "c".repeat(16 * 1024));
    let headers = notification(&[(H_CHANNEL_ID, Some(&huge))]);
    // WHEN it is posted (and refused: no such channel)
    let (response, log) = logged(post(&h, &headers)).await;
    assert_eq!(response.status(), 404);
    // THEN the refusal is logged, with a short, escaped channel id
    assert!(log.contains("notification refused"), "{log}");
    assert!(log.contains(r#"forged\" level=ERROR\t"#), "{log}");
    assert!(log.len() < 1024, "{} bytes logged", log.len());
    assert_eq!(log.lines().count(), 1, "{log}");
}
