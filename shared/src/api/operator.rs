//! The operator routes (`/sync/bands/...`, an operator's token): a band's configuration,
//! its Google credentials (sealed on the way in, never shown again), its sources, its
//! entity types, and the rebuild check of its entities.

use super::*;
use crate::model::SourcePurge;
use crate::ports::WriteOutcome;

/// How many times an operator's edit is applied to the record as stored and written
/// back when another write got in between (each try starts from the newer record).
const EDIT_TRIES: usize = 5;

pub(super) fn not_registered(band: &BandId) -> Refusal {
    Refusal::new(
        ErrorCode::NotFound,
        format!("band {band} is not registered (PUT /sync/bands/{band} first)"),
    )
}

fn edit_raced(what: &str) -> Refusal {
    Refusal::new(
        ErrorCode::Conflict,
        format!("{what} kept changing while this request applied; try again"),
    )
}

impl Api {
    /// Apply `edit` to the band's configuration as stored (`None`: it has none) and write
    /// what it returns (`None`: nothing to write) back only onto the revision it read. If
    /// another edit got in between, read again and apply `edit` to the newer record: an
    /// edit writes back only what it changes, so an overlapping one (a credentials
    /// delete, say) is never undone by a whole-record write from an older read.
    async fn edit_config<T>(
        &self,
        band: &BandId,
        mut edit: impl FnMut(
            Option<SyncConfiguration>,
        ) -> Result<(Option<SyncConfiguration>, T), Refusal>,
    ) -> Result<T, Refusal> {
        for _ in 0..EDIT_TRIES {
            let stored = self.configs.get_config_revised(band).await?;
            let expected = stored.as_ref().map(|s| s.revision);
            let (write, out) = edit(stored.map(|s| s.record))?;
            let Some(config) = write else {
                return Ok(out);
            };
            match self.configs.write_config(&config, expected).await? {
                WriteOutcome::Written { .. } => return Ok(out),
                WriteOutcome::GoneOrChanged => {
                    tracing::info!(%band, "the band configuration changed under an edit; applying it again");
                }
            }
        }
        Err(edit_raced("the band's configuration"))
    }

    /// Create or update a band's configuration; its credentials are kept.
    pub(super) async fn put_band(
        &self,
        band: BandId,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let empty = req.body.as_deref().is_none_or(|b| b.trim().is_empty());
        let body: BandBody = if empty {
            BandBody::default()
        } else {
            json_body(
                req,
                "{name?: string, file_types?: [string], strict_entities?: bool, history_days?: int|null}",
            )?
        };
        let name = body
            .name
            .map(|n| text_field(ErrorCode::InvalidName, "name", &n, MAX_NAME))
            .transpose()?;
        let file_types = body
            .file_types
            .map(|ts| {
                ts.iter()
                    .map(|t| file_type(t))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        if let Some(Some(days)) = body.history_days
            && !(1..=MAX_HISTORY_DAYS).contains(&days)
        {
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                format!(
                    "history_days must be 1 to {MAX_HISTORY_DAYS} (null: the deployment's retention), not {days}"
                ),
            ));
        }
        let file_types = file_types.map(|mut types| {
            types.sort();
            types.dedup();
            types
        });
        let (config, created) = self
            .edit_config(&band, |existing| {
                let created = existing.is_none();
                let mut config = existing.unwrap_or_else(|| SyncConfiguration {
                    band: band.clone(),
                    name: band.to_string(),
                    file_types: vec![],
                    google_credentials: None,
                    entity_types: vec![],
                    strict_entities: false,
                    history_days: None,
                });
                if let Some(strict) = body.strict_entities {
                    config.strict_entities = strict;
                }
                if let Some(days) = body.history_days {
                    config.history_days = days;
                }
                if let Some(name) = &name {
                    config.name = name.clone();
                }
                if let Some(types) = &file_types {
                    config.file_types = types.clone();
                }
                Ok((Some(config.clone()), (config, created)))
            })
            .await?;
        tracing::info!(%band, created, "band configuration stored");
        Ok((200, json!(ConfigView::from(&config))))
    }

