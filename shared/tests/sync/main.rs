//! The sync worker: its engines against the fakes of `bandsync-google-fake`, and the
//! folder source on a temporary directory.

mod calendar;
mod doubles;
mod drive;
mod setlist;
mod worker;

use bandsync::model::{BandId, ChannelName, Event, SourceId, SyncJob, Trigger};
use bandsync_testkit::Harness;

/// A band with one stored source in a harness: what each source's `Fixture` is built on
/// (and derefs to), with the helpers they all need.
pub struct SourceFixture {
    pub h: Harness,
    pub band: BandId,
    pub source: SourceId,
}

impl SourceFixture {
    /// Job `id` for the source.
    pub fn job(&self, id: &str, trigger: Trigger) -> SyncJob {
        self.h.sync_job(id, &self.band, &self.source, trigger)
    }

    /// The band's channel, where the sync publishes.
    pub fn channel(&self) -> ChannelName {
        ChannelName::Band(self.band.clone())
    }

    /// The band channel's log.
    pub async fn log(&self) -> Vec<Event> {
        self.h.log(&self.channel()).await
    }

    /// The names of the band channel's events, in log order.
    pub async fn log_names(&self) -> Vec<String> {
        let log = self.log().await;
        log.iter().map(|e| e.event().to_owned()).collect()
    }

    /// The file events of the log after `skip` events: (event, path), in order.
    pub async fn file_events(&self, skip: usize) -> Vec<(String, String)> {
        self.log()
            .await
            .into_iter()
            .skip(skip)
            .filter(|e| e.event().starts_with("file."))
            .map(|e| {
                let path = e.data()["path"].as_str().unwrap().to_owned();
                (e.event().to_owned(), path)
            })
            .collect()
    }
}

/// Each source's fixture derefs to its [`SourceFixture`].
macro_rules! source_fixture {
    ($fixture:ty) => {
        impl std::ops::Deref for $fixture {
            type Target = crate::SourceFixture;
            fn deref(&self) -> &crate::SourceFixture {
                &self.base
            }
        }
    };
}
pub(crate) use source_fixture;
