//! The sync worker: its engines against the fakes of `bandsync-google-fake`, and the
//! folder source on a temporary directory.

mod calendar;
mod doubles;
mod drive;
mod setlist;
mod worker;
