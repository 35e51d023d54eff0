//! `bandsync-local listen`: the Rust client (`bandsync-client`) following one channel. It
//! prints every event once and in order and keeps its place across gaps and reconnects,
//! as a band member's app does on a flaky phone.
//!
//! Its connection, [`Socket`], is also the one the tests and benches talk to the stack
//! with (through `bandsync-testkit`): one WebSocket client, not one per test file.

use bandsync::model::ChannelName;
use bandsync::wire::frames::{ClientRequest, ServerFrame};
use bandsync_client::{
    ChannelEvent, ChannelOptions, Client, MemoryStorage, Options, State, StateChange, get_token,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// One text frame from the server: as sent (what `listen` prints) and parsed.
#[derive(Debug, Clone)]
pub struct Frame {
    pub text: String,
    pub json: Value,
}

impl Frame {
    /// The frame's `type` (`event`, `subscribed`, `resumed`, `error`, `pong`, ...).
    pub fn kind(&self) -> Option<&str> {
        self.json["type"].as_str()
    }

    /// The frame as the contract's [`ServerFrame`].
    pub fn server_frame(&self) -> anyhow::Result<ServerFrame> {
        serde_json::from_value(self.json.clone())
            .map_err(|e| anyhow::anyhow!("not a server frame ({e}): {}", self.text))
    }
}

/// What the server sent next.
#[derive(Debug, Clone)]
pub enum Incoming {
    Frame(Frame),
    /// A close frame, with its code when it had one.
    Closed(Option<u16>),
}

/// A WebSocket connection to the stack's (or API Gateway's) WebSocket API, speaking
/// JSON text frames.
pub struct Socket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Socket {
    /// Connect with `token` in the query string, as browsers send it.
    pub async fn connect(url: &str, token: &str) -> anyhow::Result<Self> {
        Self::open(&format!("{url}?token={token}")).await
    }

    /// Connect to `url` as it is.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let (ws, _) = connect_async(url).await?;
        Ok(Self { ws })
    }

    /// Send one client request.
    pub async fn send(&mut self, request: &ClientRequest) -> anyhow::Result<()> {
        self.send_text(serde_json::to_string(request)?).await
    }

    /// Send any JSON value as a frame (for the frames a test wants to try that are not
    /// requests: unknown actions, missing fields, a `ref`).
    pub async fn send_json(&mut self, frame: &Value) -> anyhow::Result<()> {
        self.send_text(frame.to_string()).await
    }

    /// Send one text frame as is (for frames that are not JSON).
    pub async fn send_text(&mut self, text: impl Into<String>) -> anyhow::Result<()> {
        self.ws.send(Message::Text(text.into().into())).await?;
        Ok(())
    }

    /// `subscribe` to a channel.
    pub async fn subscribe(&mut self, channel: &ChannelName) -> anyhow::Result<()> {
        let channel = channel.clone();
        self.send(&ClientRequest::Subscribe { channel }).await
    }

    /// The next text frame or close; pings, pongs and binary frames are skipped. `None`:
    /// the connection ended without a close frame.
    pub async fn next(&mut self) -> Option<anyhow::Result<Incoming>> {
        loop {
            let msg = match self.ws.next().await? {
                Ok(msg) => msg,
                Err(e) => return Some(Err(e.into())),
            };
            return Some(Ok(match msg {
                Message::Text(text) => {
                    let text = text.as_str().to_owned();
                    match serde_json::from_str(&text) {
                        Ok(json) => Incoming::Frame(Frame { text, json }),
                        Err(e) => {
                            return Some(Err(anyhow::anyhow!(
                                "a frame that is not JSON ({e}): {text}"
                            )));
                        }
                    }
                }
                Message::Close(frame) => Incoming::Closed(frame.map(|f| u16::from(f.code))),
                _ => continue,
            }));
        }
    }

    /// The next text frame; `None` on a close, an error or the end of the connection.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        match self.next().await? {
            Ok(Incoming::Frame(frame)) => Some(frame),
            Ok(Incoming::Closed(_)) | Err(_) => None,
        }
    }

    /// Close the connection (a close frame without a status).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Listen forever: a thin user of the Rust client (`bandsync-client`), whose core keeps
/// the place (cursor, dedupe, gaps, `history_lost`), reconnects with backoff and
/// heartbeats. Each event's text goes to stdout once and in order; what the connection
/// does goes to stderr.
pub async fn listen(url: &str, token: &str, channel: &str) -> anyhow::Result<()> {
    let token = token.to_owned();
    let tokens = get_token(move || {
        let token = token.clone();
        async move { Ok(token) }
    });
    let client = Client::new(url, Options::new(tokens, MemoryStorage::new()))?;
    let band = client.channel(channel, ChannelOptions::default())?;
    let mut events = band.events();
    let mut states = client.state_changes();
    let live = band.clone();
    tokio::spawn(async move {
        if live.subscribe().await.is_ok() {
            eprintln!("following {}", live.name());
        }
    });
    let mut was_connected = false;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(ChannelEvent::Event { text, .. }) => println!("{text}"),
                Some(ChannelEvent::Reset { reason }) => {
                    eprintln!("{reason}: the history is gone; following from the channel's head");
                }
                Some(ChannelEvent::Presence { .. }) => {}
                None => anyhow::bail!("the client stopped"),
            },
            change = states.recv() => {
                let Some(change) = change else {
                    anyhow::bail!("the client stopped");
                };
                if let Some(message) = describe(&change, &mut was_connected) {
                    eprintln!("{message}");
                }
                if change.current == State::Failed {
                    anyhow::bail!("giving up: {}", change.reason);
                }
            }
        }
    }
}

/// What a state change means to the person watching `listen`.
fn describe(change: &StateChange, was_connected: &mut bool) -> Option<String> {
    let retry = |ms: Option<u64>| ms.map_or(String::new(), |ms| format!("; retrying in {ms} ms"));
    match change.current {
        State::Connected if *was_connected => Some("reconnected; resuming".into()),
        State::Connected => {
            *was_connected = true;
            None
        }
        State::Disconnected => Some(format!(
            "connection lost ({}){}",
            change.reason,
            retry(change.retry_in_ms)
        )),
        State::Suspended => Some(format!(
            "no connection for 2 minutes ({}){}",
            change.reason,
            retry(change.retry_in_ms)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_when_it_reconnects_not_when_it_first_connects() {
        let change = |current, reason: &str, retry_in_ms| StateChange {
            previous: State::Connecting,
            current,
            reason: reason.into(),
            retry_in_ms,
        };
        let mut was = false;
        assert_eq!(
            describe(&change(State::Connected, "connected", None), &mut was),
            None
        );
        let lost = describe(
            &change(State::Disconnected, "closed (1001)", Some(1500)),
            &mut was,
        );
        assert_eq!(
            lost.as_deref(),
            Some("connection lost (closed (1001)); retrying in 1500 ms")
        );
        assert_eq!(
            describe(&change(State::Connected, "connected", None), &mut was).as_deref(),
            Some("reconnected; resuming")
        );
    }
}
