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
