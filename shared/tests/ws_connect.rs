use aws_lambda_events::apigw::ApiGatewayProxyResponse;
use bandsync::model::CONNECTION_TTL;
use bandsync::model::Connection;
use bandsync::ports::ConnectionStore;
use bandsync_testkit::*;

const CONN: &str = "L0SM9cOFvHcCIhw=";

/// Send a `$connect` and return the response with what the store then holds.
async fn connect(
    h: &Harness,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (ApiGatewayProxyResponse, Option<Connection>) {
    let response = h
        .ws_connect()
        .handle(ws_connect_event(CONN, token, headers))
        .await;
    let stored = h.store.get_connection(&conn_id(CONN)).await.unwrap();
    (response, stored)
}

#[tokio::test]
async fn a_valid_token_in_the_query_string_connects() {
    // GIVEN a member token for alice in demo and jazz
    let h = Harness::new();
    let token = h.token("alice", &["demo", "jazz"]);

    // WHEN the handshake carries it as ?token=
    let (response, stored) = connect(&h, Some(&token), &[]).await;

    // THEN it is accepted and the connection is remembered with who is on it
    assert_eq!(response.status(), 200);
    assert_eq!(response.body_json()["connection"], CONN);
    let conn = stored.expect("the connection is stored");
    assert_eq!(conn.user.as_str(), "alice");
    assert_eq!(conn.bands, [band("demo"), band("jazz")]);
    assert_eq!(conn.connected_at, h.now());
    assert_eq!(conn.expires_at, h.now() + CONNECTION_TTL);
}

#[tokio::test]
async fn a_bearer_header_connects_too() {
    // GIVEN a client that can set headers
    let h = Harness::new();
    let bearer = h.bearer("bob", &["demo"]);

    // WHEN the token comes as Authorization: Bearer
    let (response, stored) = connect(&h, None, &[("Authorization", &bearer)]).await;

    // THEN it is accepted
    assert_eq!(response.status(), 200);
    assert_eq!(stored.unwrap().user.as_str(), "bob");
}

#[tokio::test]
async fn a_bad_missing_or_expired_token_is_refused_with_401() {
    let h = Harness::new();
    let forged = bandsync::auth::TokenKey::new("another-secret").mint(
        "alice",
        &["demo"],
        h.now(),
        chrono::TimeDelta::hours(1),
    );
    let expired = h.token("alice", &["demo"]);
    let cases = [
        (Some(forged.as_str()), "invalid_token", false),
        (Some("not-a-jwt"), "invalid_token", false),
        (None, "missing_token", false),
        (Some(expired.as_str()), "token_expired", true),
    ];
    for (token, code, later) in cases {
        // GIVEN a token that is forged, malformed, absent or (later) expired
        if later {
            h.clock.advance(chrono::TimeDelta::hours(2));
        }
        // WHEN it is used to connect
        let (response, stored) = connect(&h, token, &[]).await;
        // THEN the handshake is refused with a JSON error, and nothing is stored
        assert_eq!(response.status(), 401, "{code}");
        assert_eq!(response.body_json()["error"]["code"], code);
        assert!(stored.is_none(), "{code}: no connection is stored");
    }
}

#[tokio::test]
async fn a_connect_counts_the_member_online_in_each_of_its_bands() {
    use bandsync::ports::PresenceStore;
    // GIVEN alice's token for demo and jazz
    let h = Harness::new();
    let token = h.token("alice", &["demo", "jazz"]);
    // WHEN she connects
    let (response, _) = connect(&h, Some(&token), &[]).await;
    assert_eq!(response.status(), 200);
    // THEN both bands list her with one device, and each band's channel says she joined
    for b in ["demo", "jazz"] {
        let present = h.store.present(&band(b)).await.unwrap();
        assert_eq!(present.len(), 1, "{b}");
        assert_eq!(
            (present[0].member.as_str(), present[0].devices),
            ("alice", 1)
        );
    }
    assert_eq!(h.broadcast_queue.messages().len(), 2);
}

#[tokio::test]
async fn a_refused_connect_counts_nobody() {
    use bandsync::ports::PresenceStore;
    let h = Harness::new();
    let (response, _) = connect(&h, Some("not-a-token"), &[]).await;
    assert_eq!(response.status(), 401);
    assert!(h.store.present(&band("demo")).await.unwrap().is_empty());
    assert!(h.broadcast_queue.messages().is_empty());
}
