//! $connect: check the member's token and remember the connection. A refused connect
//! answers 401 with a JSON error, which API Gateway turns into a refused handshake.
//! With [`Presence`], the connection is counted in its member's bands (the first device
//! publishes `presence.joined`), and due `presence.left`s are swept.

use crate::auth::TokenKey;
use crate::error::{ErrorCode, Refusal};
use crate::model::{CONNECTION_TTL, Connection, ConnectionId};
use crate::ports::{Clock, ConnectionStore};
use crate::presence::Presence;
use crate::transport::http::{header, json_v1, refused_v1};
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use serde_json::json;
use std::sync::Arc;

pub struct WsConnect {
    connections: Arc<dyn ConnectionStore>,
    tokens: TokenKey,
    clock: Arc<dyn Clock>,
    presence: Option<Presence>,
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
            presence: None,
        }
    }

    pub fn with_presence(mut self, presence: Presence) -> Self {
        self.presence = Some(presence);
        self
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
            device: None,
        };
        self.connections.put_connection(&conn).await?;
        // After the record: a presence counted for a connection that is not stored could
        // never be uncounted. A failure refuses the connect, and the client's retry
        // counts it again (a set: once).
        if let Some(presence) = &self.presence {
            presence.connected(&conn).await?;
            presence.sweep_quietly().await;
        }
        Ok(conn)
    }
}
