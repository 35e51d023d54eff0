//! `bandsync-local listen`: a reference client. It subscribes to a channel, prints every
//! event once and in order, and keeps its place: on a gap or a reconnect it sends
//! `resume` with the last seq it has, and on `history_lost` it says so and starts over.
//! This is what a band member's app does on a flaky phone.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

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

    fn resume_frame(&self, channel: &str) -> Value {
        json!({"action": "resume", "channel": channel, "after_seq": self.seq, "epoch": self.epoch})
    }
}

/// Listen forever, reconnecting with backoff.
pub async fn listen(url: &str, token: &str, channel: &str) -> anyhow::Result<()> {
    let mut cursor = Cursor::default();
    let mut backoff = Duration::from_millis(250);
    loop {
        match session(url, token, channel, &mut cursor).await {
            Ok(()) => eprintln!("connection closed; reconnecting"),
            Err(e) => eprintln!("connection failed: {e:#}; reconnecting in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn session(url: &str, token: &str, channel: &str, cursor: &mut Cursor) -> anyhow::Result<()> {
    let (mut ws, _) = connect_async(format!("{url}?token={token}")).await?;
    let first = if cursor.epoch.is_some() {
        cursor.resume_frame(channel)
    } else {
        json!({"action": "subscribe", "channel": channel})
    };
    ws.send(Message::Text(first.to_string().into())).await?;
    // One resume at a time: events that arrive while it replays are repeats or gaps it fills.
    let mut resuming = cursor.epoch.is_some();
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg? else { continue };
        let frame: Value = serde_json::from_str(&text)?;
        match frame["type"].as_str() {
            Some("event") => {
                let (Some(epoch), Some(seq)) = (frame["epoch"].as_str(), frame["seq"].as_u64())
                else {
                    continue;
                };
                match cursor.observe(epoch, seq) {
                    Seen::Next => println!("{text}"),
                    Seen::Repeat => {}
                    Seen::Gap if resuming => {}
                    Seen::Gap => {
                        eprintln!("gap before seq {seq}; resuming after {}", cursor.seq);
                        resuming = true;
                        ws.send(Message::Text(
                            cursor.resume_frame(channel).to_string().into(),
                        ))
                        .await?;
                    }
                }
            }
            Some("subscribed") => {
                if cursor.epoch.is_none() {
                    cursor.epoch = frame["epoch"].as_str().map(str::to_owned);
                    cursor.seq = frame["seq"].as_u64().unwrap_or(0);
                }
                eprintln!("{text}");
            }
            Some("resumed") if frame["more"] == true => {
                // A bounded replay: ask for the next part from where it stopped.
                ws.send(Message::Text(
                    cursor.resume_frame(channel).to_string().into(),
                ))
                .await?;
            }
            Some("resumed") => {
                resuming = false;
                eprintln!("{text}");
            }
            Some("error") if frame["code"] == "history_lost" => {
                eprintln!(
                    "history lost ({}); refetch state, then following from now",
                    frame["message"]
                );
                *cursor = Cursor::default();
                resuming = false;
                ws.send(Message::Text(
                    json!({"action": "subscribe", "channel": channel})
                        .to_string()
                        .into(),
                ))
                .await?;
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
        assert_eq!(c.resume_frame("band:demo")["after_seq"], 5);
    }
}
