//! $disconnect: forget the connection and its subscriptions. Repeats are harmless.

use crate::error::Refusal;
use crate::ports::ConnectionStore;
use crate::transport::http::{json_v1, refused_v1};
use crate::ws_connect::connection_id;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use serde_json::json;
use std::sync::Arc;

pub struct WsDisconnect {
    connections: Arc<dyn ConnectionStore>,
}

impl WsDisconnect {
    pub fn new(connections: Arc<dyn ConnectionStore>) -> Self {
        Self { connections }
    }

    #[tracing::instrument(skip_all, fields(connection = ?req.request_context.connection_id))]
    pub async fn handle(&self, req: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        let id = match connection_id(&req) {
            Ok(id) => id,
            Err(e) => return refused_v1(e),
        };
        match self.connections.delete_connection(&id).await {
            Ok(()) => json_v1(200, &json!({"disconnected": id})),
            Err(e) => refused_v1(Refusal::from(e)),
        }
    }
}
