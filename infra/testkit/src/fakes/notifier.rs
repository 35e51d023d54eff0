use super::lock;
use async_trait::async_trait;
use bandsync::ports::{Notifier, PortResult};
use std::sync::Mutex;

/// Keeps every alert as (subject, message).
#[derive(Debug, Default)]
pub struct RecordingNotifier {
    alerts: Mutex<Vec<(String, String)>>,
}

impl RecordingNotifier {
    pub fn alerts(&self) -> Vec<(String, String)> {
        lock(&self.alerts).clone()
    }
}

#[async_trait]
impl Notifier for RecordingNotifier {
    async fn alert(&self, subject: &str, message: &str) -> PortResult<()> {
        lock(&self.alerts).push((subject.to_owned(), message.to_owned()));
        Ok(())
    }
}
