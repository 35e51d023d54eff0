//! The WebSocket test client: `listen`'s [`Socket`] with a test's expectations (panics
//! with what was seen instead of errors) and a buffer of frames not yet asked for.

use super::{WAIT, names};
use bandsync::entities::records::Platform;
use bandsync::model::{BandId, ChannelName, DeviceId};
use bandsync::wire::frames::{ClientRequest, PushRequest, RegisterDevice};
use bandsync_local::listen::{Incoming, Socket};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

pub struct Client {
    pub socket: Socket,
    /// Frames received but not yet taken.
    pending: Vec<Value>,
}

impl Client {
    pub async fn connect(url: &str, token: &str) -> Client {
        Client {
            socket: Socket::connect(url, token)
                .await
                .expect("websocket connects"),
            pending: Vec::new(),
        }
    }

    /// Send a client request.
    pub async fn request(&mut self, request: &ClientRequest) {
        self.socket.send(request).await.expect("send");
    }

    /// Send a client request with a `ref` its replies echo.
    pub async fn request_with_ref(&mut self, request: &ClientRequest, reference: Value) {
        let mut frame = serde_json::to_value(request).expect("a request is JSON");
        frame["ref"] = reference;
        self.send(frame).await;
    }

    /// Register `device` (named after itself), wanting `categories` if given; the reply
    /// (a `device` frame, or an `error`) is left to the caller.
    pub async fn send_register_device(
        &mut self,
        device: &str,
        platform: Platform,
        categories: Option<&[&str]>,
    ) {
        let request = ClientRequest::RegisterDevice(RegisterDevice {
            device: DeviceId::parse(device).expect("a device id"),
            platform,
            name: device.to_owned(),
            categories: categories.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
        });
        self.request(&request).await;
    }

    /// Register `device` as [`Self::send_register_device`] does, and return its `device`
    /// reply.
    pub async fn register_device(
        &mut self,
        device: &str,
        platform: Platform,
        categories: Option<&[&str]>,
    ) -> Value {
        self.send_register_device(device, platform, categories)
            .await;
        self.expect("device").await
    }

    /// Push `mutations` (JSON, as an app writes them) from `device` with `reference` as
    /// the `ref`; the `push_result` (or `error`) is left to the caller.
    pub async fn push(
        &mut self,
        band: &str,
        device: &str,
        reference: Value,
        mutations: Vec<Value>,
    ) {
        let request = ClientRequest::Push(PushRequest {
            band: BandId::parse(band).expect("a band id"),
            device: DeviceId::parse(device).expect("a device id"),
            mutations,
        });
        self.request_with_ref(&request, reference).await;
    }

    /// Ask who of `band` is online; returns the `presence` reply.
    pub async fn presence(&mut self, band: &str) -> Value {
        let band = BandId::parse(band).expect("a band id");
        self.request(&ClientRequest::Presence { band }).await;
        self.expect("presence").await
    }

    /// Send any JSON as a frame, request or not (for the bad-input tests).
    pub async fn send(&mut self, frame: Value) {
        self.socket.send_json(&frame).await.expect("send");
    }

    /// Send a text frame as is (for frames that are not JSON).
    pub async fn send_text(&mut self, text: &str) {
        self.socket.send_text(text).await.expect("send");
    }

    /// The next text frame as JSON, or None on close / timeout.
    pub async fn recv(&mut self, wait: Duration) -> Option<Value> {
        if !self.pending.is_empty() {
            return Some(self.pending.remove(0));
        }
        self.recv_until(Instant::now() + wait).await
    }

    /// The next frame from the socket before `deadline`, or None on close / timeout.
    async fn recv_until(&mut self, deadline: Instant) -> Option<Value> {
        tokio::time::timeout_at(deadline, self.socket.next_frame())
            .await
            .ok()
            .flatten()
            .map(|f| f.json)
    }

    /// The next frame of `kind`; frames of other kinds are kept for later.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut skipped = Vec::new();
        let found = loop {
            if let Some(i) = self.pending.iter().position(|f| f["type"] == kind) {
                break self.pending.remove(i);
            }
            let Some(frame) = self.recv_until(deadline).await else {
                panic!("no {kind} frame in time; pending: {:?}", self.pending);
            };
            if frame["type"] == kind {
                break frame;
            }
            skipped.push(frame);
        };
        let mut rest = std::mem::take(&mut self.pending);
        skipped.append(&mut rest);
        self.pending = skipped;
        found
    }

    /// The next `event` frame before `deadline` (frames of other kinds are dropped), or
    /// None on close / timeout: for benches, which count what did not arrive.
    pub async fn next_event(&mut self, deadline: Instant) -> Option<Value> {
        if let Some(i) = self.pending.iter().position(|f| f["type"] == "event") {
            return Some(self.pending.remove(i));
        }
        loop {
            let frame = self.recv_until(deadline).await?;
            if frame["type"] == "event" {
                return Some(frame);
            }
        }
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        let channel = ChannelName::parse(channel).expect("a channel name");
        self.request(&ClientRequest::Subscribe { channel }).await;
        self.expect("subscribed").await
    }

    pub async fn resume(&mut self, channel: &str, after_seq: u64, epoch: &str) {
        let channel = ChannelName::parse(channel).expect("a channel name");
        let epoch = Some(epoch.to_owned());
        self.request(&ClientRequest::Resume {
            channel,
            after_seq,
            epoch,
        })
        .await;
    }

    /// Collect `event` frames until `done` says enough, failing after WAIT.
    pub async fn events_until(&mut self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let mut events = Vec::new();
        let deadline = Instant::now() + WAIT;
        while !done(&events) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.expect("event")).await {
                Ok(e) => events.push(e),
                Err(_) => panic!("timed out; events so far: {:#?}", names(&events)),
            }
        }
        events
    }

    /// Every frame up to the answer to a `ping` sent now, that answer left out. The
    /// server answers a connection's frames in order, so once the stack is drained (see
    /// `TestStack::drain`) what is not here by then is not coming.
    pub async fn frames_until_pong(&mut self) -> Vec<Value> {
        let marker = Value::String(format!("until-pong-{}", uuid::Uuid::new_v4()));
        self.send(serde_json::json!({"action": "ping", "ref": marker}))
            .await;
        let mut out = std::mem::take(&mut self.pending);
        let deadline = Instant::now() + WAIT;
        loop {
            let Some(frame) = self.recv_until(deadline).await else {
                panic!("no pong in time; frames so far: {out:?}");
            };
            if frame["type"] == "pong" && frame["ref"] == marker {
                return out;
            }
            out.push(frame);
        }
    }

    /// The code the server closes the connection with (frames before it are dropped);
    /// None when it ends without one or not within WAIT.
    pub async fn close_code(&mut self) -> Option<u16> {
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??
            {
                Ok(Incoming::Closed(code)) => return code,
                Ok(Incoming::Frame(_)) => continue,
                Err(_) => return None,
            }
        }
    }

    pub async fn close(self) {
        self.socket.close().await;
    }
}
