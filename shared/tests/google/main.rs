//! The Google API clients against the fakes of `bandsync-google-fake` (an integration
//! test: it links the one bandsync library the fakes link, so their types meet).

mod apis;
mod calendar;
mod drive;
mod oauth;
mod retry;
mod sheets;
mod watch;
mod watch_keeper;
