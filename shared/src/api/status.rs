//! What members and operators read: health, status, sync triggers and operations,
//! presence, and the band's stats.

use super::*;

impl Api {
    pub(super) async fn health(&self) -> (u16, Value) {
        let mut checks = std::collections::BTreeMap::new();
        let mut all_up = true;
        for (name, check) in &self.checks {
            let state = match check.check().await {
                Ok(()) => "up",
                Err(e) => {
                    // The detail is for the operator's log, not for an unauthenticated caller.
                    tracing::error!(dependency = %name, error = ?e, "health check failed");
                    all_up = false;
                    "down"
                }
            };
            checks.insert(
                name.clone(),
                CheckState {
                    status: state.into(),
                },
            );
        }
        let status = if all_up { "ok" } else { "degraded" };
        (
            if all_up { 200 } else { 503 },
            json!(Health {
                status: status.into(),
                checks
            }),
        )
    }

    pub(super) async fn status(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let config = self.configs.get_config(&band).await?;
        let sources = self.sources.list_sources(&band).await?;
        let channels = self.watch_channels.list_watch_channels(&band).await?;
        let head = self.log.head(&ChannelName::Band(band.clone())).await?;
        let last = self
            .operations
            .list_operations(&band, 1)
            .await?
            .into_iter()
            .next();
        let watch_channels = channels
            .into_iter()
            .map(|c| WatchChannelView {
                expired: c.expires_at.is_some_and(|at| at <= self.clock.now()),
                id: c.id,
                source: c.source,
                kind: c.kind,
                resource_id: c.resource_id,
                created_at: c.created_at,
                expires_at: c.expires_at,
                last_message: c.last_message,
                last_message_at: c.last_message_at,
            })
            .collect();
        let status = Status {
            band,
            config: config.as_ref().map(ConfigView::from),
            sources,
            watch_channels,
            channel: head,
            last_operation: last,
        };
        Ok((200, json!(status)))
    }

    pub(super) async fn trigger(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let body: SyncRequestBody = json_body(req, "{band, source?, full?}")?;
        Self::allowed(member, &body.band)?;
        let jobs = crate::sync::request_sync(
            self.sources.as_ref(),
            self.sync_queue.as_ref(),
            crate::sync::SyncRequest {
                band: &body.band,
                source: body.source.as_ref(),
                full: body.full,
                trigger: Trigger::Manual,
                requested_by: &member.user,
            },
            self.clock.now(),
        )
        .await?;
        let queued = jobs
            .into_iter()
            .map(|j| QueuedJob {
                job: j.id,
                source: j.source,
                full: j.full,
            })
            .collect();
        Ok((202, json!(TriggerAccepted { queued })))
    }

    pub(super) async fn operations(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let limit = match req.query_string_parameters.first("limit") {
            None => DEFAULT_LIMIT,
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    Refusal::new(
                        ErrorCode::InvalidParameter,
                        format!("limit must be 1..={MAX_LIMIT}"),
                    )
                })?,
        };
        let ops = self.operations.list_operations(&band, limit).await?;
        Ok((
            200,
            json!(OperationList {
                band,
                operations: ops
            }),
        ))
    }

    pub(super) async fn operation(
        &self,
        member: &Member,
        id: &str,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let not_found = || Refusal::new(ErrorCode::NotFound, format!("no operation {id}"));
        // The query before any read: a bad cursor costs nothing.
        let after = number_param(req, "after", 0, u64::from(u32::MAX))?.unwrap_or(0);
        let limit = number_param(req, "limit", 1, MAX_ITEMS as u64)?.unwrap_or(MAX_ITEMS as u64);
        let (after, limit) = (
            u32::try_from(after).unwrap_or(u32::MAX),
            usize::try_from(limit).unwrap_or(MAX_ITEMS),
        );
        // Another band's operation is "not found", not "forbidden": ids are not disclosed.
        let op = self
            .operations
            .get_operation(id)
            .await?
            .filter(|op| member.is_member_of(&op.band))
            .ok_or_else(not_found)?;
        // A large sync has many items: one page of them is read (a Lambda response is at
        // most 6 MB, and reading every item to keep 1,000 cost a read per item), and the
        // total comes from the last item's number alone.
        let items = self
            .operations
            .list_items_after(&op.id, after, limit)
            .await?;
        let total = self.operations.count_items(&op.id).await?;
        let next = items.last().map(|i| i.n).filter(|n| u64::from(*n) < total);
        let detail = OperationDetail {
            operation: op,
            items,
            items_total: total,
            items_truncated: next.is_some(),
            next,
        };
        Ok((200, json!(detail)))
    }

    /// The band's members online now: the body of the `presence` frame.
    pub(super) async fn presence(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let store = self
            .presence
            .as_deref()
            .ok_or_else(|| Refusal::new(ErrorCode::NotConfigured, "presence is not kept here"))?;
        let members = crate::presence::online(store, &band).await?;
        let list = crate::wire::http::PresenceList {
            kind: crate::wire::http::PresenceKind::Presence,
            band,
            members,
        };
        Ok((200, json!(list)))
    }

    pub(super) async fn stats(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let ops = self.operations.list_operations(&band, MAX_LIMIT).await?;
        let count = |s: OperationStatus| ops.iter().filter(|o| o.status == s).count() as u64;
        let synced: u64 = ops.iter().map(|o| o.metrics.synced).sum();
        let failed: u64 = ops.iter().map(|o| o.metrics.failed).sum();
        let mut durations: Vec<u64> = ops
            .iter()
            .filter(|o| o.status == OperationStatus::Completed)
            .map(|o| o.metrics.duration_ms)
            .collect();
        durations.sort_unstable();
        let pct = |p: usize| {
            durations
                .get((durations.len().saturating_sub(1)) * p / 100)
                .copied()
        };
        let head = self.log.head(&ChannelName::Band(band.clone())).await?;
        let verdicts = self.entities.verdict_counts(&band).await?;
        let stats = Stats {
            band,
            window: StatsWindow {
                operations: ops.len() as u64,
            },
            operations: OperationCounts {
                completed: count(OperationStatus::Completed),
                failed: count(OperationStatus::Failed),
                running: count(OperationStatus::Running),
            },
            items: ItemCounts { synced, failed },
            duration_ms: Percentiles {
                p50: pct(50),
                p99: pct(99),
            },
            events: LogPosition {
                seq: head.as_ref().map(|h| h.seq),
                epoch: head.map(|h| h.epoch),
            },
            entities: crate::entities::stats::verdict_counts(&verdicts),
        };
        Ok((200, json!(stats)))
    }
}
