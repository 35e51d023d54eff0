//! Secrets encrypted at rest: the Google credentials a band stores (a refresh token or a
//! service-account key) are kept sealed with AES-256-GCM under a [`CredentialKey`] from
//! the configuration ([`CREDENTIALS_KEY_ENV`]), never in clear in a store.
//!
//! - [`seal`] draws a fresh random 96-bit nonce for every call (ring's `SystemRandom`),
//!   so sealing the same secret twice gives two different [`SealedSecret`]s;
//! - the additional authenticated data is a context string, [`credentials_context`] for
//!   a band's Google credentials (`band:<id>/google-credentials`): a ciphertext copied
//!   onto another band, or used for another purpose, does not open;
//! - [`open`] fails with [`SealError`] on a wrong key, a wrong context, any tampering,
//!   an unknown version or algorithm, or malformed base64: never a panic. What it gives
//!   back ([`Plaintext`]) is overwritten with zeros when dropped and never printed.
//!
//! The stored form is JSON: `{"v":1,"alg":"A256GCM","nonce":"<b64>","ct":"<b64>"}`
//! (standard base64; `ct` is the ciphertext followed by the 16-byte tag).

use crate::model::{BandId, SealedSecret};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The environment variable holding the key: standard base64 of 32 random bytes.
pub const CREDENTIALS_KEY_ENV: &str = "BANDSYNC_CREDENTIALS_KEY";

/// The only format version written and read.
pub const SEALED_VERSION: u32 = 1;
/// The only algorithm, as named in the stored form (JOSE's name for AES-256-GCM).
pub const SEALED_ALG: &str = "A256GCM";

const KEY_LEN: usize = 32;

/// Why a key could not be loaded or a secret sealed or opened. Never carries key or
/// plaintext material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The configured key is missing, not base64, or not 32 bytes.
    #[error("credentials key: {0}")]
    Key(String),
    #[error("sealed secret: unsupported version {0} (expected {SEALED_VERSION})")]
    UnsupportedVersion(u32),
    #[error("sealed secret: unsupported algorithm {0:?} (expected {SEALED_ALG:?})")]
    UnsupportedAlgorithm(String),
    /// A field that is not what the format says (bad base64, wrong nonce length).
    #[error("sealed secret: malformed {0}")]
    Malformed(String),
    /// Authentication failed: wrong key, wrong context, or the secret was tampered with.
    /// AES-GCM cannot tell these apart, and neither do we.
    #[error("sealed secret does not open: wrong key, wrong context or tampered with")]
    Open,
    /// The system random source failed.
    #[error("system random source failed")]
    Random,
}

/// The AES-256 key secrets are sealed under. Never printed.
#[derive(Clone)]
pub struct CredentialKey {
    key: LessSafeKey,
    /// Kept for [`CredentialKey::to_base64`]; zeroed on drop.
    bytes: Box<[u8; KEY_LEN]>,
}

impl Drop for CredentialKey {
    fn drop(&mut self) {
        wipe(&mut self.bytes[..]);
    }
}

impl std::fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialKey(<redacted>)")
    }
}

impl CredentialKey {
    /// From the 32 key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            SealError::Key(format!(
                "expected {KEY_LEN} bytes, got {} (generate one with CredentialKey::generate)",
                bytes.len()
            ))
        })?;
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| SealError::Key("rejected by AES-256-GCM".into()))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            bytes: Box::new(bytes),
        })
    }

    /// From standard base64 of 32 bytes (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let mut bytes = B64
            .decode(text.trim())
            .map_err(|e| SealError::Key(format!("not standard base64: {e}")))?;
        let key = Self::from_bytes(&bytes);
        wipe(&mut bytes);
        key
    }

    /// From the value of [`CREDENTIALS_KEY_ENV`], however it was read: None when it is
    /// unset or blank; a value that is not a key is an error, never ignored.
    pub fn from_setting(text: Option<&str>) -> Result<Option<Self>, SealError> {
        match text {
            Some(text) if !text.trim().is_empty() => Self::from_base64(text.trim())
                .map(Some)
                .map_err(|e| SealError::Key(format!("{CREDENTIALS_KEY_ENV}: {e}"))),
            _ => Ok(None),
        }
    }

    /// A new random key (for tests, and for a CLI that prints one to configure).
    pub fn generate() -> Result<Self, SealError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SealError::Random)?;
        let key = Self::from_bytes(&bytes);
        wipe(&mut bytes);
        key
    }

    /// The key as [`CredentialKey::from_base64`] reads it: to put in the configuration.
    pub fn to_base64(&self) -> String {
        B64.encode(&self.bytes[..])
    }
}

/// What [`open`] gives back: the plaintext, zeroed when dropped, never printed.
pub struct Plaintext(Vec<u8>);

