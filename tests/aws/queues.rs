//! SqsQueue on moto's SQS: FIFO sends carry their group and dedup id, a repeated dedup id
//! is dropped, batches keep their order, health is up or down.
//!
//! moto implements FIFO deduplication (a second SendMessage with the same
//! MessageDeduplicationId within 5 minutes is accepted but not delivered), per-group
//! order and group locking, as SQS does. It never refuses a single entry of a
//! SendMessageBatch for the requests we make (only for a bad DelaySeconds, which we do not
//! set), so the per-entry failure path is covered against a stub answering as SQS does.

use crate::support::*;
use aws_sdk_sqs::types::MessageSystemAttributeName as Attr;
use bandsync::adapters::aws::sqs::SqsQueue;
use bandsync::ports::{HealthCheck, OutMessage, Queue};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn msg(group: &str, dedup_id: &str, body: &str) -> OutMessage {
    OutMessage {
        group: group.into(),
        dedup_id: dedup_id.into(),
        body: body.into(),
    }
}

fn bodies(messages: &[aws_sdk_sqs::types::Message]) -> Vec<&str> {
    messages.iter().map(|m| m.body().unwrap_or("")).collect()
}

#[tokio::test]
async fn a_sent_message_arrives_with_its_group_and_dedup_id() {
    // GIVEN a FIFO queue on moto and an SqsQueue on it
    let moto = moto();
    let url = moto.create_fifo_queue(&unique("sync")).await;
    let queue = SqsQueue::new(moto.sqs(), url.clone());

    // WHEN a message is sent
    queue
        .send(msg(
            "demo/folder",
            "job-1",
            r#"{"band":"demo","source":"folder"}"#,
        ))
        .await
        .expect("send");

    // THEN the raw SQS client receives it with its body, group and dedup id
    let got = receive_all(&moto.sqs(), &url, 1).await;
    assert_eq!(bodies(&got), [r#"{"band":"demo","source":"folder"}"#]);
    assert_eq!(
        attribute(&got[0], Attr::MessageGroupId),
        Some("demo/folder")
    );
    assert_eq!(
        attribute(&got[0], Attr::MessageDeduplicationId),
        Some("job-1")
    );
}

#[tokio::test]
async fn a_repeated_dedup_id_within_the_window_is_dropped() {
    // GIVEN a FIFO queue that got a message with dedup id "event-7"
    let moto = moto();
    let url = moto.create_fifo_queue(&unique("broadcast")).await;
    let queue = SqsQueue::new(moto.sqs(), url.clone());
    queue
        .send(msg("band:demo", "event-7", "first"))
        .await
        .expect("first send");

    // WHEN the same dedup id is sent again (a redelivered job), then another id
    queue
        .send(msg("band:demo", "event-7", "repeat"))
        .await
        .expect("a duplicate is accepted, as SQS does");
    queue
        .send(msg("band:demo", "event-8", "next"))
        .await
        .expect("next send");

    // THEN only the first copy and the next message are delivered, in order
    let got = receive_all(&moto.sqs(), &url, 2).await;
    assert_eq!(bodies(&got), ["first", "next"]);
}

#[tokio::test]
async fn a_batch_of_25_arrives_in_order_within_its_group() {
    // GIVEN a FIFO queue and 25 messages of one group (three SendMessageBatch calls)
    let moto = moto();
    let url = moto.create_fifo_queue(&unique("batch")).await;
    let queue = SqsQueue::new(moto.sqs(), url.clone());
    let messages: Vec<OutMessage> = (0..25)
        .map(|i| msg("band:demo", &format!("e-{i}"), &format!("event {i}")))
        .collect();

    // WHEN they are sent as a batch
    queue.send_batch(messages).await.expect("send_batch");

    // THEN all 25 arrive, in the order sent, each with its own dedup id
    let got = receive_all(&moto.sqs(), &url, 25).await;
    let expected: Vec<String> = (0..25).map(|i| format!("event {i}")).collect();
    assert_eq!(bodies(&got), expected);
    let dedup: Vec<&str> = got
        .iter()
        .map(|m| attribute(m, Attr::MessageDeduplicationId).unwrap_or(""))
        .collect();
    let expected: Vec<String> = (0..25).map(|i| format!("e-{i}")).collect();
    assert_eq!(dedup, expected);
}

#[tokio::test]
async fn a_batch_repeated_after_a_failure_delivers_each_message_once() {
    // GIVEN a batch of 12 that went through (as if the caller did not see the answer)
    let moto = moto();
    let url = moto.create_fifo_queue(&unique("again")).await;
    let queue = SqsQueue::new(moto.sqs(), url.clone());
    let messages: Vec<OutMessage> = (0..12)
        .map(|i| msg("band:demo", &format!("a-{i}"), &format!("m{i}")))
        .collect();
    queue.send_batch(messages.clone()).await.expect("first");

    // WHEN the caller sends the whole batch again
    queue.send_batch(messages).await.expect("second");

    // THEN SQS's dedup window drops the repeats
    let got = receive_all(&moto.sqs(), &url, 12).await;
    assert_eq!(got.len(), 12, "{:?}", bodies(&got));
}

/// SendMessageBatch as SQS answers it (JSON protocol) when it refuses entry `m3`.
async fn refusing_sqs(requests: Arc<AtomicUsize>) -> String {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::routing::post;
    let router = axum::Router::new().route(
        "/",
        post(move |headers: HeaderMap, body: String| {
            let requests = requests.clone();
            async move {
                requests.fetch_add(1, Ordering::SeqCst);
                let target = headers
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                assert_eq!(target, "AmazonSQS.SendMessageBatch");
                let req: serde_json::Value = serde_json::from_str(&body).expect("JSON request");
                let ids: Vec<String> = req["Entries"]
                    .as_array()
                    .expect("entries")
                    .iter()
                    .map(|e| e["Id"].as_str().unwrap().to_owned())
                    .collect();
                let ok: Vec<serde_json::Value> = ids
                    .iter()
                    .filter(|id| *id != "m3")
                    .map(|id| {
                        serde_json::json!({"Id": id, "MessageId": format!("id-{id}"),
                            "MD5OfMessageBody": "00000000000000000000000000000000",
                            "SequenceNumber": "1"})
                    })
                    .collect();
                let answer = serde_json::json!({
                    "Successful": ok,
                    "Failed": [{"Id": "m3", "SenderFault": true, "Code": "InvalidMessageContents",
                                "Message": "Invalid characters found"}],
                });
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/x-amz-json-1.0")],
                    answer.to_string(),
                )
            }
        }),
    );
    serve(router).await
}

#[tokio::test]
async fn a_refused_batch_entry_is_an_error_naming_it_and_stops_the_batch() {
    // GIVEN an SQS that refuses the fourth entry of every batch
    let requests = Arc::new(AtomicUsize::new(0));
    let endpoint = refusing_sqs(requests.clone()).await;
    let url = format!("{endpoint}/123456789012/refusing.fifo");
    let queue = SqsQueue::new(
        aws_sdk_sqs::Client::new(&sdk_config(&endpoint)),
        url.clone(),
    );
    let messages: Vec<OutMessage> = (0..15)
        .map(|i| msg("band:demo", &format!("d-{i}"), &format!("m{i}")))
        .collect();

    // WHEN 15 messages are sent (two chunks)
    let err = queue
        .send_batch(messages)
        .await
        .expect_err("a refused entry fails the send")
        .to_string();

    // THEN the error names the entry, its dedup id, SQS's code and the queue
    for part in [
        "m3",
        "d-3",
        "InvalidMessageContents",
        url.as_str(),
        "1 of 10",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    // AND the second chunk was not sent (order: nothing after a hole)
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn health_is_up_for_a_queue_and_down_for_a_missing_one() {
    // GIVEN one queue that exists and a URL of one that does not
    let moto = moto();
    let url = moto.create_fifo_queue(&unique("health")).await;
    let missing = format!(
        "{}/123456789012/{}.fifo",
        moto.endpoint(),
        unique("missing")
    );

    // WHEN both are checked
    let up = SqsQueue::new(moto.sqs(), url).check().await;
    let down = SqsQueue::new(moto.sqs(), missing.clone()).check().await;

    // THEN the first is up, and the second is down with an error naming the queue
    up.expect("an existing queue is healthy");
    let err = down.expect_err("a missing queue is down").to_string();
    assert!(err.contains(&missing), "{err}");
    assert!(err.contains("GetQueueAttributes"), "{err}");
}

#[tokio::test]
async fn a_send_to_a_missing_queue_is_an_error_naming_it() {
    // GIVEN the URL of a queue that does not exist
    let moto = moto();
    let missing = format!("{}/123456789012/{}.fifo", moto.endpoint(), unique("nope"));
    let queue = SqsQueue::new(moto.sqs(), missing.clone());

    // WHEN a message is sent to it
    let err = queue
        .send(msg("g", "d", "b"))
        .await
        .expect_err("no such queue")
        .to_string();

    // THEN the error says which call and which queue
    assert!(
        err.contains("SendMessage") && err.contains(&missing),
        "{err}"
    );
}
