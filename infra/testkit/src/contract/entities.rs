//! The entity store: devices, the (device, mid) receipts, entities conditional on their
//! version, history, conflicts, and each commit's event in the channel log, all or
//! nothing.

use super::*;
use bandsync::entities::mutation::{MutationResult, MutationStatus, Op};
use bandsync::entities::records::{
    Candidate, Commit, CommitError, ConflictRecord, DeviceRecord, EntityRecord, HistoryEntry,
    Platform, Receipt, Resolution,
};
use bandsync::entities::state::{EntityState, FieldEntry, FieldState, Stamp};
use bandsync::error::ErrorCode;
use bandsync::model::{ConflictId, DeviceId, EntityId, EntityTypeName};
use bandsync::ports::EntityStore;
use serde_json::{Value, json};

fn member(name: &str) -> UserId {
    UserId::parse(&format!("{name}@example.com")).expect("a valid user id")
}

fn device_id() -> DeviceId {
    DeviceId::parse(&unique("dev")).expect("a valid device id")
}

fn type_name(name: &str) -> EntityTypeName {
    EntityTypeName::parse(name).expect("a valid entity type")
}

fn entity_id(name: &str) -> EntityId {
    EntityId::parse(name).expect("a valid entity id")
}

fn device(id: &DeviceId, member: &UserId, name: &str) -> DeviceRecord {
    DeviceRecord {
        device: id.clone(),
        member: member.clone(),
        platform: Platform::Ios,
        name: name.into(),
        categories: vec!["setlists".into()],
        next_mid: 1,
        registered_at: Utc::now(),
    }
}

fn stamp(device: &DeviceId, mid: u64) -> Stamp {
    Stamp {
        ms: Utc::now().timestamp_millis(),
        counter: 0,
        device: device.clone(),
        mid,
    }
}

/// One device's writes: it knows its next mid and who it belongs to.
struct Writer {
    device: DeviceId,
    member: UserId,
    band: BandId,
    next_mid: u64,
}

impl Writer {
    /// A fresh device of a fresh member, registered.
    async fn new<S: EntityStore + ?Sized>(store: &S, band: &BandId) -> Self {
        let (device, member) = (device_id(), member(&unique("m")));
        store
            .register_device(&self::device(&device, &member, "phone"))
            .await
            .unwrap();
        Self {
            device,
            member,
            band: band.clone(),
            next_mid: 1,
        }
    }

    fn receipt(&self, mid: u64, status: MutationStatus) -> Receipt {
        let mut result = MutationResult::bare(mid, status);
        if status == MutationStatus::Rejected {
            result.code = Some(ErrorCode::InvalidMutation);
            result.message = Some("refused for good".into());
        }
        Receipt {
            device: self.device.clone(),
            mid,
            band: self.band.clone(),
            member: self.member.clone(),
            at: Utc::now(),
            result,
            parked: (status == MutationStatus::Rejected).then(|| json!({"mid": mid})),
        }
    }

    /// The commit of the device's next mid writing `title` into `(ty, id)` at
    /// `expected + 1`, with its history entry (committed at `at`) and an event on `ch`.
    fn write(
        &self,
        ty: &EntityTypeName,
        id: &EntityId,
        expected: u64,
        title: &str,
        at: DateTime<Utc>,
        ch: Option<&ChannelName>,
    ) -> Commit {
        let mid = self.next_mid;
        let version = expected + 1;
        let stamp = stamp(&self.device, mid);
        let field = FieldEntry {
            state: FieldState::Register {
                value: json!(title),
                stamp: stamp.clone(),
                by: None,
            },
            changed_at: version,
            changed_by: Some(stamp.clone()),
        };
        let entity = EntityRecord {
            band: self.band.clone(),
            entity_type: ty.clone(),
            id: id.clone(),
            version,
            deleted: false,
            created_by: self.member.clone(),
            updated_at: at,
            hlc: stamp.clone(),
            state: EntityState {
                fields: [("title".to_owned(), field)].into(),
                deleted_by: None,
            },
        };
        let history = HistoryEntry {
            band: self.band.clone(),
            entity_type: ty.clone(),
            id: id.clone(),
            version,
            at,
            member: self.member.clone(),
            device: self.device.clone(),
            mid,
            op: if expected == 0 { Op::Create } else { Op::Patch },
            stamp,
            input: [("title".to_owned(), json!(title))].into_iter().collect(),
            diff: Vec::new(),
            decisions: Vec::new(),
            entity: entity.clone(),
        };
        let mut receipt = self.receipt(mid, MutationStatus::Applied);
        receipt.result.version = Some(version);
        Commit {
            device: self.device.clone(),
            mid,
            receipt,
            entity: Some(entity),
            expected_version: expected,
            history: Some(history),
            conflicts: Vec::new(),
            event: ch.map(|ch| (ch.clone(), new_event(&unique("ev"), at))),
            more_events: Vec::new(),
        }
    }

