//! Member tokens: HS256 JWTs with `sub`, `bands` and `exp`, and for operators an
//! `admin: true` claim (absent, i.e. false, in every member's token).
//!
//! HS256 is small enough to do with `hmac` + `sha2` directly; we accept only that
//! algorithm (no `alg: none`, no key confusion) and compare MACs in constant time.

use crate::model::{BandId, UserId};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The claims of a member token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub bands: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// An operator's token: may configure any band (the operator routes of the API).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// A verified member: who, and which bands they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user: UserId,
    pub bands: Vec<BandId>,
    pub expires_at: DateTime<Utc>,
    /// An operator (the token's `admin` claim).
    pub admin: bool,
}

impl Member {
    pub fn is_member_of(&self, band: &BandId) -> bool {
        self.bands.contains(band)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unsupported token algorithm (only HS256 is accepted)")]
    Algorithm,
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token claims are invalid: {0}")]
    Claims(String),
}

/// Signs and verifies member tokens with one shared secret.
#[derive(Clone)]
pub struct TokenKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

const HEADER_HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

impl TokenKey {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail.
        HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts any key length")
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(HEADER_HS256);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// Verify signature, algorithm, expiry and claim shapes.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Member, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("expected three dot-separated parts"));
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| AuthError::Malformed("not base64url"))
        };
        let header: serde_json::Value = serde_json::from_slice(&decode(h)?)
            .map_err(|_| AuthError::Malformed("header is not JSON"))?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(AuthError::Algorithm);
        }
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&decode(s)?)
            .map_err(|_| AuthError::Signature)?;
        let claims: Claims =
            serde_json::from_slice(&decode(p)?).map_err(|e| AuthError::Claims(e.to_string()))?;
        let expires_at = DateTime::from_timestamp(claims.exp, 0)
            .ok_or_else(|| AuthError::Claims("exp out of range".into()))?;
        if expires_at <= now {
            return Err(AuthError::Expired);
        }
        let user = UserId::parse(&claims.sub).map_err(|e| AuthError::Claims(e.to_string()))?;
        let bands = claims
            .bands
            .iter()
            .map(|b| BandId::parse(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AuthError::Claims(e.to_string()))?;
        Ok(Member {
            user,
            bands,
            expires_at,
            admin: claims.admin,
        })
    }

    /// A token for `user` in `bands`, valid for `ttl` from `now` (dev tooling, tests).
    pub fn mint(
        &self,
        user: &str,
        bands: &[&str],
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> String {
        self.sign(&Self::claims(user, bands, now, ttl, false))
    }

    /// An operator's token for `user`, valid for `ttl` from `now`: the `admin` claim and
    /// no band (operating bands is not being in them).
    pub fn mint_admin(&self, user: &str, now: DateTime<Utc>, ttl: chrono::Duration) -> String {
        self.sign(&Self::claims(user, &[], now, ttl, true))
    }

    fn claims(
        user: &str,
        bands: &[&str],
        now: DateTime<Utc>,
        ttl: chrono::Duration,
        admin: bool,
    ) -> Claims {
        Claims {
            sub: user.to_owned(),
            bands: bands.iter().map(|b| (*b).to_owned()).collect(),
            exp: (now + ttl).timestamp(),
            admin,
        }
    }
}

/// `Authorization: Bearer <token>` -> `<token>`.
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    // An empty header is as good as none (some clients send one when they have no token).
    let value = header
        .filter(|v| !v.trim().is_empty())
        .ok_or(AuthError::Missing)?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(AuthError::Malformed("expected 'Bearer <token>'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn round_trip() {
        let key = TokenKey::new("s3cret");
        let t = key.mint(
            "alice",
            &["demo", "jazz"],
            now(),
            chrono::Duration::hours(1),
        );
        let m = key.verify(&t, now()).unwrap();
        assert_eq!(m.user.as_str(), "alice");
        assert!(m.is_member_of(&BandId::parse("jazz").unwrap()));
        assert!(!m.is_member_of(&BandId::parse("rock").unwrap()));
    }

    #[test]
    fn refuses_expired_forged_and_malformed() {
        let key = TokenKey::new("s3cret");
        let t = key.mint("alice", &["demo"], now(), chrono::Duration::hours(1));
        assert_eq!(
            key.verify(&t, now() + chrono::Duration::hours(2)),
            Err(AuthError::Expired)
        );
        let forged =
            TokenKey::new("other").mint("alice", &["demo"], now(), chrono::Duration::hours(1));
        assert_eq!(key.verify(&forged, now()), Err(AuthError::Signature));
        // Payload swapped for one granting another band, signature kept.
        let evil = TokenKey::new("s3cret").mint(
            "alice",
            &["demo", "rock"],
            now(),
            chrono::Duration::hours(1),
        );
        let parts: Vec<&str> = t.split('.').collect();
        let evil_parts: Vec<&str> = evil.split('.').collect();
        let spliced = format!("{}.{}.{}", parts[0], evil_parts[1], parts[2]);
        assert_eq!(key.verify(&spliced, now()), Err(AuthError::Signature));
        assert_eq!(key.verify("", now()), Err(AuthError::Missing));
        assert!(matches!(
            key.verify("a.b", now()),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            key.verify("a.b.c.d", now()),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            key.verify("!!.b.c", now()),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn only_an_admin_claim_makes_an_operator() {
        // GIVEN a member's token and an operator's
        let key = TokenKey::new("s3cret");
        let member = key.mint("alice", &["demo"], now(), chrono::Duration::hours(1));
        let operator = key.mint_admin("ops", now(), chrono::Duration::hours(1));
        // THEN only the second is an operator, and a member's token has no admin claim
        assert!(!key.verify(&member, now()).unwrap().admin);
        assert!(key.verify(&operator, now()).unwrap().admin);
        let payload = URL_SAFE_NO_PAD
            .decode(member.split('.').nth(1).unwrap())
            .unwrap();
        assert!(!String::from_utf8(payload).unwrap().contains("admin"));
        // AND a token minted before the claim existed (no `admin`) still verifies
        let h = URL_SAFE_NO_PAD.encode(HEADER_HS256);
        let p = URL_SAFE_NO_PAD.encode(r#"{"sub":"bob","bands":["demo"],"exp":9999999999}"#);
        let mut mac = key.mac();
        mac.update(format!("{h}.{p}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let old = key.verify(&format!("{h}.{p}.{sig}"), now()).unwrap();
        assert!(!old.admin);
    }

    #[test]
    fn refuses_alg_none() {
        let key = TokenKey::new("s3cret");
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        let p = URL_SAFE_NO_PAD.encode(r#"{"sub":"a","bands":["demo"],"exp":9999999999}"#);
        assert_eq!(
            key.verify(&format!("{h}.{p}."), now()),
            Err(AuthError::Algorithm)
        );
    }

    #[test]
    fn refuses_bad_claims() {
        let key = TokenKey::new("k");
        let t = key.mint("has space", &["demo"], now(), chrono::Duration::hours(1));
        assert!(matches!(key.verify(&t, now()), Err(AuthError::Claims(_))));
        let t = key.mint("bob", &["bad band"], now(), chrono::Duration::hours(1));
        assert!(matches!(key.verify(&t, now()), Err(AuthError::Claims(_))));
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer(None), Err(AuthError::Missing));
        assert_eq!(bearer(Some(" ")), Err(AuthError::Missing));
        assert!(bearer(Some("Basic abc")).is_err());
        assert!(bearer(Some("Bearer ")).is_err());
    }
}
