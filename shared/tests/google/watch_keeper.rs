//! The watch-channel keeper against the fake Drive and Calendar APIs.

use bandsync::google::apis::{GoogleApis, GoogleUrls};
use bandsync::model::{BandId, Source, SourceId, SourceKind, WatchChannel};
use bandsync::ports::{SourceStore, WatchChannelStore};
use bandsync::watch_keeper::*;
use bandsync::webhook::token_hash;
use bandsync_google_fake::FakeDrive;
use bandsync_google_fake::calendar::FakeCalendar;
use bandsync_testkit::*;
use chrono::TimeDelta;
use std::sync::Arc;
use std::time::Instant;

const TOKEN: &str = "ya29.channels-test";
const ADDRESS: &str = "https://bandsync.example.com/webhooks/google";

struct Fixture {
    h: Harness,
    fake: FakeDrive,
    calendar: FakeCalendar,
    keeper: WatchKeeper,
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
    let keeper = WatchKeeper::new(
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
    assert_eq!(second, WatchReport::default());
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
        .fail_next(20, bandsync_google_fake::Fault::Status(403));

    // WHEN the keeper runs
    let report = f.keeper.tick_band(&f.band, later()).await.unwrap();

    // THEN the renewal failed, and the old channel is still there to deliver
    assert_eq!((report.failed, report.renewed), (1, 0), "{report:?}");
    assert_eq!(stored(&f).await.len(), 3);
}
