//! [`PresenceStore`] on the shared SQLite file (schema v4 of [`super::db`]): each write is
//! one IMMEDIATE transaction, so "was this the first device / the last one" is decided
//! on the state it changes.

use super::db::{exec, int, parse_ts, ts};
use super::store::EmbeddedStore;
use crate::model::{BandId, ConnectionId, UserId};
use crate::ports::{Arrival, Departure, PortResult, PresenceRecord, PresenceStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension as _, params};
use tracing::instrument;

/// A member's session row: `since`, `leaving_since`, `left_at`.
type Session = (Option<String>, Option<String>, Option<String>);

fn session(c: &rusqlite::Connection, band: &str, member: &str) -> anyhow::Result<Option<Session>> {
    let sql = "SELECT since, leaving_since, left_at FROM presence WHERE band = ?1 AND member = ?2";
    Ok(c.prepare_cached(sql)?
        .query_row([band, member], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

fn devices(c: &rusqlite::Connection, band: &str, member: &str) -> anyhow::Result<u64> {
    let sql = "SELECT COUNT(*) FROM presence_connections WHERE band = ?1 AND member = ?2";
    let n: i64 = c
        .prepare_cached(sql)?
        .query_row([band, member], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or_default())
}

fn record(
    band: &str,
    member: &str,
    since: &str,
    leaving: Option<&str>,
    devices: u64,
) -> anyhow::Result<PresenceRecord> {
    Ok(PresenceRecord {
        band: BandId::parse(band)?,
        member: UserId::parse(member)?,
        devices,
        since: parse_ts(since)?,
        leaving_since: leaving.map(parse_ts).transpose()?,
    })
}

#[async_trait]
impl PresenceStore for EmbeddedStore {
    #[instrument(skip(self), level = "debug")]
    async fn arrive(
        &self,
        band: &BandId,
        member: &UserId,
        conn: &ConnectionId,
        at: DateTime<Utc>,
    ) -> PortResult<Arrival> {
        let (b, m) = (band.as_str(), member.as_str());
        self.db.write("presence_arrive", |tx| {
            let before = devices(tx, b, m)?;
            let added = exec(
                tx,
                "INSERT OR IGNORE INTO presence_connections (band, member, conn) VALUES (?1, ?2, ?3)",
                [b, m, conn.as_str()],
            )? == 1;
            let (since, leaving, _) = session(tx, b, m)?.unwrap_or_default();
            let kept = since.as_deref().map(parse_ts).transpose()?;
            let since = kept.unwrap_or(at);
            exec(
                tx,
                "INSERT INTO presence (band, member, since, leaving_since, left_at)
                 VALUES (?1, ?2, ?3, NULL, NULL)
                 ON CONFLICT (band, member) DO UPDATE
                 SET since = excluded.since, leaving_since = NULL, left_at = NULL",
                params![b, m, ts(since)],
            )?;
            Ok(match (added, before, leaving, kept) {
                (false, _, _, _) => Arrival::Repeat { since },
                (true, 0, Some(_), Some(_)) => Arrival::Back { since },
                (true, 0, _, _) | (true, _, _, None) => Arrival::Joined { since },
                (true, n, _, Some(_)) => Arrival::Another {
                    since,
                    devices: n + 1,
                },
            })
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn depart(
        &self,
        band: &BandId,
        member: &UserId,
        conn: &ConnectionId,
        at: DateTime<Utc>,
    ) -> PortResult<Departure> {
        let (b, m) = (band.as_str(), member.as_str());
        self.db.write("presence_depart", |tx| {
            exec(
                tx,
                "DELETE FROM presence_connections WHERE band = ?1 AND member = ?2 AND conn = ?3",
                [b, m, conn.as_str()],
            )?;
            let left = devices(tx, b, m)?;
            let Some((Some(_), leaving, _)) = session(tx, b, m)? else {
                return Ok(Departure::Unchanged);
            };
            if left > 0 {
                return Ok(Departure::Remaining { devices: left });
            }
            if leaving.is_some() {
                return Ok(Departure::Unchanged);
            }
            exec(
                tx,
                "UPDATE presence SET leaving_since = ?3 WHERE band = ?1 AND member = ?2",
                params![b, m, ts(at)],
            )?;
            Ok(Departure::Leaving { since: at })
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn leaving(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> PortResult<Vec<PresenceRecord>> {
        self.db.read("presence_leaving", |c| {
            let sql = "SELECT band, member, since, leaving_since FROM presence
                       WHERE leaving_since IS NOT NULL AND leaving_since <= ?1
                       ORDER BY leaving_since LIMIT ?2";
            let mut stmt = c.prepare_cached(sql)?;
            let rows = stmt.query_map(params![ts(before), int(limit)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (band, member, since, leaving) = row?;
                let since = since.unwrap_or_else(|| leaving.clone());
                out.push(record(&band, &member, &since, Some(&leaving), 0)?);
            }
            Ok(out)
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn settle(
        &self,
        band: &BandId,
        member: &UserId,
        leaving_since: DateTime<Utc>,
    ) -> PortResult<bool> {
        let (b, m) = (band.as_str(), member.as_str());
        let mark = ts(leaving_since);
        self.db.write("presence_settle", |tx| {
            let Some((_, leaving, left_at)) = session(tx, b, m)? else {
                return Ok(false);
            };
            if left_at.as_deref() == Some(mark.as_str()) {
                return Ok(true);
            }
            if leaving.as_deref() != Some(mark.as_str()) || devices(tx, b, m)? > 0 {
                return Ok(false);
            }
            exec(
                tx,
                "UPDATE presence SET since = NULL, left_at = ?3 WHERE band = ?1 AND member = ?2",
                params![b, m, mark],
            )?;
            Ok(true)
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn forget_mark(
        &self,
        band: &BandId,
        member: &UserId,
        leaving_since: DateTime<Utc>,
    ) -> PortResult<()> {
        self.db.write("presence_forget_mark", |tx| {
            exec(
                tx,
                "UPDATE presence SET leaving_since = NULL
                 WHERE band = ?1 AND member = ?2 AND leaving_since = ?3",
                params![band.as_str(), member.as_str(), ts(leaving_since)],
            )?;
            Ok(())
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn present(&self, band: &BandId) -> PortResult<Vec<PresenceRecord>> {
        self.db.read("presence_present", |c| {
            let sql = "SELECT p.member, p.since, p.leaving_since,
                              (SELECT COUNT(*) FROM presence_connections k
                               WHERE k.band = p.band AND k.member = p.member)
                       FROM presence p WHERE p.band = ?1 AND p.since IS NOT NULL
                       ORDER BY p.member";
            let mut stmt = c.prepare_cached(sql)?;
            let rows = stmt.query_map([band.as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (member, since, leaving, n) = row?;
                let n = u64::try_from(n).unwrap_or_default();
                out.push(record(
                    band.as_str(),
                    &member,
                    &since,
                    leaving.as_deref(),
                    n,
                )?);
            }
            Ok(out)
        })
    }
}
