//! `register_device`: a member's device, named by the app (so it can queue mutations
//! before it was ever online) and bound for good to the first member who registers it.

use super::records::DeviceRecord;
use crate::error::{ErrorCode, Refusal};
use crate::model::UserId;
use crate::ports::EntityStore;
use crate::wire::frames::RegisterDevice;
use chrono::{DateTime, Utc};

/// Longest device name accepted.
const MAX_NAME: usize = 200;
/// Most categories a device may ask for, and the longest one.
const MAX_CATEGORIES: usize = 64;
const MAX_CATEGORY: usize = 64;

/// Register `request.device` for `member`, or update its platform, name and categories
/// (left out: kept). Another member's device is `device_taken` and changes nothing.
/// Registering again is harmless: the device's `next_mid` is never touched here.
pub async fn register(
    store: &dyn EntityStore,
    member: &UserId,
    request: RegisterDevice,
    now: DateTime<Utc>,
) -> Result<DeviceRecord, Refusal> {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            format!(
                "register_device: name must be 1 to {MAX_NAME} characters, no control characters"
            ),
        ));
    }
    if let Some(categories) = &request.categories {
        check_categories(categories)?;
    }
    let existing = store.get_device(&request.device).await?;
    if let Some(d) = &existing {
        taken(d, member)?;
    }
    let categories = match (request.categories, existing.as_ref()) {
        (Some(c), _) => dedup(c),
        (None, Some(d)) => d.categories.clone(),
        (None, None) => Vec::new(),
    };
    let record = DeviceRecord {
        device: request.device,
        member: member.clone(),
        platform: request.platform,
        name: name.to_owned(),
        categories,
        next_mid: existing.as_ref().map_or(1, |d| d.next_mid),
        registered_at: existing.as_ref().map_or(now, |d| d.registered_at),
    };
    // Two members racing for a new id: the store keeps the first, and says whose it is.
    let stored = store.register_device(&record).await?;
    taken(&stored, member)?;
    Ok(stored)
}

/// `device_taken` unless the device is `member`'s.
pub fn taken(device: &DeviceRecord, member: &UserId) -> Result<(), Refusal> {
    if &device.member == member {
        return Ok(());
    }
    Err(Refusal::new(
        ErrorCode::DeviceTaken,
        format!(
            "device {} belongs to another member; choose another id",
            device.device
        ),
    ))
}

fn check_categories(categories: &[String]) -> Result<(), Refusal> {
    let bad = |why: String| Err(Refusal::new(ErrorCode::InvalidRequest, why));
    if categories.len() > MAX_CATEGORIES {
        return bad(format!(
            "register_device: at most {MAX_CATEGORIES} categories"
        ));
    }
    for (i, c) in categories.iter().enumerate() {
        if c.is_empty() || c.len() > MAX_CATEGORY || c.chars().any(char::is_control) {
            return bad(format!(
                "register_device: categories[{i}] must be 1 to {MAX_CATEGORY} characters, no control characters"
            ));
        }
    }
    super::categories::check(categories)
}

/// Categories in the order given, each once.
fn dedup(categories: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    categories
        .into_iter()
        .filter(|c| seen.insert(c.clone()))
        .collect()
}
