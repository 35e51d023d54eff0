//! The documents generated from the contract's types: the JSON Schema of every frame,
//! event and HTTP body, the AsyncAPI 3.0 document of the WebSocket API and the OpenAPI
//! 3.1 document of the HTTP API. They are checked in under `shared/schema/` for clients
//! to be typed from; `tests::the_checked_in_documents_match_the_code` fails when a type
//! changed and they were not written again (`cargo run -p bandsync --example gen-docs`,
//! or `BANDSYNC_BLESS=1 cargo test -p bandsync wire::docs`).

use super::events::EventKind;
use super::frames::{ClientRequest, ServerFrame};
use super::http;
use crate::api::ROUTES;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

/// Where the documents live, relative to the `bandsync` crate (`shared/`).
pub const JSON_SCHEMA_FILE: &str = "schema/bandsync.schema.json";
pub const ASYNCAPI_FILE: &str = "schema/asyncapi.json";
pub const OPENAPI_FILE: &str = "schema/openapi.json";

/// How to write the documents again.
pub const REGENERATE: &str = "run `cargo run -p bandsync --example gen-docs` \
     (or `BANDSYNC_BLESS=1 cargo test -p bandsync wire::docs`) to regenerate them";

/// Every document, as (path relative to `shared/`, pretty JSON with a final newline).
pub fn documents() -> Vec<(&'static str, String)> {
    [
        (JSON_SCHEMA_FILE, json_schema()),
        (ASYNCAPI_FILE, asyncapi()),
        (OPENAPI_FILE, openapi()),
    ]
    .into_iter()
    .map(|(path, doc)| {
        // Rendering a Value cannot fail.
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        (path, text + "\n")
    })
    .collect()
}

/// The schemas of every type of the contract, their references pointing at `path`
/// (`/$defs`, `/components/schemas`). What clients send is described as the server reads
/// it (a field with a default may be left out), what they receive as the server writes
/// it (a field is left out only where the server leaves it out).
fn definitions(path: &str) -> Map<String, Value> {
    let generator = |settings: SchemaSettings| {
        settings
            .with(|s| {
                s.definitions_path = path.to_owned().into();
                s.meta_schema = None;
            })
            .into_generator()
    };
    let mut sent = generator(SchemaSettings::draft2020_12().for_deserialize());
    sent.subschema_for::<ClientRequest>();
    sent.subschema_for::<http::SyncRequestBody>();
    sent.subschema_for::<http::BandBody>();
    sent.subschema_for::<http::SourceBody>();
    let mut received = generator(SchemaSettings::draft2020_12().for_serialize());
    received.subschema_for::<ServerFrame>();
    received.subschema_for::<EventKind>();
    add_responses(&mut received);
    let mut defs = sent.take_definitions(true);
    for (name, schema) in received.take_definitions(true) {
        // A type both read and written must be described the same both ways.
        if let Some(other) = defs.get(&name) {
            assert_eq!(
                other, &schema,
                "{name} is described differently read and written"
            );
        }
        defs.insert(name, schema);
    }
    // On the wire a client frame may carry a `ref`, which every reply echoes.
    if let Some(request) = defs.remove("ClientRequest") {
        defs.insert("ClientFrame".into(), with_ref(request));
    }
    defs
}

fn add_responses(g: &mut SchemaGenerator) {
    g.subschema_for::<http::Health>();
    g.subschema_for::<http::Status>();
    g.subschema_for::<http::TriggerAccepted>();
    g.subschema_for::<http::OperationList>();
    g.subschema_for::<http::OperationDetail>();
    g.subschema_for::<http::Stats>();
    g.subschema_for::<http::ConfigView>();
    g.subschema_for::<crate::model::Source>();
    g.subschema_for::<http::ErrorBody>();
    g.subschema_for::<http::WebhookAnswer>();
    g.subschema_for::<http::EntityView>();
    g.subschema_for::<http::EntityList>();
    g.subschema_for::<http::EntityHistory>();
    g.subschema_for::<http::ConflictList>();
    g.subschema_for::<http::PresenceList>();
    g.subschema_for::<http::RebuildReport>();
    g.subschema_for::<http::ParkedList>();
    // Written as stored; also what operators send (read with the same defaults).
    g.subschema_for::<crate::entities::types::EntityType>();
}