impl Plaintext {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The plaintext as UTF-8 text.
    pub fn as_str(&self) -> Result<&str, SealError> {
        std::str::from_utf8(&self.0)
            .map_err(|_| SealError::Malformed("plaintext: not UTF-8".into()))
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plaintext(<{} bytes redacted>)", self.0.len())
    }
}

/// The context a band's Google credentials are sealed under: `band:<id>/google-credentials`.
pub fn credentials_context(band: &BandId) -> String {
    format!("band:{band}/google-credentials")
}

/// Seal `plaintext` under `key`, bound to the context `aad`, with a fresh random nonce.
pub fn seal(key: &CredentialKey, plaintext: &[u8], aad: &str) -> Result<SealedSecret, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| SealError::Random)?;
    let mut in_out = plaintext.to_vec();
    let sealed = key.key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad.as_bytes()),
        &mut in_out,
    );
    if sealed.is_err() {
        // Only for a plaintext beyond AES-GCM's limit (64 GiB): nothing to keep.
        wipe(&mut in_out);
        return Err(SealError::Malformed("plaintext: too long to seal".into()));
    }
    Ok(SealedSecret {
        v: SEALED_VERSION,
        alg: SEALED_ALG.to_owned(),
        nonce: B64.encode(nonce),
        ct: B64.encode(&in_out),
    })
}

/// Open a secret sealed by [`seal`] under `key` with the same context `aad`.
pub fn open(key: &CredentialKey, sealed: &SealedSecret, aad: &str) -> Result<Plaintext, SealError> {
    if sealed.v != SEALED_VERSION {
        return Err(SealError::UnsupportedVersion(sealed.v));
    }
    if sealed.alg != SEALED_ALG {
        return Err(SealError::UnsupportedAlgorithm(sealed.alg.clone()));
    }
    let nonce = B64
        .decode(&sealed.nonce)
        .map_err(|e| SealError::Malformed(format!("nonce: {e}")))?;
    let nonce = Nonce::try_assume_unique_for_key(&nonce)
        .map_err(|_| SealError::Malformed(format!("nonce: expected {NONCE_LEN} bytes")))?;
    let mut in_out = B64
        .decode(&sealed.ct)
        .map_err(|e| SealError::Malformed(format!("ct: {e}")))?;
    let len = match key
        .key
        .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut in_out)
    {
        Ok(plain) => plain.len(),
        Err(_) => return Err(SealError::Open),
    };
    in_out.truncate(len);
    Ok(Plaintext(in_out))
}

