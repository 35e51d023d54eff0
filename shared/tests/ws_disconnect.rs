use bandsync::ports::ConnectionStore;
use bandsync_testkit::*;

#[tokio::test]
async fn disconnect_removes_the_connection_and_its_subscriptions_and_repeats_are_harmless() {
    // GIVEN a connection subscribed to two channels, and another subscriber
    let h = Harness::new();
    let id = h.add_connection("AAAA1234=", "alice", &["demo"]).await;
    let other = h.add_connection("BBBB5678=", "bob", &["demo"]).await;
    for c in ["band:demo", "user:alice"] {
        h.store.subscribe(&id, &channel(c), h.now()).await.unwrap();
    }
    h.store
        .subscribe(&other, &channel("band:demo"), h.now())
        .await
        .unwrap();

    // WHEN API Gateway reports its $disconnect (twice: a repeat must be harmless)
    for _ in 0..2 {
        let response = h
            .ws_disconnect()
            .handle(ws_disconnect_event("AAAA1234="))
            .await;
        assert_eq!(response.status(), 200);
    }

    // THEN the connection and all its subscriptions are gone, the other one is not
    assert_eq!(h.store.get_connection(&id).await.unwrap(), None);
    assert!(h.store.subscriptions(&id).await.unwrap().is_empty());
    assert_eq!(
        h.store.subscribers(&channel("band:demo")).await.unwrap(),
        [other]
    );
}

#[tokio::test]
async fn the_last_device_going_marks_the_member_leaving_and_publishes_nothing_yet() {
    use bandsync::ports::PresenceStore;
    // GIVEN alice connected through $connect
    let h = Harness::new();
    let token = h.token("alice", &["demo"]);
    h.ws_connect()
        .handle(ws_connect_event("AAAA1234=", Some(&token), &[]))
        .await;
    let queued = h.broadcast_queue.messages().len();
    // WHEN her only connection goes (twice)
    for _ in 0..2 {
        let response = h
            .ws_disconnect()
            .handle(ws_disconnect_event("AAAA1234="))
            .await;
        assert_eq!(response.status(), 200);
    }
    // THEN she is leaving (no device, still listed) and nothing was published: the
    // debounce decides
    let present = h.store.present(&band("demo")).await.unwrap();
    assert_eq!(present.len(), 1);
    assert_eq!(present[0].devices, 0);
    assert_eq!(present[0].leaving_since, Some(h.now()));
    assert_eq!(h.broadcast_queue.messages().len(), queued);
}
