//! [`SnsNotifier`]: the [`Notifier`] port on an SNS topic (the template's alert topic,
//! with its optional e-mail subscription).

use crate::ports::{Notifier, PortError, PortResult};
use async_trait::async_trait;
use aws_sdk_sns::error::DisplayErrorContext;

/// SNS documents the Subject as "less than 100 characters": we send at most 99.
pub const MAX_SUBJECT: usize = 99;
/// SNS refuses a Message larger than this (bytes).
pub const MAX_MESSAGE: usize = 256 * 1024;

#[derive(Clone, Debug)]
pub struct SnsNotifier {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsNotifier {
    pub fn new(client: aws_sdk_sns::Client, topic_arn: String) -> Self {
        Self { client, topic_arn }
    }

    pub fn topic_arn(&self) -> &str {
        &self.topic_arn
    }
}

/// A Subject SNS accepts: no line breaks or control characters (each becomes a space),
/// no leading blanks, at most [`MAX_SUBJECT`] characters (a longer one is cut, ending in
/// `...`). `None` when nothing is left (SNS refuses an empty Subject).
pub fn subject_line(subject: &str) -> Option<String> {
    let clean: String = subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.trim();
    if clean.is_empty() {
        return None;
    }
    if clean.chars().count() <= MAX_SUBJECT {
        return Some(clean.to_owned());
    }
    let mut cut: String = clean.chars().take(MAX_SUBJECT - 3).collect();
    cut.truncate(cut.trim_end().len());
    cut.push_str("...");
    Some(cut)
}

/// The message cut to [`MAX_MESSAGE`] bytes on a character boundary.
fn message_body(message: &str) -> &str {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

#[async_trait]
impl Notifier for SnsNotifier {
    #[tracing::instrument(skip(self, message), fields(topic = %self.topic_arn))]
    async fn alert(&self, subject: &str, message: &str) -> PortResult<()> {
        // SNS refuses an empty Message too.
        let body = match message_body(message) {
            "" => subject,
            m => m,
        };
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .set_subject(subject_line(subject))
            .message(if body.is_empty() {
                "(empty alert)"
            } else {
                body
            })
            .send()
            .await
            .map_err(|e| {
                PortError::Backend(anyhow::anyhow!(
                    "Publish of alert {subject:?} to topic {}: {}",
                    self.topic_arn,
                    DisplayErrorContext(e)
                ))
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_subjects_pass_unchanged() {
        assert_eq!(
            subject_line("DLQ not empty").as_deref(),
            Some("DLQ not empty")
        );
        let exactly = "x".repeat(MAX_SUBJECT);
        assert_eq!(subject_line(&exactly), Some(exactly.clone()));
    }

    #[test]
    fn long_subjects_are_cut_to_the_limit() {
        let long = "é".repeat(150);
        let s = subject_line(&long).unwrap();
        assert_eq!(s.chars().count(), MAX_SUBJECT);
        assert!(s.ends_with("..."));
    }

    #[test]
    fn control_characters_and_empty_subjects() {
        assert_eq!(
            subject_line("sync failed\nfor band demo\t!").as_deref(),
            Some("sync failed for band demo !")
        );
        assert_eq!(subject_line(" \n "), None);
    }

    #[test]
    fn huge_messages_are_cut_on_a_char_boundary() {
        let m = "ü".repeat(MAX_MESSAGE);
        let cut = message_body(&m);
        assert!(cut.len() <= MAX_MESSAGE && cut.len() > MAX_MESSAGE - 4);
    }
}