/// Overwrite with zeros, in a way the optimiser keeps (best effort, no `unsafe`).
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    const AAD: &str = "band:the-beatles/google-credentials";
    const SECRET: &[u8] = br#"{"type":"authorized_user","refresh_token":"1//secret-refresh"}"#;

    fn key() -> CredentialKey {
        CredentialKey::generate().expect("a random key")
    }

    #[test]
    fn seal_then_open_gives_the_plaintext_back_with_a_fresh_nonce_each_time() {
        // GIVEN a key and a secret
        let key = key();
        // WHEN the secret is sealed twice and each is opened
        let first = seal(&key, SECRET, AAD).unwrap();
        let second = seal(&key, SECRET, AAD).unwrap();
        // THEN both open to the secret
        assert_eq!(open(&key, &first, AAD).unwrap().as_bytes(), SECRET);
        assert_eq!(
            open(&key, &second, AAD)
                .unwrap()
                .as_str()
                .unwrap()
                .as_bytes(),
            SECRET
        );
        // AND the nonces (so the ciphertexts) differ, and the ciphertext is not the text
        assert_ne!(first.nonce, second.nonce);
        assert_ne!(first.ct, second.ct);
        assert_eq!(B64.decode(&first.nonce).unwrap().len(), 12);
        assert_eq!(B64.decode(&first.ct).unwrap().len(), SECRET.len() + 16);
    }

    #[test]
    fn sealed_secret_has_the_documented_json_form_and_round_trips_through_it() {
        // GIVEN a sealed secret
        let key = key();
        let sealed = seal(&key, SECRET, AAD).unwrap();
        // WHEN it is stored as JSON and read back
        let json = serde_json::to_value(&sealed).unwrap();
        // THEN it has exactly v, alg, nonce, ct
        let fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, ["alg", "ct", "nonce", "v"]);
        assert_eq!(json["v"], 1);
        assert_eq!(json["alg"], "A256GCM");
        let back: SealedSecret = serde_json::from_value(json).unwrap();
        assert_eq!(open(&key, &back, AAD).unwrap().as_bytes(), SECRET);
    }

    #[test]
    fn tampering_a_wrong_context_or_a_wrong_key_do_not_open() {
        // GIVEN a sealed secret
        let key = key();
        let sealed = seal(&key, SECRET, AAD).unwrap();
        // WHEN one bit of the ciphertext, or of the nonce, is flipped
        for field in ["ct", "nonce"] {
            let mut tampered = sealed.clone();
            let text = if field == "ct" {
                &mut tampered.ct
            } else {
                &mut tampered.nonce
            };
            let mut bytes = B64.decode(&*text).unwrap();
            bytes[0] ^= 1;
            *text = B64.encode(bytes);
            // THEN it does not open
            assert_eq!(
                open(&key, &tampered, AAD).unwrap_err(),
                SealError::Open,
                "{field}"
            );
        }
        // AND a truncated ciphertext (tag cut) does not either
        let mut truncated = sealed.clone();
        truncated.ct = B64.encode(&B64.decode(&sealed.ct).unwrap()[..10]);
        assert_eq!(open(&key, &truncated, AAD).unwrap_err(), SealError::Open);
        // AND another band's context does not open it
        let other_band = credentials_context(&BandId::parse("the-stones").unwrap());
        assert_eq!(
            open(&key, &sealed, &other_band).unwrap_err(),
            SealError::Open
        );
        // AND another key does not open it
        assert_eq!(
            open(&CredentialKey::generate().unwrap(), &sealed, AAD).unwrap_err(),
            SealError::Open
        );
        // AND the right key and context still do
        assert_eq!(open(&key, &sealed, AAD).unwrap().as_bytes(), SECRET);
    }

    #[test]
    fn unknown_version_algorithm_or_malformed_fields_are_errors() {
        let key = key();
        let sealed = seal(&key, SECRET, AAD).unwrap();
        // GIVEN an unknown version
        let mut v2 = sealed.clone();
        v2.v = 2;
        assert_eq!(
            open(&key, &v2, AAD).unwrap_err(),
            SealError::UnsupportedVersion(2)
        );
        // GIVEN an unknown algorithm
        let mut other = sealed.clone();
        other.alg = "A128GCM".into();
        assert_eq!(
            open(&key, &other, AAD).unwrap_err(),
            SealError::UnsupportedAlgorithm("A128GCM".into())
        );
        // GIVEN a nonce of the wrong length, or fields that are not base64
        let mut short = sealed.clone();
        short.nonce = B64.encode([0u8; 8]);
        assert!(
            matches!(open(&key, &short, AAD), Err(SealError::Malformed(m)) if m.contains("nonce"))
        );
        let mut garbage = sealed.clone();
        garbage.ct = "not base64!".into();
        assert!(
            matches!(open(&key, &garbage, AAD), Err(SealError::Malformed(m)) if m.contains("ct"))
        );
        // GIVEN JSON without a field: a serde error, not a panic
        assert!(serde_json::from_str::<SealedSecret>(r#"{"v":1,"alg":"A256GCM"}"#).is_err());
    }

    #[test]
    fn keys_load_from_base64_of_32_bytes_and_nothing_else() {
        // GIVEN a generated key written out as base64
        let key = key();
        let text = key.to_base64();
        // WHEN it is read back (with surrounding whitespace, as from a file)
        let back = CredentialKey::from_base64(&format!(" {text}\n")).unwrap();
        // THEN it opens what the first one sealed
        let sealed = seal(&key, SECRET, AAD).unwrap();
        assert_eq!(open(&back, &sealed, AAD).unwrap().as_bytes(), SECRET);
        // AND wrong lengths and bad base64 are clear errors
        let short = CredentialKey::from_base64(&B64.encode([7u8; 16])).unwrap_err();
        assert!(
            short.to_string().contains("expected 32 bytes, got 16"),
            "{short}"
        );
        let long = CredentialKey::from_base64(&B64.encode([7u8; 33])).unwrap_err();
        assert!(long.to_string().contains("got 33"), "{long}");
        let bad = CredentialKey::from_base64("%%%").unwrap_err();
        assert!(bad.to_string().contains("not standard base64"), "{bad}");
        assert!(CredentialKey::from_base64("").is_err());
    }

    #[test]
    fn debug_output_shows_no_key_and_no_plaintext() {
        // GIVEN a key, a sealed secret and its opened plaintext
        let key = CredentialKey::from_bytes(&[0x41; 32]).unwrap();
        let sealed = seal(&key, SECRET, AAD).unwrap();
        let plain = open(&key, &sealed, AAD).unwrap();
        // WHEN they are debug-printed
        let printed = format!("{key:?} {sealed:?} {plain:?}");
        // THEN neither the key (base64 or raw) nor the plaintext nor the ciphertext shows
        assert!(!printed.contains(&key.to_base64()), "{printed}");
        assert!(!printed.contains("AAAA"), "{printed}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(!printed.contains(&sealed.ct), "{printed}");
        assert!(printed.contains("redacted"), "{printed}");
    }

    #[test]
    fn the_credentials_context_names_the_band() {
        let band = BandId::parse("the-beatles").unwrap();
        assert_eq!(credentials_context(&band), AAD);
    }
}
