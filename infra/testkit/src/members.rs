//! Members' changes without a socket: a push service over any store (its broadcast
//! queue a recording one), a member's connection, and a state written past its history
//! (what the rebuild check must catch).

use crate::fakes::RecordingQueue;
use bandsync::entities::mutation::{MutationResult, MutationStatus};
use bandsync::entities::push::PushService;
use bandsync::entities::records::{Commit, Receipt};
use bandsync::model::{
    BandId, Connection, ConnectionId, DeviceId, EntityId, EntityTypeName, UserId,
};
use bandsync::ports::{ChannelLog, ConfigStore, EntityStore, SystemClock};
use bandsync::publish::Publisher;
use std::sync::Arc;

/// The push service on `store`, on the wall clock.
pub fn push_service<S>(store: Arc<S>) -> PushService
where
    S: EntityStore + ConfigStore + ChannelLog + 'static,
{
    PushService::new(
        store.clone(),
        store.clone(),
        Publisher::new(store, Arc::new(RecordingQueue::new())),
        Arc::new(SystemClock),
    )
}

/// A connection of `user` in `band`, open for two hours.
pub fn member_connection(id: &str, user: &str, band: &str) -> Connection {
    let now = chrono::Utc::now();
    Connection {
        id: ConnectionId::parse(id).expect("a valid connection id"),
        user: UserId::parse(user).expect("a valid user id"),
        bands: vec![BandId::parse(band).expect("a valid band id")],
        connected_at: now,
        expires_at: now + chrono::TimeDelta::hours(2),
        device: None,
    }
}

/// Commit the stored entity again one version up with no history entry, as `device`
/// of `member` (its next mid): a state its history no longer rebuilds. The new version.
pub async fn write_past_history<S: EntityStore + ?Sized>(
    store: &S,
    band: &str,
    entity: (&str, &str),
    device: &str,
    member: &str,
) -> u64 {
    let band = BandId::parse(band).expect("a valid band id");
    let ty = EntityTypeName::parse(entity.0).expect("a valid type");
    let id = EntityId::parse(entity.1).expect("a valid id");
    let device = DeviceId::parse(device).expect("a valid device id");
    let stored = store
        .get_entity(&band, &ty, &id)
        .await
        .expect("read the entity")
        .expect("the entity exists");
    let mid = store
        .get_device(&device)
        .await
        .expect("read the device")
        .expect("the device is registered")
        .next_mid;
    let mut forged = stored.clone();
    forged.version += 1;
    let version = forged.version;
    let commit = Commit {
        device: device.clone(),
        mid,
        receipt: Receipt {
            device,
            mid,
            band,
            member: UserId::parse(member).expect("a valid user id"),
            at: chrono::Utc::now(),
            result: MutationResult::bare(mid, MutationStatus::Applied),
            parked: None,
        },
        entity: Some(forged),
        expected_version: stored.version,
        history: None,
        conflicts: Vec::new(),
        event: None,
        more_events: Vec::new(),
    };
    store.commit(&commit).await.expect("the forged commit");
    version
}