fn ref_schema() -> Value {
    json!({"description": "Any JSON value; echoed as the `ref` of every reply to this frame."})
}

/// The client frames: each action's fields and an optional `ref`.
fn with_ref(mut request: Value) -> Value {
    if let Some(Value::Array(variants)) = request.get_mut("oneOf") {
        for variant in variants {
            if let Some(Value::Object(props)) = variant.get_mut("properties") {
                props.insert("ref".into(), ref_schema());
            }
        }
    }
    if let Some(d) = request.get_mut("description") {
        *d = json!("A frame a client sends: an `action`, its fields, and an optional `ref`.");
    }
    request
}

/// The variants of a tagged enum's schema, by the value of their tag.
fn variants<'a>(schema: &'a Value, tag: &str) -> Vec<(String, &'a Value)> {
    let list = schema.get("oneOf").and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .filter_map(|v| {
            let name = v.pointer(&format!("/properties/{tag}/const"))?.as_str()?;
            Some((name.to_owned(), v))
        })
        .collect()
}

fn json_schema() -> Value {
    let defs = definitions("/$defs");
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "bandsync client contract",
        "description": "Every WebSocket frame a client sends (ClientFrame) or receives \
            (ServerFrame, whose `event` frames carry an EventKind), and the HTTP API's \
            bodies. Generated from bandsync::wire; do not edit.",
        "oneOf": [{"$ref": "#/$defs/ClientFrame"}, {"$ref": "#/$defs/ServerFrame"}],
        "$defs": defs,
    })
}

/// Message ids for AsyncAPI: `sync_request` stays, `calendar.event.created` becomes
/// `calendar_event_created`.
fn message_id(name: &str) -> String {
    name.replace('.', "_")
}

fn asyncapi() -> Value {
    let defs = definitions("/components/schemas");
    let mut messages = Map::new();
    let mut operations = Map::new();
    let channel = json!({"$ref": "#/channels/socket"});
    let message_ref = |id: &str| json!({"$ref": format!("#/channels/socket/messages/{id}")});
    let server = defs.get("ServerFrame").cloned().unwrap_or_default();
    let server_frames = variants(&server, "type");
    for (kind, schema) in &server_frames {
        if kind == "event" {
            continue;
        }
        messages.insert(
            kind.clone(),
            json!({"name": kind, "title": format!("`{kind}` frame"), "payload": schema}),
        );
    }
    let event_schema = defs.get("Event").cloned().unwrap_or_default();
    let mut event_ids = Vec::new();
    for (name, variant) in variants(&event_schema, "event") {
        let id = message_id(&name);
        messages.insert(
            id.clone(),
            json!({
                "name": name,
                "title": format!("`{name}` event"),
                "summary": variant.get("description"),
                "payload": event_frame(&event_schema, variant),
            }),
        );
        event_ids.push(id);
    }
    let client = defs.get("ClientFrame").cloned().unwrap_or_default();
    for (action, schema) in variants(&client, "action") {
        let replies: &[&str] = match action.as_str() {
            "subscribe" => &["subscribed", "error"],
            "unsubscribe" => &["unsubscribed", "error"],
            "resume" => &["resumed", "error"],
            "ping" => &["pong", "error"],
            "register_device" => &["device", "error"],
            "push" => &["push_result", "error"],
            "presence" => &["presence", "error"],
            _ => &["ack", "error"],
        };
        messages.insert(
            action.clone(),
            json!({"name": action, "title": format!("`{action}` request"), "payload": schema}),
        );
        operations.insert(
            action.clone(),
            json!({
                "action": "receive",
                "channel": channel,
                "summary": schema.get("description"),
                "messages": [message_ref(&action)],
                "reply": {
                    "channel": channel,
                    "messages": replies.iter().map(|r| message_ref(r)).collect::<Vec<_>>(),
                },
            }),
        );
    }
    operations.insert(
        "events".into(),
        json!({
            "action": "send",
            "channel": channel,
            "summary": "The events of the channels the connection subscribed to, in seq order per channel.",
            "messages": event_ids.iter().map(|id| message_ref(id)).collect::<Vec<_>>(),
        }),
    );
    let channel_messages: Map<String, Value> = messages
        .keys()
        .map(|id| {
            (
                id.clone(),
                json!({"$ref": format!("#/components/messages/{id}")}),
            )
        })
        .collect();
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "bandsync WebSocket API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The server's side of the WebSocket: it receives a client's \
                frames (JSON text, tagged by `action`) and sends replies and events (tagged \
                by `type`). Connect with the member's token as the `token` query parameter. \
                A `push` may be answered by several `push_result` frames with its `ref` \
                (the server posts at most 128 KB a frame): they come in order, each but the \
                last with `more: true`. A `duplicate` verdict has no `fields` (the client \
                has the entity from its events or a snapshot), nor has a verdict too large \
                for a frame on its own (read the entity over HTTP). \
                Generated from bandsync::wire; do not edit.",
        },
        "defaultContentType": "application/json",
        "channels": {
            "socket": {
                "address": "/",
                "title": "The WebSocket connection",
                "messages": channel_messages,
                "bindings": {"ws": {
                    "query": {
                        "type": "object",
                        "properties": {"token": {"type": "string", "description": "The member's JWT (HS256)."}},
                        "required": ["token"],
                    },
                }},
            },
        },
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": defs,
        },
    })
}