    /// The commit of a refused mutation: only the receipt (parked) and the mid.
    fn reject(&self) -> Commit {
        let mid = self.next_mid;
        Commit {
            device: self.device.clone(),
            mid,
            receipt: self.receipt(mid, MutationStatus::Rejected),
            entity: None,
            expected_version: 0,
            history: None,
            conflicts: Vec::new(),
            event: None,
            more_events: Vec::new(),
        }
    }

    /// Commit and expect it to win; the device moves to its next mid.
    async fn commit<S: EntityStore + ?Sized>(&mut self, store: &S, c: &Commit) -> Option<Event> {
        let event = store.commit(c).await.expect("the commit wins");
        self.next_mid += 1;
        event
    }
}

async fn next_mid<S: EntityStore + ?Sized>(store: &S, device: &DeviceId) -> u64 {
    store
        .get_device(device)
        .await
        .unwrap()
        .expect("a registered device")
        .next_mid
}

async fn version_of<S: EntityStore + ?Sized>(
    store: &S,
    band: &BandId,
    ty: &EntityTypeName,
    id: &EntityId,
) -> Option<u64> {
    let entity = store.get_entity(band, ty, id).await.unwrap();
    entity.map(|e| e.version)
}

/// A commit's receipt as the store keeps it: with the seq its event got.
fn with_seq(receipt: &Receipt, seq: Option<u64>) -> Receipt {
    let mut receipt = receipt.clone();
    receipt.result.seq = seq;
    receipt
}

fn assert_raced<T: std::fmt::Debug>(result: Result<T, CommitError>, what: &str) {
    assert!(
        matches!(result, Err(CommitError::Raced(_))),
        "{what}: raced, got {result:?}"
    );
}

/// Every promise of the entity store but the concurrent one.
pub async fn entity_store_contract<S: EntityStore + ChannelLog + ?Sized>(store: &S) {
    device_registration(store).await;
    commits_are_conditional_and_atomic(store).await;
    rejected_verdicts_are_parked(store).await;
    commits_carry_several_events(store).await;
    settlements_commit_without_a_device(store).await;
    entity_listing_pages(store).await;
    history_and_its_pruning(store).await;
    conflicts(store).await;
    verdicts_are_counted_once_per_commit(store).await;
}

/// Each committed verdict bumps its band's counters in the same write: once (a raced
/// commit counts nothing), per (type, counter), summed over the band's devices.
async fn verdicts_are_counted_once_per_commit<S: EntityStore + ChannelLog + ?Sized>(store: &S) {
    use bandsync::entities::records::Decision;
    let (band, other) = (super::band(), super::band());
    let ch = ChannelName::Band(band.clone());
    let (entry, attendance) = (type_name("setlist_entry"), type_name("attendance"));
    assert!(store.verdict_counts(&band).await.unwrap().is_empty());
    let mut ringo = Writer::new(store, &band).await;
    let mut paul = Writer::new(store, &band).await;
    let now = Utc::now();
    // GIVEN ringo's create (applied), then his patch decided against paul's (merged)
    let create = ringo.write(&entry, &entity_id("e1"), 0, "A", now, Some(&ch));
    ringo.commit(store, &create).await;
    let mut merged = ringo.write(&entry, &entity_id("e1"), 1, "B", now, Some(&ch));
    merged.receipt.result.status = MutationStatus::Merged;
    if let Some(h) = merged.history.as_mut() {
        h.decisions.push(Decision {
            field: "title".into(),
            policy: "lww".into(),
            outcome: "won".into(),
            loser: Some(json!("C")),
        });
    }
    ringo.commit(store, &merged).await;
    // AND the same commit again (a redelivery): raced, counted nothing
    assert_raced(store.commit(&merged).await, "the merged commit again");
    // AND paul's create of another entry and a refused RSVP
    let create = paul.write(&entry, &entity_id("e2"), 0, "D", now, Some(&ch));
    paul.commit(store, &create).await;
    let mut refused = paul.reject();
    refused.receipt.parked = Some(json!({"mid": refused.mid, "type": "attendance"}));
    paul.commit(store, &refused).await;
    // AND a verdict in another band
    let mut elsewhere = Writer::new(store, &other).await;
    let create = elsewhere.write(&entry, &entity_id("e1"), 0, "X", now, None);
    elsewhere.commit(store, &create).await;

    // THEN the band's counters are the verdicts, once each, both devices summed
    let counts: Vec<(String, String, u64)> = store
        .verdict_counts(&band)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.entity_type, c.counter, c.count))
        .collect();
    let row = |t: &EntityTypeName, c: &str, n| (t.to_string(), c.to_owned(), n);
    assert_eq!(
        counts,
        vec![
            row(&attendance, "status:rejected", 1),
            row(&entry, "policy:lww:won", 1),
            row(&entry, "status:applied", 2),
            row(&entry, "status:merged", 1),
        ],
        "per (type, counter), in that order"
    );
    let elsewhere: Vec<_> = store.verdict_counts(&other).await.unwrap();
    assert_eq!(elsewhere.len(), 1, "{elsewhere:?}");
    assert_eq!(elsewhere[0].count, 1);
}

