//! The credentials files Google hands out, parsed as they are, and the RS256 assertion
//! a service account signs.

use super::*;

/// A band's Google credentials, from one of the JSON files Google hands out.
#[derive(Clone)]
pub enum GoogleCredentials {
    /// `{"type":"authorized_user","client_id","client_secret","refresh_token"}`.
    AuthorizedUser(AuthorizedUser),
    /// `{"type":"service_account","client_email","private_key_id","private_key",…}`.
    ServiceAccount(ServiceAccount),
}

/// An OAuth client's refresh token for one user.
#[derive(Clone)]
pub struct AuthorizedUser {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    token_uri: String,
}

/// A service account's key, signing its own assertions.
#[derive(Clone)]
pub struct ServiceAccount {
    client_email: String,
    private_key_id: String,
    project_id: Option<String>,
    key: Arc<RsaKeyPair>,
    /// SHA-256 of the PEM: what the fingerprint hashes instead of the key.
    key_digest: [u8; 32],
    token_uri: String,
    /// The user to act as (domain-wide delegation): the JWT's `sub`.
    subject: Option<String>,
    scopes: Vec<String>,
}

/// The fields of both file kinds, all optional so a missing one gets a clear error.
#[derive(Deserialize)]
struct RawCredentials {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    token_uri: Option<String>,
    project_id: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
    client_email: Option<String>,
    subject: Option<String>,
    scopes: Option<Scopes>,
}

/// `scopes` as a JSON array or one space-separated string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scopes {
    List(Vec<String>),
    Text(String),
}

impl Scopes {
    fn into_vec(self) -> Vec<String> {
        let list = match self {
            Scopes::List(list) => list,
            Scopes::Text(text) => text.split_whitespace().map(str::to_owned).collect(),
        };
        list.into_iter().filter(|s| !s.trim().is_empty()).collect()
    }
}

fn required(value: Option<String>, kind: &str, field: &str) -> Result<String, GoogleError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(config(format!("{kind} file: \"{field}\" is empty"))),
        None => Err(config(format!("{kind} file: \"{field}\" is missing"))),
    }
}

