//! Selective sync: what a device asks to be sent (`register_device`'s `categories`),
//! and which events that covers.
//!
//! A device with no categories is sent everything. Otherwise an event is sent when one
//! of its categories covers it; an event of a name no category knows (a kind added
//! after this vocabulary, such as a membership change) is sent to everyone, so nothing
//! critical is ever filtered out by a device that asked before it existed.
//!
//! | category        | covers                                                             |
//! |-----------------|--------------------------------------------------------------------|
//! | `files`         | every `file.*` event                                               |
//! | `charts`        | `file.*` of a sheet or chart (pdf, musicxml, mxl, mscz, gp, chordpro...) |
//! | `recordings`    | `file.*` of an audio or video file (mp3, wav, m4a, flac, mp4, mov...) |
//! | `setlists`      | `setlist.*`, and entity/conflict events of type `setlist_entry`    |
//! | `calendar`      | `calendar.*`, and entity/conflict events of type `attendance`      |
//! | `entities`      | every `entity.*` and `conflict.*` event                            |
//! | `entity:<type>` | `entity.*` and `conflict.*` events of that entity type             |
//! | `sync`          | `sync.*` (a source's sync jobs)                                    |
//! | `presence`      | `presence.*`                                                       |
//!
//! A file's kind is read from the extension of its `name` (the only thing every file
//! source reports alike).

use crate::error::{ErrorCode, Refusal};
use crate::model::{EntityTypeName, Event};

/// Every category name but the `entity:<type>` family.
pub const NAMES: &[&str] = &[
    "files",
    "charts",
    "recordings",
    "setlists",
    "calendar",
    "entities",
    "sync",
    "presence",
];

/// The prefix of the per-type family, `entity:setlist_entry`.
pub const ENTITY_PREFIX: &str = "entity:";

const CHART_EXTENSIONS: &[&str] = &[
    "pdf", "musicxml", "mxl", "xml", "mscz", "mscx", "gp", "gpx", "gp3", "gp4", "gp5", "ptb",
    "chordpro", "cho", "crd", "pro", "abc", "ly", "mid", "midi",
];

const RECORDING_EXTENSIONS: &[&str] = &[
    "mp3", "wav", "m4a", "aac", "flac", "ogg", "oga", "opus", "aif", "aiff", "wma", "mp4", "mov",
    "m4v", "webm", "mkv", "avi",
];

/// Check every category of a `register_device` (an unknown one is `invalid_request`,
/// naming it and the vocabulary).
pub fn check(categories: &[String]) -> Result<(), Refusal> {
    for (i, c) in categories.iter().enumerate() {
        if NAMES.contains(&c.as_str()) {
            continue;
        }
        if let Some(t) = c.strip_prefix(ENTITY_PREFIX) {
            if EntityTypeName::parse(t).is_ok() {
                continue;
            }
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                format!("register_device: categories[{i}] {c:?} does not name a valid entity type"),
            ));
        }
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            format!(
                "register_device: categories[{i}] {c:?} is not a category; use one of {} or entity:<type>",
                NAMES.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Is `event` sent to a device that asked for `categories`? Empty: everything.
pub fn wants(categories: &[String], event: &Event) -> bool {
    if categories.is_empty() {
        return true;
    }
    match crate::wire::events::family(event.event()) {
        "file" => {
            let kind = file_kind(event);
            categories.iter().any(|c| match c.as_str() {
                "files" => true,
                "charts" => kind == FileKind::Chart,
                "recordings" => kind == FileKind::Recording,
                _ => false,
            })
        }
        "entity" | "conflict" => {
            let entity_type = event
                .data()
                .get("type")
                .and_then(|t| t.as_str())
                .unwrap_or("");
            categories.iter().any(|c| match c.as_str() {
                "entities" => true,
                "setlists" => entity_type == "setlist_entry",
                "calendar" => entity_type == "attendance",
                other => other.strip_prefix(ENTITY_PREFIX) == Some(entity_type),
            })
        }
        "setlist" => has(categories, "setlists"),
        "calendar" => has(categories, "calendar"),
        "sync" => has(categories, "sync"),
        "presence" => has(categories, "presence"),
        // A kind no category knows is sent to everyone.
        _ => true,
    }
}

/// What a connection with `categories` is sent of `events` (in seq order): an event
/// (its index), or one [`Slot::Skipped`] in place of each run of events left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Event(usize),
    Skipped {
        from_seq: u64,
        to_seq: u64,
        count: u64,
    },
}