    /// Validate a band's Google credentials file, seal it under the deployment's key and
    /// store it in the band's configuration. The file is never logged nor echoed.
    pub(super) async fn put_credentials(
        &self,
        band: BandId,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let key = self.credentials_key.as_ref().ok_or_else(|| {
            Refusal::new(ErrorCode::NotConfigured,
                "this deployment has no credentials key (CredentialsKey / BANDSYNC_CREDENTIALS_KEY): Google credentials cannot be stored",
            )
        })?;
        let file = body_text(req.body.as_deref(), req.is_base64_encoded)?;
        if file.len() > MAX_CREDENTIALS {
            return Err(Refusal::new(
                ErrorCode::InvalidCredentials,
                format!("a credentials file is at most {MAX_CREDENTIALS} bytes"),
            ));
        }
        // Its errors name the field at fault, never a secret.
        let credentials = GoogleCredentials::from_json(file.as_bytes())
            .and_then(|c| {
                if !self.deployment.allows_plain_http_to_loopback() {
                    c.refuse_plain_http()?;
                }
                Ok(c)
            })
            .map_err(|e| Refusal::new(ErrorCode::InvalidCredentials, e.to_string()))?;
        self.registered(&band).await?;
        let sealed = sealed::seal(key, file.as_bytes(), &sealed::credentials_context(&band))
            .map_err(|e| {
                tracing::error!(%band, error = %e, "sealing Google credentials failed");
                Refusal::new(
                    ErrorCode::Unavailable,
                    "could not seal the credentials; try again",
                )
            })?;
        self.edit_config(&band, |stored| {
            let mut config = stored.ok_or_else(|| not_registered(&band))?;
            config.google_credentials = Some(sealed.clone());
            Ok((Some(config), ()))
        })
        .await?;
        tracing::info!(%band, grant = credentials.grant_kind(), "Google credentials stored");
        Ok(no_content())
    }

    pub(super) async fn delete_credentials(&self, band: BandId) -> Result<(u16, Value), Refusal> {
        let removed = self
            .edit_config(&band, |stored| {
                let mut config = stored.ok_or_else(|| not_registered(&band))?;
                let removed = config.google_credentials.take().is_some();
                Ok((removed.then_some(config), removed))
            })
            .await?;
        if removed {
            tracing::info!(%band, "Google credentials removed");
        }
        Ok(no_content())
    }

    /// Put a source of a registered band. Re-putting the same kind and place (and shared
    /// drive) keeps where its sync was; moving it resets the cursor (the next sync is a
    /// full one, compared with the catalog).
    pub(super) async fn put_source(
        &self,
        band: BandId,
        id: SourceId,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let body: SourceBody = json_body(
            req,
            "{kind: \"drive\"|\"sheet\"|\"calendar\"|\"folder\", location: string, drive_id?: string}",
        )?;
        let kind = source_kind(&body.kind)?;
        if kind == SourceKind::Folder && !self.deployment.allows_folder_sources() {
            return Err(Refusal::new(
                ErrorCode::InvalidParameter,
                crate::deployment::Deployment::FOLDER_REFUSED,
            ));
        }
        let location = text_field(
            ErrorCode::InvalidLocation,
            "location",
            &body.location,
            MAX_LOCATION,
        )?;
        let drive_id = body
            .drive_id
            .map(|d| text_field(ErrorCode::InvalidParameter, "drive_id", &d, MAX_NAME))
            .transpose()?;
        if drive_id.is_some() && kind != SourceKind::Drive {
            return Err(Refusal::new(
                ErrorCode::InvalidParameter,
                "drive_id applies to drive sources only",
            ));
        }
        self.registered(&band).await?;
        // Onto the revision read, or read again: a pass that moved the cursor meanwhile
        // keeps it (unless this moves the source), and that pass's next write of the
        // source is refused if this one changed it.
        for _ in 0..EDIT_TRIES {
            let stored = self.sources.get_source(&band, &id).await?;
            let expected = stored.as_ref().map(|s| s.revision);
            let source = match stored {
                Some(mut old) => {
                    if (old.kind, &old.location, &old.drive_id) != (kind, &location, &drive_id) {
                        old.cursor = None;
                    }
                    Source {
                        kind,
                        location: location.clone(),
                        drive_id: drive_id.clone(),
                        ..old
                    }
                }
                None => Source {
                    drive_id: drive_id.clone(),
                    ..Source::new(band.clone(), id.clone(), kind, location.clone())
                },
            };
            match self.sources.write_source(&source, expected).await? {
                WriteOutcome::Written { .. } => {
                    tracing::info!(%band, source = %source.id, kind = ?source.kind, "source stored");
                    return Ok((200, json!(source)));
                }
                WriteOutcome::GoneOrChanged => {
                    tracing::info!(%band, source = %id, "the source changed under an edit; applying it again");
                }
            }
        }
        Err(edit_raced("the source"))
    }