/// The `event` frame of one event kind: `type`, the envelope's fields, and the kind's
/// `event` and `data`.
fn event_frame(envelope: &Value, variant: &Value) -> Value {
    let mut frame = envelope.clone();
    if let Some(obj) = frame.as_object_mut() {
        obj.remove("oneOf");
        obj.remove("description");
    }
    let merge = |frame: &mut Value, key: &str, from: &Value| {
        if let (Some(Value::Object(to)), Some(Value::Object(add))) =
            (frame.get_mut(key), from.get(key))
        {
            to.extend(add.clone());
        }
    };
    merge(&mut frame, "properties", variant);
    if let (Some(Value::Array(to)), Some(Value::Array(add))) =
        (frame.get_mut("required"), variant.get("required"))
    {
        to.extend(add.clone());
    }
    merge(
        &mut frame,
        "properties",
        &json!({"properties": {"type": {"const": "event", "type": "string"}}}),
    );
    if let Some(Value::Array(required)) = frame.get_mut("required") {
        required.insert(0, json!("type"));
    }
    frame
}

/// What OpenAPI says of one route: its summary, request body, answers and whether it
/// needs a token.
struct Route {
    summary: &'static str,
    query: &'static [(&'static str, bool, &'static str)],
    body: Option<Value>,
    ok: (u16, Option<&'static str>),
    /// Answers besides `ok` and the refusals: (status, schema, description).
    also: &'static [(u16, &'static str, &'static str)],
    token: bool,
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn route(key: &str) -> Option<Route> {
    const BAND: (&str, bool, &str) = ("band", true, "The band (the token must grant it).");
    let r = |summary, query, body, ok, token| {
        Some(Route {
            summary,
            query,
            body,
            ok,
            also: &[],
            token,
        })
    };
    let body = |name: &str| Some(schema_ref(name));
    match key {
        "GET /sync/status" => r(
            "A band's configuration, sources, push channels, log head and last operation.",
            &[BAND],
            None,
            (200, Some("Status")),
            true,
        ),
        "POST /sync/trigger" => r(
            "Queue a sync of a band's sources (like the WebSocket's `sync_request`).",
            &[],
            body("SyncRequestBody"),
            (202, Some("TriggerAccepted")),
            true,
        ),
        "GET /sync/operations" => r(
            "A band's latest operations, newest first.",
            &[BAND, ("limit", false, "How many (1..=100, default 20).")],
            None,
            (200, Some("OperationList")),
            true,
        ),
        "GET /sync/operations/{id}" => r(
            "One operation and a page of its items, in n order (another band's is not found).",
            &[
                (
                    "after",
                    false,
                    "The `next` of the previous page: items with a greater n.",
                ),
                ("limit", false, "How many items (1..=1000, default 1000)."),
            ],
            None,
            (200, Some("OperationDetail")),
            true,
        ),
        "GET /sync/health" => r(
            "Whether the service's dependencies are up (no token needed; 503 when not).",
            &[],
            None,
            (200, Some("Health")),
            false,
        )
        .map(|r| Route {
            also: &[(503, "Health", "Degraded: a dependency is down.")],
            ..r
        }),
        "GET /sync/stats" => r(
            "Figures over a band's latest operations, and the verdicts members' mutations got per entity type and policy (counted as they are committed).",
            &[BAND],
            None,
            (200, Some("Stats")),
            true,
        ),
        "PUT /sync/bands/{band}" => r(
            "Operator: register a band or change its name and file types.",
            &[],
            body("BandBody"),
            (200, Some("ConfigView")),
            true,
        ),
        "PUT /sync/bands/{band}/credentials" => r(
            "Operator: store the band's Google credentials file (sealed; never shown again).",
            &[],
            Some(json!({
                "type": "object",
                "description": "A Google credentials file: an OAuth client's `authorized_user` file or a service-account key.",
                "properties": {"type": {"enum": ["authorized_user", "service_account"]}},
                "required": ["type"],
            })),
            (204, None),
            true,
        ),
        "DELETE /sync/bands/{band}/credentials" => r(
            "Operator: forget the band's Google credentials.",
            &[],
            None,
            (204, None),
            true,
        ),
        "PUT /sync/bands/{band}/sources/{source}" => r(
            "Operator: create or change a source (moving it resets its sync cursor).",
            &[],
            body("SourceBody"),
            (200, Some("Source")),
            true,
        ),
        "DELETE /sync/bands/{band}/sources/{source}" => {
            r("Operator: delete a source.", &[], None, (204, None), true)
        }
        "PUT /sync/bands/{band}/entity-types/{type}" => r(
            "Operator: declare or redefine one of the band's entity types (its fields' policies; `name` may be left out, the path names it); answered with it as stored.",
            &[],
            body("EntityType"),
            (200, Some("EntityType")),
            true,
        ),
        "POST /sync/bands/{band}/entities/rebuild" => r(
            "Operator: one page of the band's entities rebuilt from their history and compared with the state stored (reads only). `matched` false lists the entities that differ; `partial` counts those whose oldest versions the history retention pruned, replayed from their oldest kept version. Follow `next` for the rest of the band.",
            &[
                (
                    "after",
                    false,
                    "`<type>/<id>`: the `next` of the previous page.",
                ),
                ("limit", false, "How many entities (1..=1000, default 500)."),
            ],
            None,
            (200, Some("RebuildReport")),
            true,
        ),
        "GET /sync/entities" => r(
            "A page of the band's entities (deleted ones too) in (type, id) order, with the band channel's seq and epoch read before it: resume from there, applying an event only when its version is newer.",
            &[
                BAND,
                ("type", false, "One entity type only."),
                (
                    "after",
                    false,
                    "`<type>/<id>`: the `next` of the previous page.",
                ),
                ("limit", false, "How many (1..=1000, default 100)."),
                (
                    "device",
                    false,
                    "The member's device: only the entity types its categories ask for (selective sync).",
                ),
            ],
            None,
            (200, Some("EntityList")),
            true,
        ),
        "GET /sync/entities/{type}/{id}" => r(
            "One entity as it is now (a deleted one too, with `deleted`: true).",
            &[BAND],
            None,
            (200, Some("EntityView")),
            true,
        ),
        "GET /sync/entities/{type}/{id}/history" => r(
            "An entity's versions, oldest first: who, when, which mutation, what changed, how the policies decided.",
            &[
                BAND,
                (
                    "after",
                    false,
                    "A version: the `next` of the previous page.",
                ),
            ],
            None,
            (200, Some("EntityHistory")),
            true,
        ),
        "GET /sync/conflicts" => r(
            "The band's conflicts, newest first, open and resolved, with counts per entity type and policy.",
            &[BAND],
            None,
            (200, Some("ConflictList")),
            true,
        ),
        "GET /sync/presence" => r(
            "The band's members online now: listed from their `presence.joined` to their `presence.left` (with 0 devices while the debounce runs). The same body as the `presence` frame.",
            &[BAND],
            None,
            (200, Some("PresenceList")),
            true,
        ),
        "GET /sync/devices/{device}/parked" => r(
            "The member's own device's rejected (parked) mutations in the band, newest first: the mutation as pushed, its code and message, when. Another member's device is `forbidden`. Retry one with a new push under a new mid.",
            &[
                BAND,
                (
                    "before",
                    false,
                    "A mid: the `next` of the previous page (older ones follow).",
                ),
                ("limit", false, "How many (1..=200, default 50)."),
            ],
            None,
            (200, Some("ParkedList")),
            true,
        ),
        "DELETE /sync/devices/{device}/parked/{mid}" => r(
            "Dismiss a parked mutation of the member's own device: it is no longer listed (the mid keeps its verdict). 204 whether or not it was still listed, so a repeat is harmless.",
            &[BAND],
            None,
            (204, None),
            true,
        ),
        _ => None,
    }
}

fn openapi() -> Value {
    let mut paths = Map::new();
    for key in ROUTES {
        let (method, path) = key.split_once(' ').unwrap_or(("GET", key));
        // Every route the API serves is documented: a new one fails the test here.
        let route = route(key).unwrap_or_else(|| panic!("{key} has no OpenAPI description"));
        let mut parameters: Vec<Value> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                let schema = match name {
                    "band" => schema_ref("BandId"),
                    "source" => schema_ref("SourceId"),
                    "type" => schema_ref("EntityTypeName"),
                    _ => json!({"type": "string"}),
                };
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        for (name, required, description) in route.query {
            let schema = match (*name, path) {
                ("band", _) => schema_ref("BandId"),
                ("type", _) => schema_ref("EntityTypeName"),
                ("device", _) => schema_ref("DeviceId"),
                ("after", "/sync/entities" | "/sync/bands/{band}/entities/rebuild") => {
                    json!({"type": "string"})
                }
                ("after", "/sync/operations/{id}") => {
                    json!({"type": "integer", "minimum": 0, "maximum": u32::MAX})
                }
                ("after", _) => json!({"type": "integer", "minimum": 0}),
                (
                    "limit",
                    "/sync/entities"
                    | "/sync/bands/{band}/entities/rebuild"
                    | "/sync/operations/{id}",
                ) => {
                    json!({"type": "integer", "minimum": 1, "maximum": 1000})
                }
                _ => json!({"type": "integer", "minimum": 1, "maximum": 100}),
            };
            parameters.push(json!({"name": name, "in": "query", "required": required,
                "description": description, "schema": schema}));
        }
        let (status, answer) = route.ok;
        let mut ok = json!({"description": if answer.is_some() { "OK" } else { "No content" }});
        if let Some(name) = answer {
            ok["content"] = json!({"application/json": {"schema": schema_ref(name)}});
        }
        let mut operation = json!({
            "summary": route.summary,
            "operationId": operation_id(method, path),
            "responses": {
                status.to_string(): ok,
                "default": refusal(),
            },
        });
        for (status, schema, description) in route.also {
            operation["responses"][status.to_string()] = json!({
                "description": description,
                "content": {"application/json": {"schema": schema_ref(schema)}},
            });
        }
        if !parameters.is_empty() {
            operation["parameters"] = json!(parameters);
        }
        if let Some(schema) = route.body {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema}},
            });
        }
        operation["security"] = if route.token {
            json!([{"bearer": []}])
        } else {
            json!([])
        };
        let entry = paths.entry(path.to_owned()).or_insert_with(|| json!({}));
        entry[method.to_ascii_lowercase()] = operation;
    }
    paths.insert("/webhooks/google".into(), webhook());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "bandsync HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Status, sync triggers, operations, health and stats for apps; band, \
                credentials and source registration for operators (tokens with the `admin` \
                claim). Generated from bandsync::wire; do not edit.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": definitions("/components/schemas"),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    })
}

