//! SnsNotifier on moto's SNS, observed through an SQS queue subscribed to the topic
//! (moto delivers SNS -> SQS with the same JSON envelope as SNS).

use crate::support::*;
use bandsync::adapters::aws::sns::{MAX_SUBJECT, SnsNotifier};
use bandsync::ports::Notifier;

/// A topic with a queue subscribed to it: (topic ARN, queue URL).
async fn topic_with_queue() -> (String, String) {
    let moto = moto();
    let topic = moto.create_topic(&unique("alerts")).await;
    let queue = moto.create_queue(&unique("alert-inbox")).await;
    moto.subscribe_queue(&topic, &queue).await;
    (topic, queue)
}

/// The SNS notifications the queue got (their JSON envelopes).
async fn notifications(queue: &str, expect: usize) -> Vec<serde_json::Value> {
    receive_all(&moto().sqs(), queue, expect)
        .await
        .iter()
        .map(|m| serde_json::from_str(m.body().expect("body")).expect("an SNS envelope"))
        .collect()
}

#[tokio::test]
async fn an_alert_reaches_the_topic_subscribers_with_subject_and_message() {
    // GIVEN an alert topic with a subscribed queue
    let (topic, queue) = topic_with_queue().await;
    let notifier = SnsNotifier::new(moto().sns(), topic.clone());

    // WHEN an alert is raised
    notifier
        .alert(
            "bandsync: sync DLQ not empty",
            "3 messages in bandsync-sync-dlq.fifo",
        )
        .await
        .expect("alert");

    // THEN the subscriber gets it with its subject and message, from that topic
    let got = notifications(&queue, 1).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["Type"], "Notification");
    assert_eq!(got[0]["TopicArn"], topic.as_str());
    assert_eq!(got[0]["Subject"], "bandsync: sync DLQ not empty");
    assert_eq!(got[0]["Message"], "3 messages in bandsync-sync-dlq.fifo");
}

#[tokio::test]
async fn a_long_subject_is_cut_to_the_sns_limit() {
    // GIVEN an alert topic (moto, like SNS, refuses a Subject over 100 characters)
    let (topic, queue) = topic_with_queue().await;
    let notifier = SnsNotifier::new(moto().sns(), topic);
    let subject = format!("sync failed for band demo: {}", "x".repeat(150));

    // WHEN an alert with a 177-character subject on two lines is raised
    notifier
        .alert(&format!("{subject}\nsecond line"), "details")
        .await
        .expect("a long subject is not an error");

    // THEN it arrives with the subject cut to the limit, and the whole message
    let got = notifications(&queue, 1).await;
    let sent = got[0]["Subject"].as_str().expect("a subject");
    assert_eq!(sent.chars().count(), MAX_SUBJECT, "{sent}");
    assert!(sent.starts_with("sync failed for band demo: xxx"), "{sent}");
    assert!(sent.ends_with("..."), "{sent}");
    assert_eq!(got[0]["Message"], "details");
}

#[tokio::test]
async fn an_alert_to_a_missing_topic_is_an_error_naming_it() {
    // GIVEN the ARN of a topic that does not exist
    let missing = format!("arn:aws:sns:us-east-1:123456789012:{}", unique("gone"));
    let notifier = SnsNotifier::new(moto().sns(), missing.clone());

    // WHEN an alert is raised
    let err = notifier
        .alert("subject", "message")
        .await
        .expect_err("no such topic")
        .to_string();

    // THEN the error names the topic
    assert!(err.contains(&missing), "{err}");
}