/// HTTPS, or plain HTTP to a loopback address (a local fake): the refresh token, client
/// secret or signed assertion must never travel in clear text over a network.
fn check_token_uri(uri: String) -> Result<String, GoogleError> {
    let loopback = |url: &reqwest::Url| {
        let host = url.host_str().unwrap_or_default();
        let ip = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || ip
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    match reqwest::Url::parse(&uri) {
        Ok(url) if url.scheme() == "https" => Ok(uri),
        Ok(url) if url.scheme() == "http" && loopback(&url) => Ok(uri),
        Ok(_) => Err(config(format!(
            "token_uri {uri:?} must be an https URL (plain http only to a loopback address)"
        ))),
        Err(e) => Err(config(format!("token_uri {uri:?}: {e}"))),
    }
}

/// The DER inside a PEM block, and the block's label.
fn pem_to_der(pem: &str) -> Result<(String, Vec<u8>), GoogleError> {
    // Keys pasted through environment variables often keep `\n` escaped.
    let pem = pem.replace("\\n", "\n");
    let mut lines = pem.lines().map(str::trim).filter(|l| !l.is_empty());
    let label = lines
        .next()
        .and_then(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .ok_or_else(|| config("private_key is not a PEM block (no -----BEGIN line)"))?
        .to_owned();
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    let mut ended = false;
    for line in lines {
        if line == end {
            ended = true;
            break;
        }
        body.push_str(line);
    }
    if !ended {
        return Err(config(format!("private_key: no {end} line")));
    }
    let der = B64
        .decode(body)
        .map_err(|e| config(format!("private_key: the PEM body is not base64 ({e})")))?;
    Ok((label, der))
}

fn parse_private_key(pem: &str) -> Result<RsaKeyPair, GoogleError> {
    let (label, der) = pem_to_der(pem)?;
    let key = match label.as_str() {
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
        other => {
            return Err(config(format!(
                "private_key is a {other:?} PEM block, expected \"PRIVATE KEY\" (PKCS#8 RSA)"
            )));
        }
    };
    key.map_err(|e| {
        config(format!(
            "private_key is not an RSA key we can sign with: {e}"
        ))
    })
}

impl GoogleCredentials {
    /// Parse a credentials file as Google hands it out (`authorized_user` or
    /// `service_account`), with the optional `subject` and `scopes` (an array or a
    /// space-separated string). Anything missing or unknown is a
    /// [`GoogleError::Config`] naming it; no secret is ever quoted.
    pub fn from_json(json: &[u8]) -> Result<Self, GoogleError> {
        let raw: RawCredentials = serde_json::from_slice(json).map_err(|e| {
            config(format!(
                "not a credentials JSON object ({})",
                json_error(&e)
            ))
        })?;
        let scopes = raw.scopes.map(Scopes::into_vec).unwrap_or_default();
        match raw.kind.as_deref() {
            Some("authorized_user") => {
                let kind = "authorized_user";
                Ok(Self::AuthorizedUser(AuthorizedUser {
                    client_id: required(raw.client_id, kind, "client_id")?,
                    client_secret: required(raw.client_secret, kind, "client_secret")?,
                    refresh_token: required(raw.refresh_token, kind, "refresh_token")?,
                    token_uri: check_token_uri(
                        raw.token_uri
                            .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned()),
                    )?,
                }))
            }
            Some("service_account") => {
                let kind = "service_account";
                let client_email = required(raw.client_email, kind, "client_email")?;
                let private_key_id = required(raw.private_key_id, kind, "private_key_id")?;
                let pem = required(raw.private_key, kind, "private_key")?;
                let token_uri = check_token_uri(required(raw.token_uri, kind, "token_uri")?)?;
                let key = parse_private_key(&pem)?;
                Ok(Self::ServiceAccount(ServiceAccount {
                    client_email,
                    private_key_id,
                    project_id: raw.project_id,
                    key: Arc::new(key),
                    key_digest: Sha256::digest(pem.as_bytes()).into(),
                    token_uri,
                    subject: raw.subject.filter(|s| !s.trim().is_empty()),
                    scopes,
                }))
            }
            Some(other) => Err(config(format!(
                "unknown \"type\" {other:?} (expected \"authorized_user\" or \"service_account\")"
            ))),
            None => Err(config(
                "\"type\" is missing (expected \"authorized_user\" or \"service_account\")",
            )),
        }
    }

    /// Act as `subject` (domain-wide delegation; service accounts only, ignored for an
    /// authorized user).
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        if let Self::ServiceAccount(sa) = &mut self {
            sa.subject = Some(subject.into());
        }
        self
    }

    /// Ask for these scopes (service accounts only; see [`DEFAULT_SCOPES`]).
    pub fn with_scopes<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        if let Self::ServiceAccount(sa) = &mut self {
            sa.scopes = scopes.into_iter().map(Into::into).collect();
        }
        self
    }

    /// The grant this uses: `refresh_token` or `jwt_bearer` (for logs).
    pub fn grant_kind(&self) -> &'static str {
        match self {
            Self::AuthorizedUser(_) => "refresh_token",
            Self::ServiceAccount(_) => "jwt_bearer",
        }
    }

    /// Refuse a plain-http `token_uri` (which [`Self::from_json`] accepts to a loopback
    /// address, for a local fake): where loopback is not ours (inside Lambda it is the
    /// Runtime API), the grant's secret must only ever go to an https endpoint.
    pub fn refuse_plain_http(&self) -> Result<(), GoogleError> {
        let uri = self.token_uri();
        if uri.starts_with("https://") {
            return Ok(());
        }
        Err(config(format!(
            "token_uri {uri:?} must be an https URL here (plain http to loopback is for the local stack only)"
        )))
    }

    pub fn token_uri(&self) -> &str {
        match self {
            Self::AuthorizedUser(u) => &u.token_uri,
            Self::ServiceAccount(sa) => &sa.token_uri,
        }
    }

    /// The scopes a service account asks for (its own, else [`DEFAULT_SCOPES`]); empty
    /// for an authorized user.
    pub fn scopes(&self) -> Vec<String> {
        match self {
            Self::AuthorizedUser(_) => Vec::new(),
            Self::ServiceAccount(sa) if sa.scopes.is_empty() => {
                DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect()
            }
            Self::ServiceAccount(sa) => sa.scopes.clone(),
        }
    }

    /// A SHA-256 over every field (the private key through its own digest): equal for
    /// the same credentials, different when anything changed. Safe to keep and compare;
    /// not a way back to the secrets.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        match self {
            Self::AuthorizedUser(u) => {
                field(b"authorized_user");
                for part in [
                    &u.client_id,
                    &u.client_secret,
                    &u.refresh_token,
                    &u.token_uri,
                ] {
                    field(part.as_bytes());
                }
            }
            Self::ServiceAccount(sa) => {
                field(b"service_account");
                for part in [&sa.client_email, &sa.private_key_id, &sa.token_uri] {
                    field(part.as_bytes());
                }
                field(&sa.key_digest);
                field(sa.subject.as_deref().unwrap_or("").as_bytes());
                field(self.scopes().join(" ").as_bytes());
            }
        }
        hash.finalize().into()
    }

    /// The form of a token request. For a service account this signs a fresh assertion
    /// issued at `now`.
    pub(super) fn grant_form(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(&'static str, String)>, GoogleError> {
        match self {
            Self::AuthorizedUser(u) => Ok(vec![
                ("grant_type", "refresh_token".to_owned()),
                ("client_id", u.client_id.clone()),
                ("client_secret", u.client_secret.clone()),
                ("refresh_token", u.refresh_token.clone()),
            ]),
            Self::ServiceAccount(sa) => Ok(vec![
                ("grant_type", JWT_BEARER_GRANT.to_owned()),
                ("assertion", sa.assertion(&self.scopes(), now)?),
            ]),
        }
    }
}

