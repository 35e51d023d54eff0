//! The @connections endpoint answers the real aws-sdk-apigatewaymanagement client as API
//! Gateway does: PostToConnection reaches the socket, GetConnection describes it,
//! DeleteConnection closes it, and a gone id is a GoneException (410).

use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use bandsync_testkit::stack::*;

fn sdk_client(endpoint: &str) -> Client {
    let config = aws_sdk_apigatewaymanagement::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "test"))
        .endpoint_url(endpoint)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    Client::from_conf(config)
}

#[tokio::test]
async fn the_real_sdk_client_posts_gets_and_deletes() {
    use bandsync::ports::ConnectionStore;
    let t = spawn_stack().await;
    let mut alice = t.client("alice", &["demo"]).await;
    alice.send(serde_json::json!({"action": "ping"})).await;
    alice.expect("pong").await;
    let ids = t.stack.registry.ids();
    assert_eq!(ids.len(), 1);
    let id = ids[0].clone();
    let sdk = sdk_client(&t.stack.management_url);

    sdk.post_to_connection()
        .connection_id(&id)
        .data(Blob::new(br#"{"type":"hello","from":"sdk"}"#.to_vec()))
        .send()
        .await
        .expect("PostToConnection succeeds");
    let frame = alice
        .recv(WAIT)
        .await
        .expect("the socket receives the post");
    assert_eq!(frame["from"], "sdk");

    let info = sdk
        .get_connection()
        .connection_id(&id)
        .send()
        .await
        .expect("GetConnection succeeds");
    let connected_at = info
        .connected_at()
        .expect("connectedAt parses as a timestamp");
    let age = chrono::Utc::now().timestamp() - connected_at.secs();
    assert!((0..60).contains(&age), "connectedAt is now-ish: {age}s");
    assert_eq!(
        info.identity().and_then(|i| i.source_ip()),
        Some("127.0.0.1")
    );

    let err = sdk
        .post_to_connection()
        .connection_id("bm9zdWNoY29ubmVjdGlvbg=")
        .data(Blob::new(b"x".to_vec()))
        .send()
        .await
        .expect_err("unknown id");
    assert!(
        err.into_service_error().is_gone_exception(),
        "an unknown id is Gone"
    );

    sdk.delete_connection()
        .connection_id(&id)
        .send()
        .await
        .expect("DeleteConnection succeeds");
    assert!(alice.recv(WAIT).await.is_none(), "the socket is closed");
    // The connection's record goes with it ($disconnect ran).
    let conn_id = bandsync::model::ConnectionId::parse(&id).unwrap();
    eventually("$disconnect removes the connection", || async {
        let stored = t.stack.store.get_connection(&conn_id).await.unwrap();
        stored.is_none().then_some(())
    })
    .await;
    let err = sdk
        .get_connection()
        .connection_id(&id)
        .send()
        .await
        .expect_err("gone after delete");
    assert!(err.into_service_error().is_gone_exception());
}

#[tokio::test]
async fn a_gone_connection_found_by_a_push_is_removed_with_its_subscriptions() {
    use bandsync::model::{ChannelName, Connection, ConnectionId, UserId};
    use bandsync::ports::ConnectionStore;
    let t = spawn_stack().await;
    // A connection record whose socket is long gone (its $disconnect was lost).
    let ghost = ConnectionId::parse("Z2hvc3Rjb25uZWN0aW9u").unwrap();
    let band = ChannelName::parse("band:demo").unwrap();
    let now = chrono::Utc::now();
    t.stack
        .store
        .put_connection(&Connection {
            id: ghost.clone(),
            user: UserId::parse("ghost").unwrap(),
            bands: vec![bandsync::model::BandId::parse("demo").unwrap()],
            connected_at: now,
            expires_at: now + chrono::Duration::hours(2),
            device: None,
        })
        .await
        .unwrap();
    t.stack.store.subscribe(&ghost, &band, now).await.unwrap();
    let mut alice = t.client("alice", &["demo"]).await;
    alice.subscribe("band:demo").await;

    put(t.folder().join("x.pdf"), b"x");
    alice.events_until(|ev| has_completed(ev, 1)).await;
    eventually("the ghost is removed", || async {
        let subs = t.stack.store.subscribers(&band).await.unwrap();
        (!subs.contains(&ghost)).then_some(())
    })
    .await;
    assert!(
        t.stack
            .store
            .get_connection(&ghost)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        t.stack
            .store
            .subscriptions(&ghost)
            .await
            .unwrap()
            .is_empty()
    );
}
