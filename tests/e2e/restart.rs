//! Stop the stack and start it again on the same data directory: nothing accepted is lost
//! (operations, the channel log and its epoch, queued jobs, changes made while down).

use bandsync_local::LocalStack;
use bandsync_testkit::stack::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// Events by seq (a resume can deliver a seq twice: replay and live).
fn by_seq(events: Vec<Value>) -> Vec<Value> {
    let map: BTreeMap<u64, Value> = events
        .into_iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e))
        .collect();
    map.into_values().collect()
}

async fn resume_until(client: &mut Client, after: u64, epoch: &str, path: &str) -> Vec<Value> {
    client.resume("band:demo", after, epoch).await;
    let path = path.to_owned();
    let events = client
        .events_until(move |ev| {
            let created = ev
                .iter()
                .position(|e| e["event"] == "file.created" && e["data"]["path"] == path.as_str());
            created.is_some_and(|i| ev[i..].iter().any(|e| e["event"] == "sync.completed"))
        })
        .await;
    by_seq(events)
}

#[tokio::test]
async fn a_restart_on_the_same_data_dir_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());

    // Run 1: one change, seen live.
    let stack = LocalStack::start(cfg.clone()).await.unwrap();
    let token = stack.token("alice", &["demo"]);
    let mut alice = Client::connect(&stack.ws_url, &token).await;
    alice.subscribe("band:demo").await;
    put(cfg.folder.join("one.pdf"), b"1");
    let first = alice.events_until(|ev| has_completed(ev, 1)).await;
    let last = first.last().unwrap()["seq"].as_u64().unwrap();
    let epoch = first[0]["epoch"].as_str().unwrap().to_owned();
    stack.shutdown().await;
    let closed = tokio::time::timeout(WAIT, async { while alice.recv(WAIT).await.is_some() {} });
    assert!(closed.await.is_ok(), "sockets close when the stack stops");

    // While it is down, a change on disk.
    put(cfg.folder.join("two.pdf"), b"2");

    // Run 2, workers off: a change is queued but not processed, then the stack stops.
    let mut paused = cfg.clone();
    paused.workers = false;
    let stack = LocalStack::start(paused).await.unwrap();
    put(cfg.folder.join("three.pdf"), b"3");
    let queued = eventually("the notification is queued", || async {
        let messages = stack.sync_queue.list(100).await.unwrap();
        let notified = messages.iter().any(|m| m.body.contains("\"notification\""));
        notified.then_some(messages)
    })
    .await;
    stack.shutdown().await;

    // Run 3: the tokens still work, the log kept its epoch, the queued jobs run, and the
    // change made while down is found.
    let stack = LocalStack::start(cfg.clone()).await.unwrap();
    let mut alice = Client::connect(&stack.ws_url, &token).await;
    let mut events = resume_until(&mut alice, last, &epoch, "two.pdf").await;
    if !events.iter().any(|e| e["data"]["path"] == "three.pdf") {
        events.extend(
            resume_until(
                &mut alice,
                events.last().unwrap()["seq"].as_u64().unwrap(),
                &epoch,
                "three.pdf",
            )
            .await,
        );
    }
    let events = by_seq(events);
    assert_gapless(&events, last + 1);
    assert_eq!(
        events[0]["epoch"],
        epoch.as_str(),
        "same epoch after a restart"
    );
    let files: Vec<_> = file_events(&events).into_iter().map(|(_, p)| p).collect();
    assert!(
        files.contains(&"two.pdf".to_owned()) && files.contains(&"three.pdf".to_owned()),
        "{files:?}"
    );

    // Every job queued before the stop was handled and deleted.
    drain(&stack).await;
    let left = stack.sync_queue.list(100).await.unwrap();
    assert!(
        queued
            .iter()
            .all(|q| left.iter().all(|m| m.message_id != q.message_id)),
        "queued jobs were not processed: {left:?}"
    );
    // The job queued by run 2 (its startup reconcile, first in the source's FIFO group)
    // ran in run 3: its operation exists under its job id.
    let first_queued: serde_json::Value = serde_json::from_str(&queued[0].body).unwrap();
    let queued_job = first_queued["id"].as_str().unwrap().to_owned();
    let http = Http::new(&stack.http_url);
    let (_, ops) = http
        .get("/sync/operations?band=demo&limit=100", Some(&token))
        .await;
    let ops = ops["operations"].as_array().unwrap();
    // Run 1's operation and the one that found two.pdf and three.pdf (possibly more).
    assert!(
        ops.len() >= 2,
        "operations of every run are kept: {}",
        ops.len()
    );
    assert!(
        ops.iter().any(|o| o["id"] == queued_job.as_str()),
        "the job queued before the stop ran after the restart"
    );
    let first_id = first[0]["data"]["operation"].as_str().unwrap();
    assert!(
        ops.iter().any(|o| o["id"] == first_id),
        "run 1's operation survived the restarts"
    );
    stack.shutdown().await;
}