impl ServiceAccount {
    /// The RS256 JWT of Google's "OAuth 2.0 for Server to Server Applications": header
    /// `{"alg":"RS256","typ":"JWT","kid":private_key_id}`, claims `iss` (the account),
    /// `scope` (space-separated), `aud` (the token URI), `iat`, `exp` (one hour later),
    /// and `sub` when delegating.
    pub fn assertion(&self, scopes: &[String], now: DateTime<Utc>) -> Result<String, GoogleError> {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        let iat = now.timestamp();
        let mut claims = serde_json::json!({
            "iss": self.client_email,
            "scope": scopes.join(" "),
            "aud": self.token_uri,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME_SECS,
        });
        if let Some(subject) = &self.subject {
            claims["sub"] = serde_json::json!(subject);
        }
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| config("signing the service-account assertion failed"))?;
        Ok(format!("{signing_input}.{}", B64URL.encode(signature)))
    }
}

/// Names the account and what it is, never a secret.
impl std::fmt::Debug for GoogleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AuthorizedUser(u) => f
                .debug_struct("AuthorizedUser")
                .field("client_id", &u.client_id)
                .field("client_secret", &"<redacted>")
                .field("refresh_token", &"<redacted>")
                .field("token_uri", &u.token_uri)
                .finish(),
            Self::ServiceAccount(sa) => f
                .debug_struct("ServiceAccount")
                .field("client_email", &sa.client_email)
                .field("project_id", &sa.project_id)
                .field("private_key_id", &sa.private_key_id)
                .field("private_key", &"<redacted>")
                .field("token_uri", &sa.token_uri)
                .field("subject", &sa.subject)
                .field("scopes", &sa.scopes)
                .finish(),
        }
    }
}