fn refusal() -> Value {
    json!({
        "description": "A refusal: its status and `error.code` say why.",
        "content": {"application/json": {"schema": schema_ref("ErrorBody")}},
    })
}

/// Google's push notifications (not one of the API's routes: its own function). Google
/// sends no body; the headers say which channel and what happened.
fn webhook() -> Value {
    use crate::webhook::{
        H_CHANNEL_ID, H_CHANNEL_TOKEN, H_MESSAGE_NUMBER, H_RESOURCE_ID, H_RESOURCE_STATE,
    };
    let headers = [
        (
            H_CHANNEL_ID,
            true,
            "The watch channel's id (one bandsync opened).",
        ),
        (
            H_CHANNEL_TOKEN,
            true,
            "The channel's token, checked against its stored hash.",
        ),
        (
            H_RESOURCE_ID,
            true,
            "The watched resource, checked against the channel's.",
        ),
        (
            H_RESOURCE_STATE,
            true,
            "`sync` for the handshake; `add`, `update`, `change`, ... for a change.",
        ),
        (
            H_MESSAGE_NUMBER,
            true,
            "Google's message number (a repeat is a duplicate).",
        ),
    ];
    let parameters: Vec<Value> = headers
        .iter()
        .map(|(name, required, description)| {
            json!({"name": name, "in": "header", "required": required,
                "description": description, "schema": {"type": "string"}})
        })
        .collect();
    json!({"post": {
        "summary": "Google's push notification of a watched source: queue its sync (answered as soon as it is queued).",
        "operationId": "post_webhooks_google",
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "Accepted",
                "content": {"application/json": {"schema": schema_ref("WebhookAnswer")}},
            },
            "default": refusal(),
        },
        "security": [],
    }})
}

