//! The hybrid logical clock that stamps every mutation ([`Stamp`]): what `lww` and the
//! set elements compare.
//!
//! A stamp is the client's time, so the member who changed a thing last (on their
//! clock) wins, with two guards: it is clamped to the server's time plus
//! [`MAX_CLIENT_LEAD`] (a phone whose clock runs a year ahead does not win every race
//! for a year), and it is kept above the entity's clock at the mutation's base (a change
//! made on top of another always wins over it, whatever the clocks say). Concurrent
//! changes order by time, then counter, then device, then mid: no two share a stamp.

use super::state::Stamp;
use crate::model::DeviceId;
use chrono::{DateTime, TimeDelta, Utc};

/// How far ahead of the server a client's clock may count: enough for ordinary drift
/// and the time a push takes, not enough to win races for long.
pub const MAX_CLIENT_LEAD: TimeDelta = TimeDelta::seconds(5);

/// The stamp of mutation `mid` of `device`, made at `ts` on its clock and pushed when
/// the server's clock read `now`. `floor` is the entity's clock at the mutation's base
/// (none for a create): the stamp is above it.
pub fn stamp(
    ts: DateTime<Utc>,
    now: DateTime<Utc>,
    floor: Option<&Stamp>,
    device: &DeviceId,
    mid: u64,
) -> Stamp {
    let ms = ts.min(now + MAX_CLIENT_LEAD).timestamp_millis();
    let (ms, counter) = match floor {
        Some(f) if ms <= f.ms => (f.ms, f.counter.saturating_add(1)),
        _ => (ms, 0),
    };
    Stamp {
        ms,
        counter,
        device: device.clone(),
        mid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn device(s: &str) -> DeviceId {
        DeviceId::parse(s).unwrap()
    }

    #[test]
    fn a_clock_far_ahead_is_clamped_to_the_server() {
        let now = at(0);
        let ahead = stamp(
            now + TimeDelta::days(365),
            now,
            None,
            &device("phone-ahead"),
            1,
        );
        assert_eq!(ahead.ms, (now + MAX_CLIENT_LEAD).timestamp_millis());
        // A change made a minute later on a right clock wins over it.
        let later = stamp(at(60), at(60), None, &device("phone-right"), 1);
        assert!(later > ahead);
        let slightly = stamp(at(2), now, None, &device("phone-ahead"), 2);
        assert_eq!(slightly.ms, at(2).timestamp_millis(), "small drift is kept");
    }

    #[test]
    fn a_change_on_top_of_another_wins_whatever_its_clock() {
        let base = stamp(at(100), at(100), None, &device("device-zz"), 4);
        // Made on a clock an hour behind, but based on `base`.
        let on_top = stamp(at(-3600), at(101), Some(&base), &device("device-aa"), 1);
        assert!(on_top > base);
        assert_eq!((on_top.ms, on_top.counter), (base.ms, base.counter + 1));
        let again = stamp(at(-3600), at(102), Some(&on_top), &device("device-aa"), 2);
        assert_eq!(again.counter, 2);
        // A clock ahead of the floor keeps its own time.
        let ahead = stamp(at(200), at(200), Some(&base), &device("device-aa"), 3);
        assert_eq!((ahead.ms, ahead.counter), (at(200).timestamp_millis(), 0));
    }

    #[test]
    fn concurrent_changes_order_by_time_then_device() {
        let a = stamp(at(5), at(10), None, &device("device-aa"), 9);
        let b = stamp(at(5), at(10), None, &device("device-bb"), 1);
        let c = stamp(at(6), at(10), None, &device("device-aa"), 1);
        assert!(a < b && b < c);
    }
}
