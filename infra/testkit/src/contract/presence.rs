//! Presence: the set of a member's live connections per band, the first device and the
//! last one told atomically, leaving marks found by time, settled once.

use super::*;
use bandsync::ports::{Arrival, Departure, PresenceRecord, PresenceStore};

fn member(name: &str) -> UserId {
    UserId::parse(&unique(name)).expect("a valid user id")
}

/// Whole seconds (both backends keep nanoseconds; this keeps the comparison plain).
fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp() - 600, 0).expect("a valid time")
}

/// The marks of `band` due at `before` (other suites may have marks of their own).
async fn marks<S: PresenceStore + ?Sized>(
    store: &S,
    band: &BandId,
    before: DateTime<Utc>,
) -> Vec<PresenceRecord> {
    let all = store.leaving(before, 1000).await.unwrap();
    all.into_iter().filter(|m| &m.band == band).collect()
}

pub async fn presence_contract<S: PresenceStore + ?Sized>(store: &S) {
    let (b, elsewhere) = (band(), band());
    let (ringo, paul) = (member("ringo"), member("paul"));
    let (phone, ipad, laptop) = (connection_id(), connection_id(), connection_id());
    let t0 = start();
    let at = |n: i64| t0 + secs(n);
    assert!(store.present(&b).await.unwrap().is_empty(), "nobody yet");

    // GIVEN ringo's phone connects: his first device
    let arrive = async |band: &BandId, who: &UserId, conn: &ConnectionId, t| {
        store.arrive(band, who, conn, t).await.unwrap()
    };
    let depart = async |band: &BandId, who: &UserId, conn: &ConnectionId, t| {
        store.depart(band, who, conn, t).await.unwrap()
    };
    assert_eq!(
        arrive(&b, &ringo, &phone, at(0)).await,
        Arrival::Joined { since: at(0) }
    );
    assert_eq!(
        arrive(&b, &ringo, &phone, at(1)).await,
        Arrival::Repeat { since: at(0) },
        "a redelivered connect counts once"
    );
    assert_eq!(
        arrive(&b, &ringo, &ipad, at(2)).await,
        Arrival::Another {
            since: at(0),
            devices: 2
        }
    );
    assert_eq!(
        arrive(&elsewhere, &ringo, &laptop, at(2)).await,
        Arrival::Joined { since: at(2) },
        "bands are separate"
    );
    let listed = store.present(&b).await.unwrap();
    assert_eq!(
        listed,
        vec![PresenceRecord {
            band: b.clone(),
            member: ringo.clone(),
            devices: 2,
            since: at(0),
            leaving_since: None,
        }]
    );

    // WHEN a device goes, the other remains; a repeat of that disconnect changes nothing
    assert_eq!(
        depart(&b, &ringo, &ipad, at(3)).await,
        Departure::Remaining { devices: 1 }
    );
    assert_eq!(
        depart(&b, &ringo, &ipad, at(3)).await,
        Departure::Remaining { devices: 1 }
    );
    // the last one marks him leaving, once
    assert_eq!(
        depart(&b, &ringo, &phone, at(4)).await,
        Departure::Leaving { since: at(4) }
    );
    assert_eq!(
        depart(&b, &ringo, &phone, at(5)).await,
        Departure::Unchanged
    );
    let listed = store.present(&b).await.unwrap();
    assert_eq!(listed.len(), 1, "a leaving member is still listed");
    assert_eq!(
        (listed[0].devices, listed[0].leaving_since),
        (0, Some(at(4)))
    );
    assert!(
        marks(store, &b, at(3)).await.is_empty(),
        "not due before its time"
    );
    let due = marks(store, &b, at(4)).await;
    assert_eq!(due.len(), 1);
    assert_eq!(
        (&due[0].member, due[0].since, due[0].leaving_since),
        (&ringo, at(0), Some(at(4)))
    );

    // WHEN he is back within the debounce: same session, no mark, nothing to settle
    assert_eq!(
        arrive(&b, &ringo, &ipad, at(6)).await,
        Arrival::Back { since: at(0) }
    );
    assert!(
        !store.settle(&b, &ringo, at(4)).await.unwrap(),
        "he is back"
    );
    store.forget_mark(&b, &ringo, at(4)).await.unwrap();
    assert!(marks(store, &b, at(100)).await.is_empty());
    let listed = store.present(&b).await.unwrap();
    assert_eq!((listed[0].devices, listed[0].leaving_since), (1, None));

    // WHEN he goes for good: settled once (a repeat says so again), unlisted
    assert_eq!(
        depart(&b, &ringo, &ipad, at(7)).await,
        Departure::Leaving { since: at(7) }
    );
    assert!(store.settle(&b, &ringo, at(7)).await.unwrap());
    assert!(
        store.settle(&b, &ringo, at(7)).await.unwrap(),
        "a repeated settle"
    );
    assert!(store.present(&b).await.unwrap().is_empty());
    assert_eq!(
        marks(store, &b, at(100)).await.len(),
        1,
        "the mark stays until forgotten (a sweep that failed to publish retries)"
    );
    store.forget_mark(&b, &ringo, at(7)).await.unwrap();
    store.forget_mark(&b, &ringo, at(7)).await.unwrap();
    assert!(marks(store, &b, at(100)).await.is_empty());
    assert_eq!(depart(&b, &ringo, &ipad, at(8)).await, Departure::Unchanged);

    // THEN his next connect is a new session
    assert_eq!(
        arrive(&b, &ringo, &phone, at(9)).await,
        Arrival::Joined { since: at(9) }
    );
    // and a settle that lost to a reconnect refuses
    assert_eq!(
        depart(&b, &ringo, &phone, at(10)).await,
        Departure::Leaving { since: at(10) }
    );
    assert_eq!(
        arrive(&b, &ringo, &laptop, at(11)).await,
        Arrival::Back { since: at(9) }
    );
    assert!(!store.settle(&b, &ringo, at(10)).await.unwrap());

    // A member with no session: a disconnect is nothing
    assert_eq!(
        depart(&b, &paul, &laptop, at(0)).await,
        Departure::Unchanged
    );
    assert_eq!(store.present(&b).await.unwrap().len(), 1, "ringo only");
}