/// First member wins; the same member updates platform, name and categories, never the
/// mid or the registration time.
async fn device_registration<S: EntityStore + ?Sized>(store: &S) {
    let (id, ringo, paul) = (device_id(), member("ringo"), member("paul"));
    assert_eq!(store.get_device(&id).await.unwrap(), None);
    let first = device(&id, &ringo, "drum phone");
    let stored = store.register_device(&first).await.unwrap();
    assert_eq!(stored, first, "stored as given");
    assert_eq!(store.get_device(&id).await.unwrap(), Some(first.clone()));

    let mut again = device(&id, &ringo, "renamed");
    again.platform = Platform::Android;
    again.categories = vec!["charts".into(), "calendar".into()];
    again.next_mid = 99;
    again.registered_at = first.registered_at + secs(60);
    let stored = store.register_device(&again).await.unwrap();
    assert_eq!(
        (&stored.name, stored.platform, &stored.categories),
        (&again.name, again.platform, &again.categories),
        "the same member updates the device"
    );
    assert_eq!(
        (stored.next_mid, stored.registered_at),
        (1, first.registered_at),
        "but never its mid or when it was first registered"
    );

    let taken = store
        .register_device(&device(&id, &paul, "not yours"))
        .await
        .unwrap();
    assert_eq!(taken, stored, "another member changes nothing");
    assert_eq!(taken.member, ringo, "and learns whose it is");
    assert_eq!(store.get_device(&id).await.unwrap(), Some(stored));
}

/// The log's head seq of `ch` (0 when it has none).
async fn head_seq<S: ChannelLog + ?Sized>(log: &S, ch: &ChannelName) -> u64 {
    log.head(ch).await.unwrap().map_or(0, |h| h.seq)
}

