//! Members' two-way sync routes: an entity, its history, the snapshot pages, a device's
//! own record and parked mutations, and the band's conflicts.

use super::*;

impl Api {
    pub(super) async fn entity(
        &self,
        band: BandId,
        ty: EntityTypeName,
        id: EntityId,
    ) -> Result<(u16, Value), Refusal> {
        let entity = self.entities.get_entity(&band, &ty, &id).await?;
        let entity = entity.ok_or_else(|| {
            Refusal::new(ErrorCode::NotFound, format!("band {band} has no {ty} {id}"))
        })?;
        Ok((200, json!(EntityView::from(&entity))))
    }

    pub(super) async fn history(
        &self,
        band: BandId,
        ty: EntityTypeName,
        id: EntityId,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let after = number_param(req, "after", 0, u64::MAX)?.unwrap_or(0);
        let entries = self
            .entities
            .history(&band, &ty, &id, after, HISTORY_PAGE)
            .await?;
        if entries.is_empty()
            && after == 0
            && self.entities.get_entity(&band, &ty, &id).await?.is_none()
        {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("band {band} has no {ty} {id}"),
            ));
        }
        let next = (entries.len() == HISTORY_PAGE)
            .then(|| entries.last().map(|e| e.version))
            .flatten();
        let history = EntityHistory {
            entity_type: ty,
            id,
            versions: entries.iter().map(EntityVersion::from).collect(),
            next,
        };
        Ok((200, json!(history)))
    }

    /// A page of the band's entities. The channel's head is read BEFORE the page, so
    /// every event after it is newer than or already in the page: a client that
    /// resumes from it and applies an event only when its version is newer misses
    /// nothing and applies nothing twice.
    pub(super) async fn entities(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let ty = req
            .query_string_parameters
            .first("type")
            .map(EntityTypeName::parse)
            .transpose()?;
        let after = req
            .query_string_parameters
            .first("after")
            .map(entity_cursor)
            .transpose()?;
        let limit = number_param(req, "limit", 1, MAX_ENTITY_PAGE as u64)?
            .map_or(ENTITY_PAGE, |n| n as usize);
        // Selective sync: `device=` leaves out the types its categories do not ask for.
        let wanted = match req.query_string_parameters.first("device") {
            Some(d) => self.device_types(member, d).await?,
            None => None,
        };
        let head = self.log.head(&ChannelName::Band(band.clone())).await?;
        let mut page = self
            .entities
            .list_entities(&band, ty.as_ref(), after.as_ref(), limit)
            .await?;
        if let Some(types) = &wanted {
            page.entities
                .retain(|e| types.iter().any(|t| t == e.entity_type.as_str()));
        }
        // Bounded in bytes too (text fields carry their Yjs documents): a page that would
        // pass the budget ends early, its `next` at the last entity it has.
        let mut next = page.next.map(|(t, i)| format!("{t}/{i}"));
        let mut entities: Vec<EntityView> = Vec::with_capacity(page.entities.len());
        let mut bytes = 0;
        for e in &page.entities {
            let view = EntityView::from(e);
            let size = serde_json::to_vec(&view).map_or(0, |b| b.len());
            if let Some(last) = entities.last()
                && bytes + size > ENTITY_PAGE_BYTES
            {
                next = Some(format!("{}/{}", last.entity_type, last.id));
                break;
            }
            bytes += size;
            entities.push(view);
        }
        let list = EntityList {
            band,
            seq: head.as_ref().map_or(0, |h| h.seq),
            epoch: head.map(|h| h.epoch),
            entities,
            next,
        };
        Ok((200, json!(list)))
    }

    /// The entity types the member's `device` asks for (`None`: every type).
    pub(super) async fn device_types(
        &self,
        member: &Member,
        device: &str,
    ) -> Result<Option<Vec<String>>, Refusal> {
        let id = crate::model::DeviceId::parse(device)?;
        let Some(record) = self.entities.get_device(&id).await? else {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("no device {id} is registered; send register_device first"),
            ));
        };
        crate::entities::devices::taken(&record, &member.user)?;
        Ok(crate::entities::categories::entity_types(
            &record.categories,
        ))
    }

    /// The member's own `device` in `band` (a member of the band): another member's is
    /// `forbidden`, an unknown one `not_found`.
    pub(super) async fn own_device(
        &self,
        member: &Member,
        band: &BandId,
        device: &str,
    ) -> Result<crate::model::DeviceId, Refusal> {
        let id = crate::model::DeviceId::parse(device)?;
        let record = self.entities.get_device(&id).await?.ok_or_else(|| {
            Refusal::new(ErrorCode::NotFound, format!("no device {id} is registered"))
        })?;
        if record.member != member.user {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                format!(
                    "device {id} is another member's; only its own member sees its parked mutations in band {band}"
                ),
            ));
        }
        Ok(id)
    }

    /// A page of the device's parked mutations in the band, newest first. The store
    /// pages by mid over all of the device's bands; a page is filtered to this band, so
    /// it may hold fewer than `limit` while `next` says more may follow.
    pub(super) async fn parked(
        &self,
        member: &Member,
        device: &str,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let device = self.own_device(member, &band, device).await?;
        let before = number_param(req, "before", 1, u64::MAX)?;
        let limit = number_param(req, "limit", 1, MAX_PARKED_PAGE as u64)?
            .map_or(PARKED_PAGE, |n| n as usize);
        let receipts = self.entities.parked_before(&device, before, limit).await?;
        let mut parked = Vec::new();
        let mut bytes = 0;
        // The last mid this page covers, and whether the byte budget ended it early.
        let mut last = None;
        let mut full = false;
        for r in &receipts {
            if let Some(p) = Some(r)
                .filter(|r| r.band == band)
                .and_then(crate::wire::http::ParkedMutation::of)
            {
                let size = serde_json::to_vec(&p).map_or(usize::MAX, |v| v.len());
                // At least one per page, or a page could never move on.
                if !parked.is_empty() && bytes + size > MAX_PARKED_PAGE_BYTES {
                    full = true;
                    break;
                }
                bytes += size;
                parked.push(p);
            }
            last = Some(r.mid);
        }
        let next = (full || receipts.len() == limit).then_some(last).flatten();
        let list = crate::wire::http::ParkedList {
            parked,
            band,
            device,
            next,
        };
        Ok((200, json!(list)))
    }

    /// Dismiss a parked mutation: 204 whether it was still listed or not (a repeat is
    /// harmless). The mid keeps its verdict; only the listing forgets it.
    pub(super) async fn dismiss_parked(
        &self,
        member: &Member,
        device: &str,
        mid: &str,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let device = self.own_device(member, &band, device).await?;
        let mid = mid.parse::<u64>().ok().filter(|m| *m >= 1).ok_or_else(|| {
            Refusal::new(
                ErrorCode::InvalidParameter,
                format!("mid must be an integer from 1, not {mid:?}"),
            )
        })?;
        // Only a receipt of this band may be dismissed through it.
        let receipt = self.entities.receipts(&device, mid, mid).await?;
        if receipt.first().is_some_and(|r| r.band == band) {
            self.entities.dismiss_parked(&device, mid).await?;
        }
        Ok(no_content())
    }

    pub(super) async fn conflicts(
        &self,
        member: &Member,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let band = Self::band(member, req)?;
        let mut conflicts = self
            .entities
            .list_conflicts(&band, false, MAX_CONFLICTS + 1)
            .await?;
        let truncated = conflicts.len() > MAX_CONFLICTS;
        conflicts.truncate(MAX_CONFLICTS);
        let counts = crate::entities::stats::conflict_counts(&conflicts);
        let open = conflicts.iter().filter(|c| c.resolution.is_none()).count() as u64;
        let list = ConflictList {
            band,
            open,
            resolved: conflicts.len() as u64 - open,
            counts,
            conflicts,
            truncated,
        };
        Ok((200, json!(list)))
    }
}
