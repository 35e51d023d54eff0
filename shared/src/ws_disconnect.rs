//! $disconnect: forget the connection and its subscriptions. Repeats are harmless.
//! With [`Presence`], the connection is uncounted from its member's bands first (the
//! last device marks the member leaving), while its record still says whose it was.

use crate::error::Refusal;
use crate::model::ConnectionId;
use crate::ports::{ConnectionStore, PortResult};
use crate::presence::Presence;
use crate::transport::http::{json_v1, refused_v1};
use crate::ws_connect::connection_id;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use serde_json::json;
use std::sync::Arc;

pub struct WsDisconnect {
    connections: Arc<dyn ConnectionStore>,
    presence: Option<Presence>,
}

impl WsDisconnect {
    pub fn new(connections: Arc<dyn ConnectionStore>) -> Self {
        Self {
            connections,
            presence: None,
        }
    }

    pub fn with_presence(mut self, presence: Presence) -> Self {
        self.presence = Some(presence);
        self
    }

    #[tracing::instrument(skip_all, fields(connection = ?req.request_context.connection_id))]
    pub async fn handle(&self, req: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        let id = match connection_id(&req) {
            Ok(id) => id,
            Err(e) => return refused_v1(e),
        };
        match self.disconnect(&id).await {
            Ok(()) => json_v1(200, &json!({"disconnected": id})),
            Err(e) => refused_v1(Refusal::from(e)),
        }
    }

    async fn disconnect(&self, id: &ConnectionId) -> PortResult<()> {
        if let Some(presence) = &self.presence {
            // A redelivered disconnect finds no record: it was uncounted the first time.
            if let Some(conn) = self.connections.get_connection(id).await? {
                presence.disconnected(&conn).await?;
            }
        }
        self.connections.delete_connection(id).await?;
        if let Some(presence) = &self.presence {
            presence.sweep_quietly().await;
        }
        Ok(())
    }
}
