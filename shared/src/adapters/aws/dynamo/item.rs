//! DynamoDB items as this adapter writes them: string and number attributes, and records
//! as JSON in a `body` attribute beside the keys, as in the embedded store.

use anyhow::{Context as _, anyhow};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn with_body<T: Serialize>(mut item: Item, body: &T) -> anyhow::Result<Item> {
    item.insert(
        "body".into(),
        s(serde_json::to_string(body).context("encoding a record")?),
    );
    Ok(item)
}

pub(super) fn body<T: DeserializeOwned>(item: &Item) -> anyhow::Result<T> {
    let raw = item
        .get("body")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| anyhow!("item has no body"))?;
    serde_json::from_str(raw).context("decoding a record")
}

/// Every item's body, as the ports answer (a bad body is a backend error).
pub(super) fn bodies<T: DeserializeOwned>(items: &[Item]) -> crate::ports::PortResult<Vec<T>> {
    items
        .iter()
        .map(|i| body(i).map_err(crate::ports::PortError::from))
        .collect()
}

pub(super) fn get_u64(item: &Item, name: &str) -> anyhow::Result<Option<u64>> {
    item.get(name)
        .map(|v| {
            v.as_n()
                .map_err(|_| anyhow!("{name} is not a number"))?
                .parse::<u64>()
                .with_context(|| format!("{name} is not a u64"))
        })
        .transpose()
}

pub(super) fn get_str<'a>(item: &'a Item, name: &str) -> anyhow::Result<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| anyhow!("item has no {name}"))
}

/// Fixed width, so string order is time order.
pub(super) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}