/// Devices connecting at once: exactly one is the first; leaving at once: exactly one is
/// the last. Run on SQLite only: moto does not serialize concurrent UpdateItems of one
/// item (two `ADD`s both saw the set empty), which DynamoDB does.
pub async fn presence_concurrency_contract<S: PresenceStore + ?Sized + 'static>(store: Arc<S>) {
    let (b, ringo) = (band(), member("ringo"));
    let conns: Vec<ConnectionId> = (0..6).map(|_| connection_id()).collect();
    let t0 = start();
    let mut tasks = tokio::task::JoinSet::new();
    for c in &conns {
        let (store, b, ringo, c) = (store.clone(), b.clone(), ringo.clone(), c.clone());
        tasks.spawn(async move { store.arrive(&b, &ringo, &c, t0).await.unwrap() });
    }
    let arrivals = tasks.join_all().await;
    let joined = arrivals
        .iter()
        .filter(|a| matches!(a, Arrival::Joined { .. }))
        .count();
    assert_eq!(joined, 1, "one first device: {arrivals:?}");
    assert_eq!(store.present(&b).await.unwrap()[0].devices, 6);
    let mut tasks = tokio::task::JoinSet::new();
    for c in &conns {
        let (store, b, ringo, c) = (store.clone(), b.clone(), ringo.clone(), c.clone());
        tasks.spawn(async move { store.depart(&b, &ringo, &c, t0 + secs(1)).await.unwrap() });
    }
    let departures = tasks.join_all().await;
    let last = departures
        .iter()
        .filter(|d| matches!(d, Departure::Leaving { .. }))
        .count();
    assert_eq!(last, 1, "one last device: {departures:?}");
}
