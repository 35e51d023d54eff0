//! $connect: check the member's token and remember the connection. A refused connect
//! answers 401 with a JSON error, which API Gateway turns into a refused handshake.

use crate::auth::TokenKey;
use crate::error::{ErrorCode, Refusal};
use crate::model::{CONNECTION_TTL, Connection, ConnectionId};
use crate::ports::{Clock, ConnectionStore};
use crate::transport::http::{header, json_v1, refused_v1};
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use serde_json::json;
use std::sync::Arc;

pub struct WsConnect {
    connections: Arc<dyn ConnectionStore>,
    tokens: TokenKey,
    clock: Arc<dyn Clock>,
}

/// The connection id API Gateway gave this socket.
pub fn connection_id(req: &ApiGatewayWebsocketProxyRequest) -> Result<ConnectionId, Refusal> {
    let raw = req
        .request_context
        .connection_id
        .as_deref()
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::MissingConnectionId,
                "the request has no connection id",
            )
        })?;
    Ok(ConnectionId::parse(raw)?)
}

impl WsConnect {
    pub fn new(
        connections: Arc<dyn ConnectionStore>,
        tokens: TokenKey,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            connections,
            tokens,
            clock,
        }
    }

    #[tracing::instrument(skip_all, fields(connection = ?req.request_context.connection_id))]
    pub async fn handle(&self, req: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        match self.connect(&req).await {
            Ok(conn) => {
                tracing::info!(user = %conn.user, "connected");
                json_v1(200, &json!({"connection": conn.id}))
            }
            Err(e) => {
                tracing::info!(code = %e.code, "connect refused");
                refused_v1(e)
            }
        }
    }

    async fn connect(&self, req: &ApiGatewayWebsocketProxyRequest) -> Result<Connection, Refusal> {
        let id = connection_id(req)?;
        // Browsers cannot set headers on a WebSocket, so the token rides in the query string.
        let token = req
            .query_string_parameters
            .first("token")
            .map(Ok)
            .unwrap_or_else(|| crate::auth::bearer(header(&req.headers, "authorization")))?;
        let now = self.clock.now();
        let member = self.tokens.verify(token, now)?;
        let conn = Connection {
            id,
            user: member.user,
            bands: member.bands,
            connected_at: now,
            expires_at: now + CONNECTION_TTL,
        };
        self.connections.put_connection(&conn).await?;
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

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
        let forged = crate::auth::TokenKey::new("another-secret").mint(
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
}
