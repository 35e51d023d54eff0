//! The watch-channel lifecycle, run by the scheduler on every tick: each Google source
//! (Drive folder, setlist sheet, calendar) keeps one live push channel.
//!
//! - a source without a live channel gets one: a random id (UUID) and token (244 random
//!   bits), of which only the token's hash is stored;
//! - a channel is renewed once less than a quarter of its life is left: the new channel
//!   is opened and stored *first*, then the old one is stopped (`channels.stop`) and
//!   forgotten, so the two overlap and no notification falls between them;
//! - channels of sources that are gone are stopped and forgotten; expired ones are just
//!   forgotten (Google has ended them);
//! - a failure on one source is logged and counted; the others go on, and the old
//!   channel stays until a renewal succeeds. A stop that fails keeps the record so the
//!   next tick tries again (Google also ends it at its expiry).
//!
//! Folder sources (the local stack's stand-in for Drive) are left alone: the folder
//! watcher registers its own channel.

use crate::google::apis::WatchApi;
use crate::google::watch::WatchRequest;
use crate::model::{BandId, Source, SourceKind, WatchChannel};
use crate::ports::{Clock, PortError, SourceStore, WatchChannelStore};
use crate::webhook::token_hash;
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Arc;
use std::time::Instant;

/// How long a new channel is asked to live. Google caps it per resource (Drive files:
/// one day; the change log and calendars: longer) and answers the real expiry.
pub fn requested_ttl(kind: SourceKind) -> TimeDelta {
    match kind {
        SourceKind::Sheet => TimeDelta::days(1),
        _ => TimeDelta::days(7),
    }
}

/// What one pass did, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelReport {
    pub created: usize,
    pub renewed: usize,
    pub stopped: usize,
    pub forgotten: usize,
    pub failed: usize,
    /// Calls left for the next run: the time budget was spent.
    pub deferred: usize,
}

impl ChannelReport {
    pub fn add(&mut self, other: &ChannelReport) {
        self.created += other.created;
        self.renewed += other.renewed;
        self.stopped += other.stopped;
        self.forgotten += other.forgotten;
        self.failed += other.failed;
        self.deferred += other.deferred;
    }
}

pub struct ChannelKeeper {
    sources: Arc<dyn SourceStore>,
    channels: Arc<dyn WatchChannelStore>,
    api: Arc<dyn WatchApi>,
    clock: Arc<dyn Clock>,
    /// The public HTTPS URL of `/webhooks/google`.
    address: String,
}

fn is_google(kind: SourceKind) -> bool {
    !matches!(kind, SourceKind::Folder)
}

impl ChannelKeeper {
    pub fn new(
        sources: Arc<dyn SourceStore>,
        channels: Arc<dyn WatchChannelStore>,
        api: Arc<dyn WatchApi>,
        clock: Arc<dyn Clock>,
        address: String,
    ) -> Self {
        Self {
            sources,
            channels,
            api,
            clock,
            address,
        }
    }

    /// One pass over a band's sources and channels. No Google call starts after
    /// `deadline`: what is left is counted as deferred, for the next run.
    #[tracing::instrument(skip(self, deadline), fields(band = %band))]
    pub async fn tick_band(
        &self,
        band: &BandId,
        deadline: Instant,
    ) -> Result<ChannelReport, PortError> {
        let now = self.clock.now();
        let sources = self.sources.list_sources(band).await?;
        let channels = self.channels.list_watch_channels(band).await?;
        let mut report = ChannelReport::default();
        // Channels this pass keeps: the live (or just opened) one of each source.
        let mut keep: Vec<String> = Vec::new();
        for source in sources.iter().filter(|s| is_google(s.kind)) {
            let newest = channels
                .iter()
                .filter(|c| c.source == source.id && c.expires_at.is_some_and(|at| at > now))
                .max_by_key(|c| c.expires_at);
            let due = newest.is_none_or(|c| renewal_due(c, now));
            if !due || Instant::now() >= deadline {
                report.deferred += usize::from(due);
                keep.extend(newest.map(|c| c.id.clone()));
                continue;
            }
            match self.open(source, now).await {
                Ok(opened) => {
                    if newest.is_some() {
                        report.renewed += 1;
                    } else {
                        report.created += 1;
                    }
                    keep.push(opened.id);
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::error!(source = %source.id, error = %e, "could not open a watch channel");
                    // Keep the old one while it lives: it still delivers.
                    keep.extend(newest.map(|c| c.id.clone()));
                }
            }
        }
        for old in channels.iter().filter(|c| !keep.contains(&c.id)) {
            let Some(kind) = old.kind.filter(|k| is_google(*k)) else {
                continue;
            };
            if old.expires_at.is_some_and(|at| at <= now) {
                self.channels.delete_watch_channel(old).await?;
                report.forgotten += 1;
                continue;
            }
            if Instant::now() >= deadline {
                report.deferred += 1;
                continue;
            }
            match self
                .api
                .stop(&old.band, kind, &old.id, &old.resource_id)
                .await
            {
                Ok(()) => {
                    self.channels.delete_watch_channel(old).await?;
                    report.stopped += 1;
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(channel = %old.id, error = %e, "could not stop a watch channel; will retry");
                }
            }
        }
        Ok(report)
    }