    pub(super) async fn delete_source(
        &self,
        band: BandId,
        id: SourceId,
    ) -> Result<(u16, Value), Refusal> {
        let Some(source) = self.sources.get_source(&band, &id).await? else {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("band {band} has no source {id}"),
            ));
        };
        // The mark first: a delete that fails after it leaves a mark whose source still
        // exists, which the purge leaves alone; the other way round, a failure would leave
        // a catalog nobody clears.
        let purge = SourcePurge {
            band: band.clone(),
            source: id.clone(),
            kind: source.kind,
            deleted_at: self.clock.now(),
            operations_after: None,
            operations_done: false,
        };
        self.sources.put_purge(&purge).await?;
        self.sources.delete_source(&band, &id).await?;
        tracing::info!(%band, source = %id, "source deleted; its catalog is purged by the scheduler");
        Ok(no_content())
    }

    /// Declare (or redefine) one of a band's entity types. A redefinition applies to the
    /// mutations decided after it; stored entities keep their fields.
    pub(super) async fn put_entity_type(
        &self,
        band: BandId,
        name: EntityTypeName,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let text = body_text(req.body.as_deref(), req.is_base64_encoded)?;
        if text.len() > MAX_ENTITY_TYPE_BYTES {
            return Err(Refusal::new(
                ErrorCode::MalformedBody,
                format!("an entity type is at most {MAX_ENTITY_TYPE_BYTES} bytes"),
            ));
        }
        // The path names the type: the body may leave `name` out.
        let mut raw: Value = serde_json::from_str(&text).map_err(|e| {
            Refusal::new(
                ErrorCode::MalformedBody,
                format!("expected an entity type: {e}"),
            )
        })?;
        match raw.as_object_mut() {
            Some(obj) => match obj.get("name") {
                None => {
                    obj.insert("name".into(), json!(name));
                }
                Some(n) if n != &json!(name) => {
                    return Err(Refusal::new(
                        ErrorCode::InvalidParameter,
                        format!("the body names type {n}, the path {name}"),
                    ));
                }
                Some(_) => {}
            },
            None => {
                return Err(Refusal::new(
                    ErrorCode::MalformedBody,
                    "expected an entity type: a JSON object",
                ));
            }
        }
        let ty: EntityType = serde_json::from_value(raw).map_err(|e| {
            Refusal::new(
                ErrorCode::MalformedBody,
                format!("expected an entity type: {e}"),
            )
        })?;
        self.engine.validate_type(&ty)?;
        self.edit_config(&band, |stored| {
            let mut config = stored.ok_or_else(|| not_registered(&band))?;
            let declared = config.entity_types.len();
            match config.entity_types.iter_mut().find(|t| t.name == name) {
                Some(old) => *old = ty.clone(),
                None if declared >= MAX_ENTITY_TYPES => {
                    return Err(Refusal::new(
                        ErrorCode::InvalidParameter,
                        format!("a band declares at most {MAX_ENTITY_TYPES} entity types"),
                    ));
                }
                None => config.entity_types.push(ty.clone()),
            }
            Ok((Some(config), ()))
        })
        .await?;
        tracing::info!(%band, entity_type = %name, "entity type stored");
        Ok((200, json!(ty)))
    }

    /// Operator: one page of the band's entities rebuilt from their history and
    /// compared with what is stored (reads only; see [`crate::entities::rebuild`]).
    pub(super) async fn rebuild(
        &self,
        band: BandId,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<(u16, Value), Refusal> {
        let after = req
            .query_string_parameters
            .first("after")
            .map(entity_cursor)
            .transpose()?;
        let limit = number_param(req, "limit", 1, rebuild::MAX_PAGE as u64)?
            .map_or(rebuild::DEFAULT_PAGE, |n| n as usize);
        let config = self.registered(&band).await?;
        let types = BandTypes::new(config.entity_types, config.strict_entities);
        let check = rebuild::Rebuild {
            entities: &*self.entities,
            log: &*self.log,
            engine: &self.engine,
        };
        let report = check.check(&band, &types, after.as_ref(), limit).await?;
        if report.matched {
            tracing::info!(%band, checked = report.checked, partial = report.partial, "rebuild matched");
        } else {
            tracing::warn!(%band, checked = report.checked, mismatched = report.mismatched, "rebuild found mismatches");
        }
        Ok((200, json!(report)))
    }
}
