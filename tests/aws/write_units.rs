//! What one member's mutation costs in DynamoDB write units: the push service commits
//! realistic `setlist_entry` mutations through the DynamoDB adapter on moto, and the
//! items each commit wrote (the table read before and after, in this test only) are sized
//! as DynamoDB sizes items. A TransactWriteItems write costs 2 WCU per KB (rounded up)
//! of each item; an update, of the larger of the item before and after. moto reports no
//! consumed capacity, so the units are computed from the sizes; on AWS the adapter adds
//! up what DynamoDB reports (`DynamoStore::commit_cost`).

use crate::schema::{PARTITION_KEY, SORT_KEY};
use crate::support::*;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// An item's size as DynamoDB counts it: attribute names and values, a number one byte
/// per two significant digits plus one, a map or list 3 bytes plus one per element.
fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| k.len() + value_size(v) + 1)
                .sum::<usize>()
        }
        AttributeValue::L(l) => 3 + l.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        _ => 0,
    }
}

fn number_size(n: &str) -> usize {
    let digits: String = n.chars().filter(char::is_ascii_digit).collect();
    let significant = digits
        .trim_start_matches('0')
        .trim_end_matches('0')
        .len()
        .max(1);
    significant.div_ceil(2) + 1
}

type Item = std::collections::HashMap<String, AttributeValue>;

fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// Every item of the table by (pk, sk): a test's view of what a commit wrote.
async fn table(ddb: &aws_sdk_dynamodb::Client, name: &str) -> BTreeMap<(String, String), Item> {
    let mut items = BTreeMap::new();
    let mut start = None;
    loop {
        let out = ddb
            .scan()
            .table_name(name)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan the test table");
        for item in out.items() {
            let key = |k: &str| item[k].as_s().expect("string keys").clone();
            items.insert((key(PARTITION_KEY), key(SORT_KEY)), item.clone());
        }
        start = out.last_evaluated_key().cloned();
        if start.is_none() {
            return items;
        }
    }
}

/// The items one commit wrote (new or changed) with their sizes and units.
fn written(
    before: &BTreeMap<(String, String), Item>,
    after: &BTreeMap<(String, String), Item>,
) -> Vec<(String, usize, u64)> {
    after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| {
            let size = item_size(v).max(before.get(k).map_or(0, item_size));
            let units = 2 * size.div_ceil(1024).max(1) as u64;
            (format!("{} / {}", k.0, k.1), size, units)
        })
        .collect()
}

fn entry(mid: u64, id: &str, op: &str, base: u64, fields: Value) -> Value {
    json!({"mid": mid, "type": "setlist_entry", "id": id, "op": op, "base_version": base,
           "fields": fields, "ts": "2026-12-01T20:00:00Z"})
}

#[tokio::test]
async fn one_mutation_costs_the_write_units_of_its_eight_items() {
    let p = MotoPush::new("wcu-conn").await;
    let (ddb, sync_table) = (p.ddb.clone(), p.sync_table.clone());
    // The band's first change also creates its channel's head: not a per-mutation cost.
    let first = p
        .send(vec![entry(
            1,
            "warm-up",
            "create",
            0,
            json!({"title": "Intro"}),
        )])
        .await;
    assert_eq!(first[0]["status"], "applied");

    // A setlist entry as an app creates one, without notes and with a few lines of
    // them (a text field keeps its Yjs document), then a reorder with a play counted.
    let notes = "Count in 4. Horns tacet until the second chorus; ".repeat(4);
    let mutations = [
        entry(
            2,
            "blue-in-green",
            "create",
            0,
            json!({"title": "Blue in Green", "key": "Bb", "position": "V",
                   "tags": {"$add": ["set-1", "ballad"]}, "plays": {"$inc": 1}}),
        ),
        entry(
            3,
            "blue-in-green",
            "patch",
            1,
            json!({"position": "VV", "plays": {"$inc": 1}}),
        ),
        entry(
            4,
            "so-what",
            "create",
            0,
            json!({"title": "So What", "key": "Dm", "position": "W",
                   "tags": {"$add": ["set-1", "modal"]}, "plays": {"$inc": 1}, "notes": notes}),
        ),
        entry(
            5,
            "so-what",
            "patch",
            1,
            json!({"position": "WV", "plays": {"$inc": 1}}),
        ),
    ];
    let mut per_mutation = Vec::new();
    for m in mutations {
        let label = format!(
            "{} {}",
            m["op"].as_str().unwrap(),
            m["id"].as_str().unwrap()
        );
        let before = table(&ddb, &sync_table).await;
        let results = p.send(vec![m]).await;
        assert_eq!(results[0]["status"], "applied", "{results}");
        let after = table(&ddb, &sync_table).await;
        let items = written(&before, &after);
        let units: u64 = items.iter().map(|i| i.2).sum();
        println!("{label}: {} items, {units} WCU", items.len());
        for (key, size, u) in &items {
            println!("  {key}: {size} bytes, {u} WCU");
        }
        // device, receipt, entity, history entry, verdict counters, event, event id,
        // log head
        assert_eq!(items.len(), 8, "{items:#?}");
        assert!(
            items
                .iter()
                .any(|(k, size, u)| k.starts_with("STATS#") && *size < 1024 && *u == 2),
            "the verdict counters are one small item: {items:#?}"
        );
        per_mutation.push((label, units));
    }
    println!("WCU per mutation: {per_mutation:?}");
    // 8 items of at most 1 KB each are 16 units; the entity (its fields with their
    // stamps) and its history entry (the entity after, the input, the decisions) are the
    // items that pass 1 KB. The verdict counters (conflict analytics, bumped in the
    // commit so each verdict counts once) are 2 of them. Without a text field an entry
    // stays within 22; with the notes' Yjs document, within 26.
    let (plain, text) = per_mutation.split_at(2);
    assert!(
        plain.iter().all(|(_, u)| (16..=22).contains(u)),
        "{per_mutation:?}"
    );
    assert!(
        text.iter().all(|(_, u)| (16..=26).contains(u)),
        "{per_mutation:?}"
    );
}