pub fn slots(categories: &[String], events: &[Event]) -> Vec<Slot> {
    let mut out = Vec::new();
    let mut run: Option<Slot> = None;
    for (i, event) in events.iter().enumerate() {
        if wants(categories, event) {
            out.extend(run.take());
            out.push(Slot::Event(i));
        } else {
            run = Some(match run {
                Some(Slot::Skipped {
                    from_seq, count, ..
                }) => Slot::Skipped {
                    from_seq,
                    to_seq: event.seq,
                    count: count + 1,
                },
                _ => Slot::Skipped {
                    from_seq: event.seq,
                    to_seq: event.seq,
                    count: 1,
                },
            });
        }
    }
    out.extend(run);
    out
}

/// The entity types `categories` asks for, for the `GET /sync/entities` snapshot:
/// `None` is every type.
pub fn entity_types(categories: &[String]) -> Option<Vec<String>> {
    if categories.is_empty() || has(categories, "entities") {
        return None;
    }
    let mut types = Vec::new();
    for c in categories {
        let t = match c.as_str() {
            "setlists" => "setlist_entry",
            "calendar" => "attendance",
            other => match other.strip_prefix(ENTITY_PREFIX) {
                Some(t) => t,
                None => continue,
            },
        };
        if !types.iter().any(|x: &String| x == t) {
            types.push(t.to_owned());
        }
    }
    Some(types)
}

fn has(categories: &[String], name: &str) -> bool {
    categories.iter().any(|c| c == name)
}

#[derive(Debug, PartialEq, Eq)]
enum FileKind {
    Chart,
    Recording,
    Other,
}

