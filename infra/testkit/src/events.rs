//! Builders for API Gateway events ([`ws_connect_event`], [`ws_message_event`],
//! [`ws_disconnect_event`], [`http_event`]) and SQS batches ([`sqs_event`]) go through
//! `serde_json::from_value` on JSON shaped like what AWS sends, so the handlers see what
//! they would see in AWS; [`JsonResponse`] reads what they answer.

use crate::fakes::t0;
use aws_lambda_events::apigw::{
    ApiGatewayProxyResponse, ApiGatewayV2httpRequest, ApiGatewayV2httpResponse,
    ApiGatewayWebsocketProxyRequest,
};
use aws_lambda_events::encodings::Body;
use serde_json::{Value, json};

/// The `requestContext` API Gateway gives every WebSocket route, at [`t0`].
fn ws_event(route_key: &str, event_type: &str, connection: &str, mut extra: Value) -> Value {
    let ms = t0().timestamp_millis();
    let mut context = json!({
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": "Xq1dGFnbIAMFqmw=",
        "requestTime": "01/Mar/2026:12:00:00 +0000",
        "messageDirection": "IN",
        "stage": "prod",
        "connectedAt": ms,
        "requestTimeEpoch": ms,
        "identity": {"sourceIp": "192.0.2.10", "userAgent": "bandsync-app/1.0"},
        "requestId": "Xq1dGFnbIAMFqmw=",
        "domainName": "abcd1234.execute-api.eu-west-1.amazonaws.com",
        "connectionId": connection,
        "apiId": "abcd1234",
    });
    if let Some(more) = extra
        .get_mut("requestContext")
        .and_then(Value::as_object_mut)
    {
        for (k, v) in std::mem::take(more) {
            context[k] = v;
        }
    }
    extra["requestContext"] = context;
    extra["isBase64Encoded"] = json!(false);
    extra
}

fn ws_request(event: Value) -> ApiGatewayWebsocketProxyRequest {
    serde_json::from_value(event).expect("a WebSocket event fixture decodes")
}

/// A `$connect` event; `token` rides in the query string as browsers send it, extra
/// `headers` (e.g. `Authorization`) are added to the handshake's.
pub fn ws_connect_event(
    connection: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> ApiGatewayWebsocketProxyRequest {
    let mut h = json!({
        "Host": "abcd1234.execute-api.eu-west-1.amazonaws.com",
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "X-Forwarded-For": "192.0.2.10",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    });
    for (k, v) in headers {
        h[*k] = json!(v);
    }
    let multi: serde_json::Map<String, Value> = h
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), json!([v])))
        .collect();
    let mut event = json!({"headers": h, "multiValueHeaders": multi});
    if let Some(t) = token {
        event["queryStringParameters"] = json!({"token": t});
        event["multiValueQueryStringParameters"] = json!({"token": [t]});
    }
    ws_request(ws_event("$connect", "CONNECT", connection, event))
}

/// A MESSAGE event on the `$default` route carrying one text frame.
pub fn ws_message_event(connection: &str, body: &str) -> ApiGatewayWebsocketProxyRequest {
    let event = json!({
        "requestContext": {"messageId": "Xq1dGcAbIAMCIhw="},
        "body": body,
    });
    ws_request(ws_event("$default", "MESSAGE", connection, event))
}

/// A `$disconnect` event (client closed without a status).
pub fn ws_disconnect_event(connection: &str) -> ApiGatewayWebsocketProxyRequest {
    let event = json!({
        "headers": {"Host": "abcd1234.execute-api.eu-west-1.amazonaws.com"},
        "multiValueHeaders": {"Host": ["abcd1234.execute-api.eu-west-1.amazonaws.com"]},
        "requestContext": {
            "disconnectStatusCode": 1005,
            "disconnectReason": "Client-side close frame status not set",
        },
    });
    ws_request(ws_event("$disconnect", "DISCONNECT", connection, event))
}

