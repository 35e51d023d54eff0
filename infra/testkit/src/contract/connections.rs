//! Connections, subscriptions and the health check.

use super::*;
use bandsync::model::{DeviceBinding, DeviceId};

/// Connections and subscriptions: idempotent subscribe, per-channel fan-out lists, and
/// deleting a connection takes its subscriptions with it.
pub async fn connection_contract<S: ConnectionStore + ?Sized>(store: &S) {
    let (c1, c2) = (connection_id(), connection_id());
    let (ch1, ch2, quiet) = (band_channel(), band_channel(), band_channel());
    let now = Utc::now();
    assert_eq!(store.get_connection(&c1).await.unwrap(), None);
    for id in [&c1, &c2] {
        store.put_connection(&connection(id)).await.unwrap();
    }
    assert_eq!(
        store.get_connection(&c1).await.unwrap().map(|c| c.id),
        Some(c1.clone())
    );

    for (id, ch) in [(&c1, &ch1), (&c1, &ch2), (&c1, &ch1), (&c2, &ch1)] {
        store.subscribe(id, ch, now).await.unwrap();
    }
    let subscribers = async |ch| sorted(store.subscribers(ch).await.unwrap());
    assert_eq!(
        subscribers(&ch1).await,
        sorted(vec![c1.clone(), c2.clone()]),
        "each once"
    );
    assert_eq!(subscribers(&ch2).await, vec![c1.clone()]);
    assert!(
        subscribers(&quiet).await.is_empty(),
        "channels are separate"
    );
    let subscriptions = sorted(store.subscriptions(&c1).await.unwrap());
    assert_eq!(subscriptions, sorted(vec![ch1.clone(), ch2.clone()]));

    // Selective sync: no binding, no categories; a binding reaches the record, the
    // subscriptions it has and those it makes later, and can change.
    let filtered = async |ch| {
        let mut s = store.subscribers_filtered(ch).await.unwrap();
        s.sort_by(|a, b| a.connection.cmp(&b.connection));
        s.into_iter()
            .map(|s| (s.connection, s.categories))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        filtered(&ch1).await,
        sorted(vec![(c1.clone(), vec![]), (c2.clone(), vec![])])
    );
    let setlists = DeviceBinding {
        device: DeviceId::parse("phone-0001").unwrap(),
        categories: vec!["setlists".into()],
    };
    assert!(store.bind_device(&c1, &setlists).await.unwrap());
    assert!(
        !store
            .bind_device(&connection_id(), &setlists)
            .await
            .unwrap(),
        "an unknown connection is not bound"
    );
    assert_eq!(
        store
            .get_connection(&c1)
            .await
            .unwrap()
            .and_then(|c| c.device),
        Some(setlists.clone())
    );
    assert_eq!(
        filtered(&ch1).await,
        sorted(vec![
            (c1.clone(), vec!["setlists".to_owned()]),
            (c2.clone(), vec![])
        ])
    );
    store.subscribe(&c1, &quiet, now).await.unwrap();
    assert_eq!(
        filtered(&quiet).await,
        vec![(c1.clone(), vec!["setlists".to_owned()])],
        "a later subscription carries the binding"
    );
    let more = DeviceBinding {
        categories: vec!["setlists".into(), "charts".into()],
        ..setlists.clone()
    };
    store.bind_device(&c1, &more).await.unwrap();
    assert_eq!(
        filtered(&ch2).await,
        vec![(c1.clone(), more.categories.clone())]
    );
    assert_eq!(
        filtered(&quiet).await,
        vec![(c1.clone(), more.categories.clone())]
    );
    assert_eq!(
        store.subscribers(&ch1).await.unwrap().len(),
        2,
        "binding adds no subscription"
    );
    store.unsubscribe(&c1, &quiet).await.unwrap();

    store.unsubscribe(&c1, &ch2).await.unwrap();
    store.unsubscribe(&c1, &ch2).await.unwrap();
    assert!(subscribers(&ch2).await.is_empty());

    store.delete_connection(&c1).await.unwrap();
    assert_eq!(store.get_connection(&c1).await.unwrap(), None);
    assert_eq!(
        subscribers(&ch1).await,
        vec![c2.clone()],
        "its subscriptions went with it"
    );
    assert!(store.subscriptions(&c1).await.unwrap().is_empty());
    store.delete_connection(&c1).await.unwrap();
    store.delete_connection(&connection_id()).await.unwrap();
    assert_eq!(
        store.subscriptions(&c2).await.unwrap(),
        vec![ch1],
        "others untouched"
    );
}

/// The backend answers.
pub async fn health_contract<S: HealthCheck + ?Sized>(store: &S) {
    store.check().await.expect("a healthy backend");
}
