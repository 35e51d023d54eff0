//! `bandsync-local listen`: a reference client. It subscribes to a channel, prints every
//! event once and in order, and keeps its place: on a gap or a reconnect it sends
//! `resume` with the last seq it has, and on `history_lost` it says so and starts over.
//! This is what a band member's app does on a flaky phone.
//!
//! Its connection, [`Socket`], is also the one the tests and benches talk to the stack
//! with (through `bandsync-testkit`): one WebSocket client, not one per test file.

use bandsync::backoff::Backoff;
use bandsync::error::ErrorCode;
use bandsync::model::ChannelName;
use bandsync::wire::frames::{ClientRequest, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
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

    /// `resume` a channel after `cursor`.
    pub async fn resume(&mut self, channel: &ChannelName, cursor: &Cursor) -> anyhow::Result<()> {
        self.send(&cursor.resume_request(channel)).await
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

/// Where a client stands on one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    pub epoch: Option<String>,
    pub seq: u64,
}

/// What to do with an incoming event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The next one: show it.
    Next,
    /// Already had it (at-least-once delivery): drop it.
    Repeat,
    /// Something is missing before it: ask for `resume` from the cursor.
    Gap,
}

impl Cursor {
    pub fn observe(&mut self, epoch: &str, seq: u64) -> Seen {
        if self.epoch.as_deref() != Some(epoch) {
            if self.epoch.is_some() || seq != 1 {
                return Seen::Gap;
            }
            self.epoch = Some(epoch.to_owned());
        }
        if seq <= self.seq {
            return Seen::Repeat;
        }
        if seq != self.seq + 1 {
            return Seen::Gap;
        }
        self.seq = seq;
        Seen::Next
    }

    /// The `resume` request that continues from here.
    pub fn resume_request(&self, channel: &ChannelName) -> ClientRequest {
        ClientRequest::Resume {
            channel: channel.clone(),
            after_seq: self.seq,
            epoch: self.epoch.clone(),
        }
    }
}

/// The waits between reconnects: full jitter in windows from 250 ms doubling up to 10 s,
/// so a crowd of clients dropped together does not come back together.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));

/// Listen forever, reconnecting with backoff.
pub async fn listen(url: &str, token: &str, channel: &str) -> anyhow::Result<()> {
    let channel =
        ChannelName::parse(channel).map_err(|e| anyhow::anyhow!("channel {channel:?}: {e}"))?;
    let mut cursor = Cursor::default();
    let mut retry = 0;
    loop {
        let mut subscribed = false;
        let outcome = session(url, token, &channel, &mut cursor, &mut subscribed).await;
        // A session that got as far as subscribing was a good one: the next drop starts
        // the backoff over instead of waiting the longest window.
        if subscribed {
            retry = 0;
        }
        retry += 1;
        let wait = RECONNECT.jittered(retry);
        match outcome {
            Ok(()) => eprintln!("connection closed; reconnecting in {wait:?}"),
            Err(e) => eprintln!("connection failed: {e:#}; reconnecting in {wait:?}"),
        }
        tokio::time::sleep(wait).await;
    }
}

/// One connection: subscribe (or resume), then print events until it ends. `subscribed`
/// is set once the server answered the subscription.
async fn session(
    url: &str,
    token: &str,
    channel: &ChannelName,
    cursor: &mut Cursor,
    subscribed: &mut bool,
) -> anyhow::Result<()> {
    let mut ws = Socket::connect(url, token).await?;
    if cursor.epoch.is_some() {
        ws.resume(channel, cursor).await?;
    } else {
        ws.subscribe(channel).await?;
    }
    // One resume at a time: events that arrive while it replays are repeats or gaps it fills.
    let mut resuming = cursor.epoch.is_some();
    while let Some(incoming) = ws.next().await {
        let Incoming::Frame(frame) = incoming? else {
            continue;
        };
        let text = &frame.text;
        let Ok(parsed) = frame.server_frame() else {
            eprintln!("{text}");
            continue;
        };
        match parsed {
            ServerFrame::Event(event) => match cursor.observe(&event.epoch, event.seq) {
                Seen::Next => println!("{text}"),
                Seen::Repeat => {}
                Seen::Gap if resuming => {}
                Seen::Gap => {
                    let seq = event.seq;
                    eprintln!("gap before seq {seq}; resuming after {}", cursor.seq);
                    resuming = true;
                    ws.resume(channel, cursor).await?;
                }
            },
            ServerFrame::Subscribed { seq, epoch, .. } => {
                *subscribed = true;
                if cursor.epoch.is_none() {
                    cursor.epoch = epoch;
                    cursor.seq = seq;
                }
                eprintln!("{text}");
            }
            ServerFrame::Resumed { more: true, .. } => {
                *subscribed = true;
                // A bounded replay: ask for the next part from where it stopped.
                ws.resume(channel, cursor).await?;
            }
            ServerFrame::Resumed { .. } => {
                *subscribed = true;
                resuming = false;
                eprintln!("{text}");
            }
            ServerFrame::Error {
                code: ErrorCode::HistoryLost,
                message,
                ..
            } => {
                eprintln!("history lost ({message:?}); refetch state, then following from now");
                *cursor = Cursor::default();
                resuming = false;
                ws.subscribe(channel).await?;
            }
            _ => eprintln!("{text}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_repeats_and_gaps() {
        let mut c = Cursor::default();
        assert_eq!(c.observe("e1", 1), Seen::Next);
        assert_eq!(c.observe("e1", 2), Seen::Next);
        assert_eq!(c.observe("e1", 2), Seen::Repeat);
        assert_eq!(c.observe("e1", 1), Seen::Repeat);
        assert_eq!(c.observe("e1", 4), Seen::Gap);
        assert_eq!(c.seq, 2, "a gap does not move the cursor");
        assert_eq!(c.observe("e1", 3), Seen::Next);
        assert_eq!(c.observe("e2", 1), Seen::Gap, "a new epoch is a gap");
    }

    #[test]
    fn a_fresh_cursor_starts_at_seq_one_or_from_its_subscription() {
        let mut c = Cursor::default();
        assert_eq!(c.observe("e1", 5), Seen::Gap);
        let mut c = Cursor {
            epoch: Some("e1".into()),
            seq: 4,
        };
        assert_eq!(c.observe("e1", 5), Seen::Next);
        let demo = ChannelName::parse("band:demo").unwrap();
        let ClientRequest::Resume { after_seq, .. } = c.resume_request(&demo) else {
            panic!("a resume request");
        };
        assert_eq!(after_seq, 5);
    }
}