/// An HTTP API (payload format 2.0) event. `target` is the path with an optional query
/// string (`/sync/status?band=demo`), as a client would request it.
pub fn http_event(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> ApiGatewayV2httpRequest {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: serde_json::Map<String, Value> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), json!(v))
        })
        .collect();
    let mut h = json!({
        "accept": "*/*",
        "host": "api1234.execute-api.eu-west-1.amazonaws.com",
        "user-agent": "curl/8.5.0",
        "x-forwarded-for": "192.0.2.10",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    });
    for (k, v) in headers {
        h[k.to_ascii_lowercase()] = json!(v);
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": h,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api1234",
            "domainName": "api1234.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "api1234",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.10",
                "userAgent": "curl/8.5.0",
            },
            "requestId": "LV7fzho-PHcEJPw=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Mar/2026:12:00:00 +0000",
            "timeEpoch": t0().timestamp_millis(),
        },
        "isBase64Encoded": false,
    });
    if !params.is_empty() {
        event["queryStringParameters"] = Value::Object(params);
    }
    if let Some(b) = body {
        event["body"] = json!(b);
    }
    serde_json::from_value(event).expect("an HTTP API event fixture decodes")
}

/// A route template's path with its parameters filled in (`{band}` is `demo`, `{source}`
/// `charts`, `{id}` `demo-1`, `{type}` `setlist_entry`): for tests that call every route of
/// [`bandsync::api::ROUTES`].
pub fn sample_path(template: &str) -> String {
    template
        .replace("{id}", "demo-1")
        .replace("{band}", "demo")
        .replace("{source}", "charts")
        .replace("{type}", "setlist_entry")
}

/// An SQS event as a FIFO queue delivers a batch to Lambda: `(message id, body)` pairs,
/// in order, all in `group`.
pub fn sqs_event(group: &str, messages: &[(&str, &str)]) -> aws_lambda_events::sqs::SqsEvent {
    let sent = t0().timestamp_millis().to_string();
    let records: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, (id, body))| {
            json!({
                "messageId": id,
                "receiptHandle": format!("AQEB{id}"),
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": sent,
                    "SenderId": "AROAIWPX5BD2BHG722MW4:sender",
                    "ApproximateFirstReceiveTimestamp": sent,
                    "SequenceNumber": format!("1884949646046769{i:04}"),
                    "MessageGroupId": group,
                    "MessageDeduplicationId": id,
                },
                "messageAttributes": {},
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:bandsync.fifo",
                "awsRegion": "eu-west-1",
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("an SQS event fixture decodes")
}

/// The message ids a batch response reports failed, in order.
pub fn failed_ids(response: &aws_lambda_events::sqs::SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

/// A response's status and JSON body, whichever API Gateway payload it is.
pub trait JsonResponse {
    fn status(&self) -> i64;
    fn body_json(&self) -> Value;
}

fn body_json(body: Option<&Body>) -> Value {
    match body {
        Some(Body::Text(t)) => serde_json::from_str(t).expect("a JSON body"),
        Some(Body::Binary(b)) => serde_json::from_slice(b).expect("a JSON body"),
        _ => Value::Null,
    }
}

impl JsonResponse for ApiGatewayV2httpResponse {
    fn status(&self) -> i64 {
        self.status_code
    }
    fn body_json(&self) -> Value {
        body_json(self.body.as_ref())
    }
}

impl JsonResponse for ApiGatewayProxyResponse {
    fn status(&self) -> i64 {
        self.status_code
    }
    fn body_json(&self) -> Value {
        body_json(self.body.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_fixtures_decode_as_api_gateway_sends_them() {
        let c = ws_connect_event("AAAA1234=", Some("tok"), &[]);
        assert_eq!(c.request_context.route_key.as_deref(), Some("$connect"));
        assert_eq!(
            c.request_context.connection_id.as_deref(),
            Some("AAAA1234=")
        );
        assert_eq!(c.query_string_parameters.first("token"), Some("tok"));
        let m = ws_message_event("AAAA1234=", r#"{"action":"ping"}"#);
        assert_eq!(m.request_context.event_type.as_deref(), Some("MESSAGE"));
        assert_eq!(m.body.as_deref(), Some(r#"{"action":"ping"}"#));
        let h = http_event(
            "POST",
            "/sync/status?band=demo&limit=2",
            &[("Authorization", "x")],
            None,
        );
        assert_eq!(h.request_context.http.method, http::Method::POST);
        assert_eq!(h.query_string_parameters.first("limit"), Some("2"));
        assert_eq!(
            h.headers.get("authorization").unwrap().to_str().unwrap(),
            "x"
        );
    }
}