async fn commits_are_conditional_and_atomic<S: EntityStore + ChannelLog + ?Sized>(store: &S) {
    let band = band();
    let ch = ChannelName::Band(band.clone());
    let (ty, e1) = (type_name("setlist_entry"), entity_id("tonight-1"));
    let mut w = Writer::new(store, &band).await;
    let t0 = Utc::now();

    // Commit, then read everything back.
    let create = w.write(&ty, &e1, 0, "Help!", t0, Some(&ch));
    let event = w.commit(store, &create).await.expect("its event");
    let new = &create.event.as_ref().unwrap().1;
    assert_eq!((event.seq, &event.id, &event.channel), (1, &new.id, &ch));
    assert!(!event.epoch.is_empty(), "the stored event has its epoch");
    assert_eq!(
        store.read_after(&ch, 0, 10).await.unwrap(),
        vec![event.clone()],
        "the event is in the log as returned"
    );
    assert_eq!(
        store.get_entity(&band, &ty, &e1).await.unwrap(),
        create.entity
    );
    assert_eq!(next_mid(store, &w.device).await, 2, "the mid moved");
    assert_eq!(
        store.receipts(&w.device, 1, 10).await.unwrap(),
        vec![with_seq(&create.receipt, Some(1))],
        "the receipt keeps its event's seq"
    );
    assert_eq!(
        store.history(&band, &ty, &e1, 0, 10).await.unwrap(),
        vec![create.history.clone().unwrap()]
    );
    assert_eq!(
        store.history_entry(&band, &ty, &e1, 1).await.unwrap(),
        create.history
    );
    assert_eq!(store.history_entry(&band, &ty, &e1, 2).await.unwrap(), None);
    let other_band = super::band();
    assert_eq!(store.get_entity(&other_band, &ty, &e1).await.unwrap(), None);

    // The same (device, mid) again (a redelivery): raced, nothing changes.
    assert_raced(store.commit(&create).await, "a repeated (device, mid)");
    let mut changed = create.clone();
    changed.expected_version = 1;
    changed.entity.as_mut().unwrap().version = 2;
    changed.history.as_mut().unwrap().version = 2;
    changed.history.as_mut().unwrap().entity.version = 2;
    assert_raced(
        store.commit(&changed).await,
        "an old mid, even with a fresh version",
    );
    assert_eq!(next_mid(store, &w.device).await, 2);
    assert_eq!(store.receipts(&w.device, 1, 10).await.unwrap().len(), 1);
    assert_eq!(
        store.get_entity(&band, &ty, &e1).await.unwrap(),
        create.entity
    );
    assert_eq!(head_seq(store, &ch).await, 1, "no second event");

    // A stale (or future) expected version: raced, nothing written at all.
    for stale in [0, 2] {
        let c = w.write(&ty, &e1, stale, "Yesterday", t0 + secs(1), Some(&ch));
        assert_raced(store.commit(&c).await, "a stale expected version");
        assert_eq!(next_mid(store, &w.device).await, 2, "the mid stays");
        assert!(
            store.receipts(&w.device, 2, 2).await.unwrap().is_empty(),
            "no receipt"
        );
        assert_eq!(head_seq(store, &ch).await, 1, "no event");
        assert_eq!(
            store.get_entity(&band, &ty, &e1).await.unwrap(),
            create.entity
        );
        assert_eq!(
            store.history(&band, &ty, &e1, 0, 10).await.unwrap().len(),
            1
        );
    }

    // An unknown device: raced (the caller reads again and finds no device).
    let stranger = Writer {
        device: device_id(),
        ..Writer::new(store, &band).await
    };
    let c = stranger.write(&ty, &entity_id("elsewhere"), 0, "x", t0, Some(&ch));
    assert_raced(store.commit(&c).await, "an unregistered device");
    assert_eq!(store.get_device(&stranger.device).await.unwrap(), None);
    assert_eq!(head_seq(store, &ch).await, 1);

    // An inconsistent commit is refused before anything is written.
    let mut bad = w.write(&ty, &e1, 1, "Yesterday", t0, Some(&ch));
    bad.receipt.mid += 1;
    assert!(
        matches!(store.commit(&bad).await, Err(CommitError::Port(_))),
        "a receipt of another mid"
    );
    assert_eq!(next_mid(store, &w.device).await, 2);

    // The next version: the next seq.
    let patch = w.write(&ty, &e1, 1, "Yesterday", t0 + secs(1), Some(&ch));
    let event = w.commit(store, &patch).await.unwrap();
    assert_eq!(event.seq, 2, "consecutive seqs");
    let stored = store.get_entity(&band, &ty, &e1).await.unwrap().unwrap();
    assert_eq!((stored.version, Some(&stored)), (2, patch.entity.as_ref()));
    assert_eq!(
        store.receipts(&w.device, 1, 2).await.unwrap(),
        vec![
            with_seq(&create.receipt, Some(1)),
            with_seq(&patch.receipt, Some(2))
        ],
        "receipts in mid order"
    );
    assert_eq!(store.receipts(&w.device, 2, 1).await.unwrap(), vec![]);

    // An event id the log has already: it keeps its first seq, none is taken.
    let appended = store
        .append(&ch, &[new_event(&unique("ev"), t0 + secs(2))])
        .await
        .unwrap();
    assert_eq!(appended[0].seq, 3);
    let mut same_event = w.write(&ty, &e1, 2, "Let It Be", t0 + secs(2), Some(&ch));
    same_event.event.as_mut().unwrap().1 = new_event(&appended[0].id, t0 + secs(3));
    let event = w.commit(store, &same_event).await.unwrap();
    assert_eq!(event, appended[0], "the event as first stored");
    assert_eq!(head_seq(store, &ch).await, 3, "no seq was taken");
    assert_eq!(
        store.receipts(&w.device, 3, 3).await.unwrap()[0].result.seq,
        Some(3),
        "the receipt has the seq the event kept"
    );
    assert_eq!(
        version_of(store, &band, &ty, &e1).await,
        Some(3),
        "the rest of the commit was written"
    );

    // A commit without an event is one too; the log of another channel is its own.
    let quiet = w.write(&ty, &entity_id("quiet"), 0, "Silence", t0, None);
    assert_eq!(w.commit(store, &quiet).await, None);
    assert_eq!(
        store.receipts(&w.device, 4, 4).await.unwrap(),
        vec![quiet.receipt.clone()],
        "no event, no seq"
    );
    let other_ch = band_channel();
    let elsewhere = w.write(&ty, &entity_id("elsewhere"), 0, "x", t0, Some(&other_ch));
    assert_eq!(w.commit(store, &elsewhere).await.unwrap().seq, 1);
    assert_eq!(head_seq(store, &ch).await, 3);
    assert_eq!(next_mid(store, &w.device).await, 6);
}

