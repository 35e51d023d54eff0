//! The driver against loopback WebSocket servers: `wss://` with a self-signed
//! certificate (subscribes when it trusts it, fails for good when it does not), and how
//! a replay's cursor moves reach the storage (coalesced, off the runtime's thread).

use bandsync_client::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use bandsync_client::storage::{Change, StorageError};
use bandsync_client::{
    ChannelEvent, ChannelOptions, Client, MemoryStorage, Options, State, Storage, get_token, rustls,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

fn self_signed() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()).into();
    (certified.cert.der().clone(), key)
}

/// The server's side of one socket: `subscribe` is answered at seq 0, then `events`
/// events follow.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>, events: u64) {
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        let frame: Value = serde_json::from_str(text.as_str()).unwrap();
        if frame["action"] != "subscribe" {
            continue;
        }
        let channel = &frame["channel"];
        let mut out = vec![json!({"type": "subscribed", "channel": channel, "seq": 0,
            "epoch": "e1", "ref": frame["ref"]})];
        out.extend((1..=events).map(|seq| {
            json!({"type": "event", "channel": channel, "seq": seq, "epoch": "e1",
                "event": "entity.changed"})
        }));
        for f in out {
            if ws.send(Message::Text(f.to_string().into())).await.is_err() {
                return;
            }
        }
    }
}

/// A WebSocket server on a free loopback port (TLS with `tls`); its URL.
async fn serve(tls: Option<tokio_rustls::TlsAcceptor>, events: u64) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let url = format!("{scheme}://{}/prod", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await
                            && let Ok(ws) = tokio_tungstenite::accept_async(stream).await
                        {
                            answer(ws, events).await;
                        }
                    }
                    None => {
                        if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                            answer(ws, events).await;
                        }
                    }
                }
            });
        }
    });
    url
}

async fn serve_tls(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))), 0).await
}

fn counting_token(calls: Arc<AtomicUsize>) -> bandsync_client::GetToken {
    get_token(move || {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Ok("t".to_owned()) }
    })
}

#[tokio::test]
async fn subscribes_over_wss_to_a_server_it_was_told_to_trust() {
    let (cert, key) = self_signed();
    let url = serve_tls(cert.clone(), key).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let options =
        Options::new(counting_token(calls), MemoryStorage::new()).root_certificates([cert]);
    let client = Client::new(url, options).unwrap();
    let band = client
        .channel("band:demo", ChannelOptions::default())
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), band.subscribe())
        .await
        .expect("live within 10 s")
        .unwrap();
    assert_eq!(client.state(), State::Connected);
    client.close().await;
}

#[tokio::test]
async fn an_untrusted_certificate_fails_the_client_instead_of_retrying() {
    let (cert, key) = self_signed();
    let url = serve_tls(cert, key).await;
    let calls = Arc::new(AtomicUsize::new(0));
    // Trusts only another certificate (not the server's).
    let (other, _) = self_signed();
    let options = Options::new(counting_token(calls.clone()), MemoryStorage::new())
        .root_certificates([other]);
    let client = Client::new(url, options).unwrap();
    let mut changes = client.state_changes();
    client.connect();
    let failed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let change = changes.recv().await.unwrap();
            if change.current == State::Failed {
                return change;
            }
        }
    })
    .await
    .expect("failed within 10 s");
    assert!(failed.reason.starts_with("tls: "), "{failed:?}");
    // Longer than the first backoff (1 s and more): no new attempt.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one attempt only");
    assert_eq!(client.state(), State::Failed);
}

#[tokio::test]
async fn a_url_that_is_not_a_websocket_is_refused_at_once() {
    let options = Options::new(counting_token(Arc::default()), MemoryStorage::new());
    let err = Client::new("http://127.0.0.1:9/prod", options)
        .err()
        .unwrap();
    assert_eq!(err.code(), "invalid_url", "{err}");
    let options = Options::new(counting_token(Arc::default()), MemoryStorage::new());
    let err = Client::new("ws://", options).err().unwrap();
    assert_eq!(err.code(), "invalid_url", "{err}");
}

/// A write and the thread it ran on.
type Write = (std::thread::ThreadId, Vec<Change>);

/// Records each write and the thread it ran on.
#[derive(Clone, Default)]
struct Recording {
    writes: Arc<Mutex<Vec<Write>>>,
}

impl Storage for Recording {
    fn load(&mut self) -> Result<BTreeMap<String, Value>, StorageError> {
        Ok(BTreeMap::new())
    }
    fn apply(&mut self, changes: &[Change]) -> Result<(), StorageError> {
        let here = std::thread::current().id();
        self.writes.lock().unwrap().push((here, changes.to_vec()));
        Ok(())
    }
}

#[tokio::test]
async fn a_replay_moves_the_cursor_in_few_writes_off_the_runtime_thread() {
    let url = serve(None, 300).await;
    let storage = Recording::default();
    let options = Options::new(counting_token(Arc::default()), storage.clone());
    let client = Client::new(url, options).unwrap();
    let band = client
        .channel("band:demo", ChannelOptions::default())
        .unwrap();
    let mut events = band.events();
    band.subscribe().await.unwrap();
    let mut last = 0;
    while last < 300 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("the events arrive")
            .unwrap();
        if let ChannelEvent::Event { seq, .. } = event {
            last = seq;
        }
    }
    client.close().await;
    let writes = storage.writes.lock().unwrap().clone();
    let cursor_writes: Vec<&Vec<Change>> = writes
        .iter()
        .map(|(_, changes)| changes)
        .filter(|c| c.iter().any(|(k, _)| k == "cursor:band:demo"))
        .collect();
    // 300 moves, written at most every 250 ms and at close: a few writes, not 300.
    assert!(
        !cursor_writes.is_empty() && cursor_writes.len() < 30,
        "{} cursor writes",
        cursor_writes.len()
    );
    let stored = cursor_writes
        .last()
        .and_then(|c| c.iter().rev().find(|(k, _)| k == "cursor:band:demo"))
        .and_then(|(_, v)| v.clone());
    assert_eq!(
        stored.map(|v| v["seq"].clone()),
        Some(json!(300)),
        "the last cursor is on disk at close"
    );
    // This test's runtime has one thread: a write on it would block every task.
    let runtime = std::thread::current().id();
    assert!(writes.iter().all(|(thread, _)| *thread != runtime));
}
