//! Resume logic: can a client that last saw `after_seq` of `epoch` be caught up from the
//! log, or has the history it needs gone (new epoch, retention window passed)?

use crate::model::ChannelHead;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumePlan {
    /// Replay every event with seq > `after`.
    Replay { after: u64 },
    /// Nothing missed.
    UpToDate,
    /// The client must refetch state; `reason` says why.
    HistoryLost { reason: &'static str },
}

pub fn plan(head: Option<&ChannelHead>, after_seq: u64, epoch: Option<&str>) -> ResumePlan {
    let epoch = epoch.filter(|e| !e.is_empty());
    let Some(head) = head else {
        // The channel has no log yet: only a client that has seen nothing is consistent.
        return if after_seq == 0 && epoch.is_none() {
            ResumePlan::UpToDate
        } else {
            ResumePlan::HistoryLost {
                reason: "the channel has no history",
            }
        };
    };
    match epoch {
        Some(e) if e != head.epoch => {
            return ResumePlan::HistoryLost {
                reason: "the channel's epoch changed",
            };
        }
        None if after_seq > 0 => {
            return ResumePlan::HistoryLost {
                reason: "a resume from seq > 0 needs the epoch",
            };
        }
        _ => {}
    }
    if after_seq > head.seq {
        return ResumePlan::HistoryLost {
            reason: "after_seq is ahead of the channel",
        };
    }
    if after_seq == head.seq {
        return ResumePlan::UpToDate;
    }
    if after_seq + 1 < head.first_retained {
        return ResumePlan::HistoryLost {
            reason: "the events after after_seq are past the retention window",
        };
    }
    ResumePlan::Replay { after: after_seq }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: u64, first: u64) -> ChannelHead {
        ChannelHead {
            seq,
            epoch: "e1".into(),
            first_retained: first,
        }
    }

    #[test]
    fn replays_what_was_missed() {
        assert_eq!(
            plan(Some(&head(10, 1)), 4, Some("e1")),
            ResumePlan::Replay { after: 4 }
        );
        assert_eq!(
            plan(Some(&head(10, 1)), 0, None),
            ResumePlan::Replay { after: 0 }
        );
        assert_eq!(
            plan(Some(&head(10, 5)), 4, Some("e1")),
            ResumePlan::Replay { after: 4 }
        );
        assert_eq!(
            plan(Some(&head(10, 1)), 10, Some("e1")),
            ResumePlan::UpToDate
        );
        assert_eq!(plan(None, 0, None), ResumePlan::UpToDate);
    }

    #[test]
    fn history_lost_cases() {
        let lost = |p| matches!(p, ResumePlan::HistoryLost { .. });
        assert!(
            lost(plan(Some(&head(10, 1)), 4, Some("e0"))),
            "epoch changed"
        );
        assert!(
            lost(plan(Some(&head(10, 6)), 4, Some("e1"))),
            "window passed"
        );
        assert!(
            lost(plan(Some(&head(10, 1)), 11, Some("e1"))),
            "ahead of the log"
        );
        assert!(lost(plan(Some(&head(10, 1)), 3, None)), "no epoch");
        assert!(lost(plan(None, 3, Some("e1"))), "no history at all");
    }
}
