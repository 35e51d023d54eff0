//! The Google sources' engines against the fakes of `bandsync-google-fake`.

mod calendar;
mod drive;
mod setlist;