fn file_kind(event: &Event) -> FileKind {
    let name = event
        .data()
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or("");
    let Some((_, ext)) = name.rsplit_once('.') else {
        return FileKind::Other;
    };
    let ext = ext.to_ascii_lowercase();
    if CHART_EXTENSIONS.contains(&ext.as_str()) {
        FileKind::Chart
    } else if RECORDING_EXTENSIONS.contains(&ext.as_str()) {
        FileKind::Recording
    } else {
        FileKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChannelName;
    use chrono::Utc;
    use serde_json::{Value, json};

    fn event(name: &str, data: Value) -> Event {
        serde_json::from_value(json!({
            "channel": "band:demo", "seq": 1, "epoch": "e1", "id": "x",
            "event": name, "ts": Utc::now(), "data": data,
        }))
        .unwrap()
    }

    fn file(name: &str) -> Event {
        event(
            "file.created",
            json!({"name": name, "path": format!("/{name}")}),
        )
    }

    fn cats(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_wants_everything() {
        let _ = ChannelName::parse("band:demo").unwrap();
        for e in [
            file("a.pdf"),
            event("sync.started", json!({})),
            event("entity.created", json!({"type": "song_status"})),
        ] {
            assert!(wants(&[], &e));
        }
    }

    #[test]
    fn setlist_only_device() {
        let c = cats(&["setlists"]);
        assert!(!wants(&c, &file("take1.mp3")));
        assert!(!wants(&c, &file("chart.pdf")));
        assert!(!wants(&c, &event("sync.progress", json!({}))));
        assert!(!wants(&c, &event("calendar.event.created", json!({}))));
        assert!(wants(&c, &event("setlist.updated", json!({}))));
        assert!(wants(
            &c,
            &event("entity.updated", json!({"type": "setlist_entry"}))
        ));
        assert!(wants(
            &c,
            &event("conflict.opened", json!({"type": "setlist_entry"}))
        ));
        assert!(!wants(
            &c,
            &event("entity.updated", json!({"type": "song_status"}))
        ));
        // A kind no category knows reaches everyone.
        assert!(wants(&c, &event("member.removed", json!({}))));
    }

    #[test]
    fn files_by_kind() {
        let charts = cats(&["charts"]);
        let recordings = cats(&["recordings"]);
        let files = cats(&["files"]);
        assert!(wants(&charts, &file("Song.PDF")));
        assert!(wants(&charts, &file("song.musicxml")));
        assert!(!wants(&charts, &file("song.mp3")));
        assert!(wants(&recordings, &file("take.m4a")));
        assert!(wants(&recordings, &file("gig.mov")));
        assert!(!wants(&recordings, &file("notes.pdf")));
        assert!(!wants(&charts, &file("README")));
        assert!(wants(&files, &file("README")));
        assert!(wants(&files, &file("x.mp3")));
    }

    #[test]
    fn entity_types_and_families() {
        let c = cats(&["entity:annotation", "calendar", "sync"]);
        assert!(wants(
            &c,
            &event("entity.created", json!({"type": "annotation"}))
        ));
        assert!(wants(
            &c,
            &event("entity.created", json!({"type": "attendance"}))
        ));
        assert!(!wants(
            &c,
            &event("entity.created", json!({"type": "setlist_entry"}))
        ));
        assert!(wants(&c, &event("calendar.event.cancelled", json!({}))));
        assert!(wants(&c, &event("sync.completed", json!({}))));
        assert!(wants(
            &cats(&["entities"]),
            &event("conflict.resolved", json!({"type": "x"}))
        ));
        assert!(!wants(&cats(&["presence"]), &file("a.pdf")));
        assert!(wants(
            &cats(&["presence"]),
            &event("presence.joined", json!({}))
        ));
    }

    #[test]
    fn runs_of_left_out_events_become_one_slot_each() {
        let mut events = vec![
            file("a.mp3"),
            file("b.mp3"),
            event("setlist.updated", json!({})),
            file("c.mp3"),
        ];
        for (i, e) in events.iter_mut().enumerate() {
            *e = serde_json::from_value(json!({
                "channel": "band:demo", "seq": 10 + i as u64, "epoch": "e1", "id": "x",
                "event": e.event(), "ts": e.ts, "data": e.data(),
            }))
            .unwrap();
        }
        assert_eq!(
            slots(&cats(&["setlists"]), &events),
            vec![
                Slot::Skipped {
                    from_seq: 10,
                    to_seq: 11,
                    count: 2
                },
                Slot::Event(2),
                Slot::Skipped {
                    from_seq: 13,
                    to_seq: 13,
                    count: 1
                },
            ]
        );
        assert_eq!(
            slots(&[], &events),
            (0..4).map(Slot::Event).collect::<Vec<_>>()
        );
    }

    #[test]
    fn snapshot_types() {
        assert_eq!(entity_types(&[]), None);
        assert_eq!(entity_types(&cats(&["entities", "setlists"])), None);
        assert_eq!(
            entity_types(&cats(&[
                "setlists",
                "entity:annotation",
                "entity:setlist_entry",
                "files"
            ])),
            Some(cats(&["setlist_entry", "annotation"]))
        );
        assert_eq!(entity_types(&cats(&["files"])), Some(vec![]));
    }

    #[test]
    fn check_refuses_unknown() {
        assert!(check(&cats(&["setlists", "entity:setlist_entry", "files"])).is_ok());
        for bad in ["setlist", "entity:", "entity:a b", "FILES"] {
            let err = check(&cats(&[bad])).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest, "{bad}");
            assert!(err.message.contains(bad), "{}", err.message);
        }
    }
}