/// A commit's `more_events` are appended after its event, in the same write: all of
/// them or none.
async fn commits_carry_several_events<S: EntityStore + ChannelLog + ?Sized>(store: &S) {
    let band = band();
    let ch = ChannelName::Band(band.clone());
    let (ty, e1) = (type_name("setlist_entry"), entity_id("with-conflict"));
    let mut w = Writer::new(store, &band).await;
    let t0 = Utc::now();
    store
        .append(&ch, &[new_event(&unique("ev"), t0)])
        .await
        .unwrap();

    let mut c = w.write(&ty, &e1, 0, "Help!", t0, Some(&ch));
    c.more_events = vec![
        new_event(&unique("opened"), t0),
        new_event(&unique("other"), t0),
    ];
    let stored = store.commit_events(&c).await.expect("the commit wins");
    w.next_mid += 1;
    let ids: Vec<&str> = stored.iter().map(|e| e.id.as_str()).collect();
    let mut expected = vec![c.event.as_ref().unwrap().1.id.as_str()];
    expected.extend(c.more_events.iter().map(|e| e.id.as_str()));
    assert_eq!(ids, expected, "the event, then the others");
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![2, 3, 4],
        "consecutive seqs"
    );
    assert_eq!(store.read_after(&ch, 1, 10).await.unwrap(), stored);
    assert_eq!(
        store.receipts(&w.device, 1, 1).await.unwrap(),
        vec![with_seq(&c.receipt, Some(2))],
        "the receipt has the seq of the commit's (first) event"
    );

    // A raced commit appends none of its events.
    let mut raced = w.write(&ty, &e1, 0, "Yesterday", t0, Some(&ch));
    raced.more_events = vec![new_event(&unique("resolved"), t0)];
    assert_raced(store.commit_events(&raced).await, "a stale version");
    assert_eq!(head_seq(store, &ch).await, 4, "no event of a raced commit");

    // One already in the log keeps its seq; the fresh one takes the next.
    let mut again = w.write(&ty, &e1, 1, "Yesterday", t0, Some(&ch));
    again.more_events = vec![c.more_events[0].clone(), new_event(&unique("new"), t0)];
    let second = store.commit_events(&again).await.expect("the commit wins");
    assert_eq!(
        second.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![5, 3, 6]
    );
    assert_eq!(second[1], stored[1], "as first stored");

    // More events without the event (their channel), or one id twice: refused.
    let mut orphan = w.write(&ty, &e1, 2, "x", t0, None);
    orphan.more_events = vec![new_event(&unique("lost"), t0)];
    assert!(matches!(
        store.commit_events(&orphan).await,
        Err(CommitError::Port(_))
    ));
    let mut twice = w.write(&ty, &e1, 2, "x", t0, Some(&ch));
    twice.more_events = vec![twice.event.as_ref().unwrap().1.clone()];
    assert!(matches!(
        store.commit_events(&twice).await,
        Err(CommitError::Port(_))
    ));
    assert_eq!(head_seq(store, &ch).await, 6);
}