/// `GET /sync/operations/{id}` -> `get_sync_operations_id`.
fn operation_id(method: &str, path: &str) -> String {
    let segments: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_start_matches('{').trim_end_matches('}'))
        .collect();
    format!("{}_{}", method.to_ascii_lowercase(), segments.join("_"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_checked_in_documents_match_the_code() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let bless = std::env::var_os("BANDSYNC_BLESS").is_some();
        let mut stale = Vec::new();
        for (path, text) in documents() {
            let file = root.join(path);
            if bless {
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, &text).unwrap();
                continue;
            }
            if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
                stale.push(path);
            }
        }
        assert!(
            stale.is_empty(),
            "{} no longer match the wire types: {REGENERATE}",
            stale.join(", ")
        );
    }

    #[test]
    fn every_frame_event_and_route_is_documented() {
        let defs = definitions("/$defs");
        let actions: Vec<String> = variants(&defs["ClientFrame"], "action")
            .into_iter()
            .map(|(a, _)| a)
            .collect();
        assert_eq!(actions, ClientRequest::ACTIONS);
        let events: Vec<String> = variants(&defs["Event"], "event")
            .into_iter()
            .map(|(e, _)| e)
            .collect();
        assert_eq!(events, EventKind::NAMES);
        let frames: Vec<String> = variants(&defs["ServerFrame"], "type")
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(
            frames,
            [
                "event",
                "subscribed",
                "unsubscribed",
                "skipped",
                "resumed",
                "pong",
                "ack",
                "error",
                "device",
                "push_result",
                "presence"
            ]
        );
        let openapi = openapi();
        for key in ROUTES {
            let (method, path) = key.split_once(' ').unwrap();
            assert!(
                openapi["paths"][path][method.to_ascii_lowercase()].is_object(),
                "{key}"
            );
        }
        let asyncapi = asyncapi();
        for id in ClientRequest::ACTIONS {
            assert!(asyncapi["operations"][id].is_object(), "{id}");
        }
        for name in EventKind::NAMES {
            assert!(
                asyncapi["components"]["messages"][message_id(name)].is_object(),
                "{name}"
            );
        }
    }

    #[test]
    fn every_reference_resolves() {
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        for doc in [json_schema(), asyncapi(), openapi()] {
            let mut all = Vec::new();
            refs(&doc, &mut all);
            for r in all {
                let pointer = r.trim_start_matches('#');
                assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
            }
        }
    }
}