    async fn open(&self, source: &Source, now: DateTime<Utc>) -> Result<WatchChannel, String> {
        let id = uuid::Uuid::new_v4().to_string();
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let asked = now + requested_ttl(source.kind);
        let request = WatchRequest::new(id.clone(), self.address.clone(), token.clone(), asked);
        let channel = self
            .api
            .watch(source, &request)
            .await
            .map_err(|e| e.to_string())?;
        let stored = WatchChannel {
            id,
            band: source.band.clone(),
            source: source.id.clone(),
            resource_id: channel.resource_id.clone(),
            token_hash: token_hash(&token),
            expires_at: Some(channel.expires_at().unwrap_or(asked)),
            last_message: None,
            last_message_at: None,
            kind: Some(source.kind),
            created_at: Some(now),
        };
        if let Err(e) = self.channels.put_watch_channel(&stored).await {
            // Google has it, we do not: stop it rather than leave it unverifiable.
            let _ = self
                .api
                .stop(&source.band, source.kind, &stored.id, &stored.resource_id)
                .await;
            return Err(format!("storing the channel: {e}"));
        }
        tracing::info!(channel = %stored.id, source = %source.id, expires_at = ?stored.expires_at, "watch channel opened");
        Ok(stored)
    }
}

/// Less than a quarter of the channel's life left (its life: from creation, or the
/// requested TTL when the creation time is unknown).
fn renewal_due(channel: &WatchChannel, now: DateTime<Utc>) -> bool {
    let Some(expires) = channel.expires_at else {
        return true;
    };
    let life = match (channel.created_at, channel.kind) {
        (Some(created), _) => expires - created,
        (None, Some(kind)) => requested_ttl(kind),
        (None, None) => TimeDelta::days(1),
    };
    expires - now < life / 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::google::apis::{GoogleApis, GoogleUrls};
    use crate::google::fake::FakeDrive;
    use crate::google::fake_calendar::FakeCalendar;
    use crate::model::SourceId;
    use crate::ports::{SourceStore, WatchChannelStore};
    use crate::testing::*;

    const TOKEN: &str = "ya29.channels-test";
    const ADDRESS: &str = "https://bandsync.example.com/webhooks/google";

    struct Fixture {
        h: Harness,
        fake: FakeDrive,
        calendar: FakeCalendar,
        keeper: ChannelKeeper,
        band: BandId,
    }

    const CAL: &str = "band@group.calendar.google.com";

    async fn fixture() -> Fixture {
        let h = Harness::new();
        let band = h.add_band("demo").await;
        let fake = FakeDrive::start(TOKEN).await.unwrap();
        let folder = fake.create_folder(&fake.root_id(), "Band");
        let sheet = fake.create_file(
            &fake.root_id(),
            "Setlist",
            "application/vnd.google-apps.spreadsheet",
            b"",
        );
        let calendar = FakeCalendar::start(TOKEN).await.unwrap();
        calendar.add_calendar(CAL);
        for (id, kind, location) in [
            ("charts", SourceKind::Drive, folder),
            ("setlist", SourceKind::Sheet, sheet),
            ("gigs", SourceKind::Calendar, CAL.to_owned()),
        ] {
            let source = Source::new(band.clone(), SourceId::parse(id).unwrap(), kind, location);
            h.store.put_source(&source).await.unwrap();
        }
        let urls = GoogleUrls {
            calendar: calendar.base_url(),
            ..GoogleUrls::all_at(&fake.base_url())
        };
        let apis = GoogleApis::with_static_token(urls, TOKEN).unwrap();
        let keeper = ChannelKeeper::new(
            h.store.clone(),
            h.store.clone(),
            Arc::new(apis),
            h.clock.clone(),
            ADDRESS.into(),
        );
        Fixture {
            h,
            fake,
            calendar,
            keeper,
            band,
        }
    }

    /// A deadline far enough away.
    fn later() -> Instant {
        Instant::now() + std::time::Duration::from_secs(60)
    }

    async fn stored(f: &Fixture) -> Vec<WatchChannel> {
        f.h.store.list_watch_channels(&f.band).await.unwrap()
    }

    #[tokio::test]
    async fn each_google_source_gets_one_channel_and_a_second_tick_changes_nothing() {
        // GIVEN a band with a Drive source and a setlist sheet, and no channels
        let f = fixture().await;

        // WHEN the keeper runs twice
        let first = f.keeper.tick_band(&f.band, later()).await.unwrap();
        let second = f.keeper.tick_band(&f.band, later()).await.unwrap();

        // THEN each source got one channel, the second pass did nothing
        assert_eq!(first.created, 3, "{first:?}");
        assert_eq!(second, ChannelReport::default());
        let channels = stored(&f).await;
        assert_eq!(channels.len(), 3);
        // AND Google has the same channels (Drive's for the folder and the sheet,
        // Calendar's for the calendar), on our address, and we keep only token hashes
        let mut at_google = f.fake.push().channels();
        at_google.extend(f.calendar.push().channels());
        for c in &channels {
            let g = at_google.iter().find(|g| g.id == c.id).expect("opened");
            assert_eq!(g.resource_id, c.resource_id);
            assert_eq!(g.address, ADDRESS);
            let token = g.token.clone().expect("a token");
            assert_eq!(c.token_hash, token_hash(&token));
            assert!(token.len() >= 64);
        }
        let sheet = channels
            .iter()
            .find(|c| c.source.as_str() == "setlist")
            .unwrap();
        assert_eq!(sheet.kind, Some(SourceKind::Sheet));
        assert_eq!(
            sheet.expires_at,
            Some(f.h.now() + TimeDelta::days(1)),
            "a file channel asks for one day"
        );
    }

    #[tokio::test]
    async fn renewal_opens_the_new_channel_before_stopping_the_old_one() {
        // GIVEN channels opened a while ago
        let f = fixture().await;
        f.keeper.tick_band(&f.band, later()).await.unwrap();
        let before = stored(&f).await;

        // WHEN 21 hours pass (the sheet's one-day channel has under a quarter left)
        f.h.clock.advance(TimeDelta::hours(21));
        f.fake.push(); // (the fake keeps the channels it was asked to)
        let report = f.keeper.tick_band(&f.band, later()).await.unwrap();

        // THEN the sheet's channel was renewed and the old one stopped; the Drive
        // change-log and calendar channels (7 days) were left alone
        assert_eq!((report.renewed, report.stopped), (1, 1), "{report:?}");
        let after = stored(&f).await;
        assert_eq!(after.len(), 3);
        let old_sheet = before
            .iter()
            .find(|c| c.source.as_str() == "setlist")
            .unwrap();
        let new_sheet = after
            .iter()
            .find(|c| c.source.as_str() == "setlist")
            .unwrap();
        assert_ne!(new_sheet.id, old_sheet.id);
        let google: Vec<String> = f.fake.push().channels().into_iter().map(|c| c.id).collect();
        assert!(!google.contains(&old_sheet.id), "the old one is stopped");
        assert!(google.contains(&new_sheet.id));
        // AND the requests show the overlap: the new watch came before the stop
        let posts: Vec<String> = f
            .fake
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .map(|r| r.path)
            .collect();
        let watch = posts.iter().rposition(|p| p.ends_with("/watch")).unwrap();
        let stop = posts
            .iter()
            .rposition(|p| p.ends_with("/channels/stop"))
            .unwrap();
        assert!(watch < stop, "{posts:?}");
    }

    #[tokio::test]
    async fn channels_of_removed_sources_are_stopped_and_expired_ones_forgotten() {
        // GIVEN live channels, then the sheet source is removed (its record replaced by a
        // folder source of the same band) and the Drive channel has expired
        let f = fixture().await;
        f.keeper.tick_band(&f.band, later()).await.unwrap();
        let mut drive = stored(&f)
            .await
            .into_iter()
            .find(|c| c.source.as_str() == "charts")
            .unwrap();
        drive.expires_at = Some(f.h.now() - TimeDelta::minutes(1));
        f.h.store.put_watch_channel(&drive).await.unwrap();
        let mut gone =
            f.h.store
                .get_source(&f.band, &SourceId::parse("setlist").unwrap())
                .await
                .unwrap()
                .unwrap();
        gone.kind = SourceKind::Folder;
        f.h.store.put_source(&gone).await.unwrap();

        // WHEN the keeper runs
        let report = f.keeper.tick_band(&f.band, later()).await.unwrap();

        // THEN the sheet's channel is stopped at Google, the expired one forgotten, and
        // the Drive source got a new channel
        assert_eq!(
            (report.stopped, report.forgotten, report.created),
            (1, 1, 1),
            "{report:?}"
        );
        let left = stored(&f).await;
        let sources: Vec<&str> = left.iter().map(|c| c.source.as_str()).collect();
        assert_eq!(sources.len(), 2);
        assert!(
            sources.contains(&"charts") && sources.contains(&"gigs"),
            "{sources:?}"
        );
        assert!(left.iter().all(|c| c.id != drive.id));
    }

    #[tokio::test]
    async fn a_failed_watch_keeps_the_old_channel_and_is_counted() {
        // GIVEN live channels near their end, and Google refusing the next calls
        let f = fixture().await;
        f.keeper.tick_band(&f.band, later()).await.unwrap();
        f.h.clock.advance(TimeDelta::hours(21));
        f.fake
            .fail_next(20, crate::google::fake::Fault::Status(403));

        // WHEN the keeper runs
        let report = f.keeper.tick_band(&f.band, later()).await.unwrap();

        // THEN the renewal failed, and the old channel is still there to deliver
        assert_eq!((report.failed, report.renewed), (1, 0), "{report:?}");
        assert_eq!(stored(&f).await.len(), 3);
    }
}