/// A settlement (mid 0, by the service) moves no device's mid and keeps no receipt;
/// the entity's version alone guards it.
async fn settlements_commit_without_a_device<S: EntityStore + ChannelLog + ?Sized>(store: &S) {
    let band = band();
    let ch = ChannelName::Band(band.clone());
    let (ty, e1) = (type_name("gig"), entity_id("settled"));
    let mut w = Writer::new(store, &band).await;
    let t0 = Utc::now();
    let create = w.write(&ty, &e1, 0, "Club", t0, Some(&ch));
    w.commit(store, &create).await;

    // The service, with a device id nobody registered, writes version 2.
    let service = Writer {
        device: device_id(),
        next_mid: 0,
        ..Writer::new(store, &band).await
    };
    let settle = service.write(&ty, &e1, 1, "Hall", t0 + secs(1), Some(&ch));
    assert!(settle.is_settlement());
    let events = store
        .commit_events(&settle)
        .await
        .expect("the settlement wins");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].seq, 2);
    assert_eq!(version_of(store, &band, &ty, &e1).await, Some(2));
    assert_eq!(
        store.history_entry(&band, &ty, &e1, 2).await.unwrap(),
        settle.history
    );
    assert_eq!(store.get_device(&service.device).await.unwrap(), None);
    assert!(
        store
            .receipts(&service.device, 0, 10)
            .await
            .unwrap()
            .is_empty(),
        "no receipt"
    );

    // Again (another tick, or a member's change first): raced, nothing written.
    let again = service.write(&ty, &e1, 1, "Bar", t0 + secs(2), Some(&ch));
    assert_raced(
        store.commit_events(&again).await,
        "a settlement of a moved entity",
    );
    assert_eq!(head_seq(store, &ch).await, 2);
    assert_eq!(version_of(store, &band, &ty, &e1).await, Some(2));

    // A settlement writes an entity, or it is refused.
    let mut empty = service.write(&ty, &e1, 2, "x", t0, Some(&ch));
    empty.entity = None;
    empty.history = None;
    assert!(matches!(
        store.commit_events(&empty).await,
        Err(CommitError::Port(_))
    ));

    // ... unless it settles the conflicts of an entity that is gone: the conflicts and
    // their event alone; again, the event keeps its first seq.
    let mut gone = conflict(&band, &service, t0, "venue");
    gone.resolution = Some(Resolution {
        value: Value::Null,
        at: t0 + secs(3),
        by: None,
        how: "gone".into(),
        reason: Some("deleted".into()),
    });
    let mut settle_gone = empty.clone();
    settle_gone.expected_version = 0;
    settle_gone.conflicts = vec![gone.clone()];
    for _ in 0..2 {
        let events = store
            .commit_events(&settle_gone)
            .await
            .expect("a gone entity's conflict is settled");
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(head_seq(store, &ch).await, 3);
        assert_eq!(
            store.get_conflict(&band, &gone.id).await.unwrap(),
            Some(gone.clone())
        );
        assert!(
            store
                .list_conflicts(&band, true, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(version_of(store, &band, &ty, &e1).await, Some(2));
    }
    // (one that leaves a conflict open is refused)
    let mut reopen = settle_gone.clone();
    reopen.conflicts[0].resolution = None;
    assert!(matches!(
        store.commit_events(&reopen).await,
        Err(CommitError::Port(_))
    ));
}

/// A refused mutation moves the mid (no deadlock) and is parked, newest first.
async fn rejected_verdicts_are_parked<S: EntityStore + ChannelLog + ?Sized>(store: &S) {
    let band = band();
    let ch = ChannelName::Band(band.clone());
    let ty = type_name("song_status");
    let mut w = Writer::new(store, &band).await;
    let other = Writer::new(store, &band).await;
    let t0 = Utc::now();

    let applied = w.write(&ty, &entity_id("s1"), 0, "ready", t0, Some(&ch));
    w.commit(store, &applied).await;
    let first = w.reject();
    assert_eq!(w.commit(store, &first).await, None, "no event");
    let second = w.reject();
    w.commit(store, &second).await;
    let after = w.write(&ty, &entity_id("s2"), 0, "ready", t0, Some(&ch));
    w.commit(store, &after).await;

    assert_eq!(
        next_mid(store, &w.device).await,
        5,
        "rejections move the mid"
    );
    assert_eq!(head_seq(store, &ch).await, 2, "and append nothing");
    assert_eq!(
        store.receipts(&w.device, 1, 4).await.unwrap(),
        vec![
            with_seq(&applied.receipt, Some(1)),
            first.receipt.clone(),
            second.receipt.clone(),
            with_seq(&after.receipt, Some(2))
        ]
    );
    assert_eq!(
        store.parked(&w.device, 10).await.unwrap(),
        vec![second.receipt.clone(), first.receipt.clone()],
        "only the rejected, newest first"
    );
    assert_eq!(
        store.parked(&w.device, 1).await.unwrap(),
        vec![second.receipt.clone()]
    );
    assert!(store.parked(&other.device, 10).await.unwrap().is_empty());
    assert_raced(store.commit(&first).await, "a parked mid again");
    assert_eq!(store.parked(&w.device, 10).await.unwrap().len(), 2);

    // Pages: below a mid, newest first.
    assert_eq!(
        store.parked_before(&w.device, None, 10).await.unwrap(),
        store.parked(&w.device, 10).await.unwrap()
    );
    assert_eq!(
        store.parked_before(&w.device, Some(3), 10).await.unwrap(),
        vec![first.receipt.clone()],
        "mids below 3"
    );
    assert_eq!(
        store.parked_before(&w.device, None, 1).await.unwrap(),
        vec![second.receipt.clone()]
    );
    assert!(
        store
            .parked_before(&w.device, Some(2), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .parked_before(&w.device, Some(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .parked_before(&w.device, None, 0)
            .await
            .unwrap()
            .is_empty()
    );

    // Dismissing unlists it, idempotently; the receipt (the verdict) stays.
    assert!(store.dismiss_parked(&w.device, first.mid).await.unwrap());
    assert!(
        !store.dismiss_parked(&w.device, first.mid).await.unwrap(),
        "again"
    );
    assert!(
        !store.dismiss_parked(&w.device, 1).await.unwrap(),
        "an applied mid"
    );
    assert!(
        !store
            .dismiss_parked(&other.device, second.mid)
            .await
            .unwrap(),
        "another device's"
    );
    assert_eq!(
        store.parked_before(&w.device, None, 10).await.unwrap(),
        vec![second.receipt.clone()]
    );
    assert_eq!(
        store.parked(&w.device, 10).await.unwrap(),
        vec![second.receipt.clone()]
    );
    assert_eq!(
        store
            .receipts(&w.device, first.mid, first.mid)
            .await
            .unwrap(),
        vec![first.receipt.clone()]
    );
}

async fn entity_listing_pages<S: EntityStore + ?Sized>(store: &S) {
    let band = band();
    let mut w = Writer::new(store, &band).await;
    let (entry, status) = (type_name("setlist_entry"), type_name("song_status"));
    let t0 = Utc::now();
    let mut want = Vec::new();
    for (ty, id) in [
        (&status, "y"),
        (&entry, "b"),
        (&status, "x"),
        (&entry, "a"),
        (&entry, "c"),
    ] {
        let mut c = w.write(ty, &entity_id(id), 0, id, t0, None);
        if id == "c" {
            // Deleted ones are listed too.
            let e = c.entity.as_mut().unwrap();
            e.deleted = true;
            c.history.as_mut().unwrap().entity = e.clone();
        }
        w.commit(store, &c).await;
        want.push(c.entity.unwrap());
    }
    let want = sorted_by(want, |e| (e.entity_type.clone(), e.id.clone()));
    let key = |e: &EntityRecord| (e.entity_type.clone(), e.id.clone());

    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_entities(&band, None, after.as_ref(), 2)
            .await
            .unwrap();
        assert!(page.entities.len() <= 2, "at most limit");
        pages.push(page.entities.iter().map(key).collect::<Vec<_>>());
        if page.next.is_none() {
            assert!(after.is_some(), "more than one page");
            break;
        }
        assert_eq!(
            page.next,
            page.entities.last().map(key),
            "next is the last one"
        );
        after = page.next;
    }
    assert_eq!(
        pages.concat(),
        want.iter().map(key).collect::<Vec<_>>(),
        "every entity once, in (type, id) order"
    );
    assert_eq!(pages.len(), 3);
    let all = store.list_entities(&band, None, None, 10).await.unwrap();
    assert_eq!((all.entities, all.next), (want.clone(), None));
    let unbounded = store
        .list_entities(&band, None, None, usize::MAX)
        .await
        .unwrap();
    assert_eq!(unbounded.entities, want, "a limit past any count");

    let statuses = store
        .list_entities(&band, Some(&status), None, 10)
        .await
        .unwrap();
    assert_eq!(statuses.entities, want[3..].to_vec(), "one type");
    let after_x = (status.clone(), entity_id("x"));
    let rest = store
        .list_entities(&band, Some(&status), Some(&after_x), 10)
        .await
        .unwrap();
    assert_eq!((rest.entities, rest.next), (want[4..].to_vec(), None));
    let first = store
        .list_entities(&band, Some(&entry), None, 1)
        .await
        .unwrap();
    assert_eq!(
        (first.entities, first.next),
        (want[..1].to_vec(), Some(key(&want[0]))),
        "one type, paged"
    );
    let none = store
        .list_entities(&super::band(), None, None, 10)
        .await
        .unwrap();
    assert_eq!((none.entities, none.next), (vec![], None), "per band");
}

async fn history_and_its_pruning<S: EntityStore + ?Sized>(store: &S) {
    let band = band();
    let mut w = Writer::new(store, &band).await;
    let ty = type_name("annotation");
    let (long, single) = (entity_id("long"), entity_id("single"));
    let t0 = Utc::now();
    let mut entries = Vec::new();
    for v in 0..3 {
        let c = w.write(
            &ty,
            &long,
            v,
            &format!("take {v}"),
            t0 + secs(v as i64),
            None,
        );
        w.commit(store, &c).await;
        entries.push(c.history.unwrap());
    }
    let c = w.write(&ty, &single, 0, "once", t0, None);
    w.commit(store, &c).await;

    assert_eq!(
        store.history(&band, &ty, &long, 0, 10).await.unwrap(),
        entries,
        "oldest first"
    );
    assert_eq!(
        store.history(&band, &ty, &long, 1, 1).await.unwrap(),
        entries[1..2].to_vec(),
        "after a version, limited"
    );
    assert!(
        store
            .history(&band, &ty, &long, 3, 10)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        store.prune_history(&band, t0).await.unwrap(),
        0,
        "strictly older"
    );
    assert_eq!(
        store.prune_history(&band, t0 + secs(60)).await.unwrap(),
        2,
        "all old, but each entity keeps its newest"
    );
    assert_eq!(
        store.history(&band, &ty, &long, 0, 10).await.unwrap(),
        entries[2..].to_vec()
    );
    assert_eq!(
        store
            .history(&band, &ty, &single, 0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.prune_history(&band, t0 + secs(60)).await.unwrap(), 0);
    assert_eq!(
        version_of(store, &band, &ty, &long).await,
        Some(3),
        "the entity is not history"
    );
}

fn conflict(band: &BandId, w: &Writer, opened_at: DateTime<Utc>, field: &str) -> ConflictRecord {
    let candidate = |value: Value, mid| Candidate {
        value,
        member: w.member.clone(),
        device: w.device.clone(),
        mid,
        stamp: None,
    };
    ConflictRecord {
        band: band.clone(),
        id: ConflictId::parse(&unique("conflict")).expect("a valid conflict id"),
        entity_type: type_name("setlist_entry"),
        entity_id: entity_id("tonight-1"),
        field: field.into(),
        opened_at,
        deadline: opened_at + TimeDelta::hours(24),
        candidates: vec![candidate(json!("A"), 1), candidate(json!("B"), 2)],
        resolution: None,
    }
}

async fn conflicts<S: EntityStore + ?Sized>(store: &S) {
    let band = band();
    let mut w = Writer::new(store, &band).await;
    let ty = type_name("setlist_entry");
    let e1 = entity_id("tonight-1");
    let t0 = Utc::now();

    let (older, newer) = (
        conflict(&band, &w, t0, "key"),
        conflict(&band, &w, t0 + secs(1), "title"),
    );
    let mut c = w.write(&ty, &e1, 0, "Help!", t0, None);
    c.conflicts = vec![older.clone(), newer.clone()];
    w.commit(store, &c).await;
    assert_eq!(
        store.list_conflicts(&band, false, 10).await.unwrap(),
        vec![newer.clone(), older.clone()],
        "newest first"
    );
    assert_eq!(
        store.get_conflict(&band, &older.id).await.unwrap(),
        Some(older.clone())
    );
    assert_eq!(
        store.get_conflict(&super::band(), &older.id).await.unwrap(),
        None
    );

    let mut settled = older.clone();
    settled.resolution = Some(Resolution {
        value: json!("B"),
        at: t0 + secs(2),
        by: Some(w.member.clone()),
        how: "member".into(),
        reason: None,
    });
    let mut c = w.write(&ty, &e1, 1, "B", t0 + secs(2), None);
    c.conflicts = vec![settled.clone()];
    w.commit(store, &c).await;
    assert_eq!(
        store.get_conflict(&band, &older.id).await.unwrap(),
        Some(settled.clone())
    );
    assert_eq!(
        store.list_conflicts(&band, false, 10).await.unwrap(),
        vec![newer.clone(), settled],
        "settled ones stay, in place"
    );
    assert_eq!(
        store.list_conflicts(&band, true, 10).await.unwrap(),
        vec![newer.clone()],
        "open only"
    );
    assert_eq!(
        store.list_conflicts(&band, false, 1).await.unwrap(),
        vec![newer]
    );
    assert!(
        store
            .list_conflicts(&super::band(), false, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Many devices commit on one entity at once, all on the version they read: exactly one
/// wins; the others write nothing (no mid moved, no receipt, no event).
pub async fn entity_commit_concurrency_contract<S: EntityStore + ChannelLog + ?Sized + 'static>(
    store: Arc<S>,
) {
    const WRITERS: usize = 8;
    let band = band();
    let ch = ChannelName::Band(band.clone());
    let (ty, id) = (type_name("setlist_entry"), entity_id("contended"));
    let t0 = Utc::now();
    let mut first = Writer::new(&*store, &band).await;
    let create = first.write(&ty, &id, 0, "first", t0, Some(&ch));
    first.commit(&*store, &create).await;

    // Every device is registered before any commit starts: only the commits race.
    let mut writers = Vec::with_capacity(WRITERS);
    for _ in 0..WRITERS {
        writers.push(Writer::new(&*store, &band).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, w) in writers.into_iter().enumerate() {
        let c = w.write(&ty, &id, 1, &format!("writer {i}"), t0 + secs(1), Some(&ch));
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let result = store.commit(&c).await;
            (w.device, c, result)
        });
    }
    let mut winners = Vec::new();
    for (device, c, result) in tasks.join_all().await {
        match result {
            Ok(event) => winners.push((c, event)),
            Err(CommitError::Raced(_)) => {
                assert_eq!(next_mid(&*store, &device).await, 1, "a loser's mid stays");
                assert!(store.receipts(&device, 1, 1).await.unwrap().is_empty());
            }
            Err(e) => panic!("a commit failed: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one wins");
    let (won, event) = winners.pop().unwrap();
    assert_eq!(event.map(|e| e.seq), Some(2));
    assert_eq!(head_seq(&*store, &ch).await, 2, "one event for one win");
    assert_eq!(store.get_entity(&band, &ty, &id).await.unwrap(), won.entity);
    assert_eq!(
        store.history(&band, &ty, &id, 0, 10).await.unwrap().len(),
        2
    );
}

/// A commit whose entity is about `bytes` of JSON (its history entry carries it again)
/// either commits whole or is refused as a port failure having written nothing: no mid
/// moved, no receipt, no entity, no event. True when it was refused (DynamoDB refuses
/// what an item cannot hold; SQLite has no such limit).
pub async fn huge_entity_contract<S: EntityStore + ChannelLog + ?Sized>(
    store: &S,
    bytes: usize,
) -> bool {
    let band = band();
    let ch = ChannelName::Band(band.clone());
    let (ty, id) = (type_name("annotation"), entity_id("huge"));
    let mut w = Writer::new(store, &band).await;
    let c = w.write(&ty, &id, 0, &"x".repeat(bytes), Utc::now(), Some(&ch));
    match store.commit(&c).await {
        Ok(event) => {
            w.next_mid += 1;
            assert_eq!(event.map(|e| e.seq), Some(1));
            assert_eq!(store.get_entity(&band, &ty, &id).await.unwrap(), c.entity);
            assert_eq!(next_mid(store, &w.device).await, w.next_mid);
            false
        }
        Err(CommitError::Port(e)) => {
            assert!(!e.to_string().is_empty(), "the refusal says why");
            assert_eq!(next_mid(store, &w.device).await, 1, "the mid stays");
            assert!(store.receipts(&w.device, 1, 1).await.unwrap().is_empty());
            assert_eq!(store.get_entity(&band, &ty, &id).await.unwrap(), None);
            assert_eq!(head_seq(store, &ch).await, 0, "no event");
            true
        }
        Err(e) => panic!("a huge entity is committed or refused, not {e}"),
    }
}
