//! OAuth2 access tokens against the fake token endpoint.

use bandsync::google::GoogleError;
use bandsync::google::auth::AccessTokens;
use bandsync::google::oauth::*;
use bandsync::google::retry::{Retrier, RetryPolicy};
use bandsync::google::sealed::{self, CredentialKey};
use bandsync::model::BandId;
use bandsync::ports::Clock;
use bandsync_google_fake::oauth::{
    FakeOAuthState, FakeTokenServer, TEST_CLIENT_ID, TEST_CLIENT_SECRET, TEST_REFRESH_SCOPE,
    TEST_REFRESH_TOKEN, TEST_SERVICE_ACCOUNT_EMAIL, TEST_SERVICE_ACCOUNT_KEY_ID,
    TEST_SERVICE_ACCOUNT_KEY_PEM, test_authorized_user_json, test_service_account_json,
};
use bandsync_testkit::FixedClock;
use bandsync_testkit::RecordingSleeper;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::TimeDelta;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Every secret of the test credentials (pieces of the key's PEM body included):
/// none may appear in an error or a Debug.
fn assert_no_secret(text: &str) {
    let key_pieces = TEST_SERVICE_ACCOUNT_KEY_PEM
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(|l| &l[..16]);
    for secret in [TEST_CLIENT_SECRET, TEST_REFRESH_TOKEN]
        .into_iter()
        .chain(key_pieces)
    {
        assert!(!text.contains(secret), "{secret:?} shows in {text}");
    }
}

/// A fake token server with the test accounts, a fixed clock shared with it, and a
/// retrier that records its sleeps instead of sleeping.
struct Setup {
    server: FakeTokenServer,
    clock: Arc<FixedClock>,
    sleeper: Arc<RecordingSleeper>,
}

impl Setup {
    async fn start() -> Self {
        let server = FakeTokenServer::start(FakeOAuthState::with_test_accounts())
            .await
            .expect("the fake token server starts");
        let clock = Arc::new(FixedClock::default());
        server.state().set_clock(clock.clone());
        Self {
            server,
            clock,
            sleeper: Arc::new(RecordingSleeper::default()),
        }
    }

    fn fake(&self) -> &FakeOAuthState {
        self.server.state()
    }

    fn options(&self) -> OAuthOptions {
        let policy = RetryPolicy {
            max_attempts: 4,
            ..RetryPolicy::default()
        };
        OAuthOptions::default()
            .with_clock(self.clock.clone())
            .with_retrier(
                Retrier::new(policy)
                    .with_sleeper(self.sleeper.clone())
                    .with_random(|| 0.5),
            )
    }

    fn tokens(&self, credentials_json: &str) -> OAuthTokens {
        let credentials = GoogleCredentials::from_json(credentials_json.as_bytes())
            .expect("the test credentials parse");
        OAuthTokens::new(http(), credentials, self.options())
    }

    fn user_tokens(&self) -> OAuthTokens {
        self.tokens(&test_authorized_user_json(&self.server.token_uri()))
    }

    fn service_tokens(&self) -> OAuthTokens {
        self.tokens(&test_service_account_json(&self.server.token_uri()))
    }
}

/// `error` is Google's `status` / `reason`, came from a single request without any
/// backoff, and names no secret.
fn assert_permanent(setup: &Setup, error: &GoogleError, status: u16, reason: &str) {
    assert!(
        matches!(error, GoogleError::Http { status: s, reason: r, .. } if *s == status && r == reason),
        "{error:?}"
    );
    assert_eq!(setup.fake().request_count(), 1, "retried: {error}");
    assert!(setup.sleeper.delays().is_empty());
    assert_no_secret(&error.to_string());
    assert_no_secret(&format!("{error:?}"));
}

fn http() -> reqwest::Client {
    bandsync::google::https_client().expect("the HTTPS client builds")
}

fn minutes(m: i64) -> TimeDelta {
    TimeDelta::minutes(m)
}

fn parse(value: &Value) -> Result<GoogleCredentials, GoogleError> {
    GoogleCredentials::from_json(value.to_string().as_bytes())
}

fn service_account_value() -> Value {
    serde_json::from_str(&test_service_account_json(DEFAULT_TOKEN_URI)).unwrap()
}

// -- credentials files ---------------------------------------------------------------

#[test]
fn credentials_files_parse_as_google_hands_them_out() {
    // GIVEN an authorized_user file without token_uri
    let user = json!({"type": "authorized_user", "client_id": TEST_CLIENT_ID,
        "client_secret": TEST_CLIENT_SECRET, "refresh_token": TEST_REFRESH_TOKEN});
    // WHEN it is parsed
    let parsed = parse(&user).unwrap();
    // THEN it uses the refresh-token grant against Google's default token URI
    assert_eq!(parsed.grant_kind(), "refresh_token");
    assert_eq!(parsed.token_uri(), DEFAULT_TOKEN_URI);
    assert!(parsed.scopes().is_empty());

    // GIVEN a complete service-account key file (extra fields and all)
    let parsed = parse(&service_account_value()).unwrap();
    // THEN it uses the JWT bearer grant, its token_uri, and the default scopes
    assert_eq!(parsed.grant_kind(), "jwt_bearer");
    assert_eq!(parsed.token_uri(), DEFAULT_TOKEN_URI);
    assert_eq!(parsed.scopes(), DEFAULT_SCOPES);

    // GIVEN the same with a subject and scopes as a space-separated string
    let mut delegated = service_account_value();
    delegated["subject"] = json!("drummer@band.example");
    delegated["scopes"] = json!("https://www.googleapis.com/auth/drive  scope2");
    let parsed = parse(&delegated).unwrap();
    // THEN both are kept, and they change the fingerprint
    assert_eq!(
        parsed.scopes(),
        ["https://www.googleapis.com/auth/drive", "scope2"]
    );
    assert!(format!("{parsed:?}").contains("drummer@band.example"));
    let plain = parse(&service_account_value()).unwrap();
    assert_ne!(parsed.fingerprint(), plain.fingerprint());
    // AND the builders do the same as the fields
    let built = plain
        .with_subject("drummer@band.example")
        .with_scopes(["https://www.googleapis.com/auth/drive", "scope2"]);
    assert_eq!(built.fingerprint(), parsed.fingerprint());
}

#[test]
fn bad_credentials_files_are_clear_config_errors_that_quote_no_secret() {
    let user = json!({"type": "authorized_user", "client_id": TEST_CLIENT_ID,
        "client_secret": TEST_CLIENT_SECRET, "refresh_token": TEST_REFRESH_TOKEN});
    let without = |value: &Value, field: &str| {
        let mut v = value.clone();
        v.as_object_mut().unwrap().remove(field);
        v
    };
    let with = |value: &Value, field: &str, new: Value| {
        let mut v = value.clone();
        v[field] = new;
        v
    };
    let sa = service_account_value();
    let pem_body_broken = TEST_SERVICE_ACCOUNT_KEY_PEM.replacen("MII", "M*I", 1);
    let pem_truncated = TEST_SERVICE_ACCOUNT_KEY_PEM
        .lines()
        .take(5)
        .collect::<Vec<_>>()
        .join("\n");
    let mut pem_bytes_cut: Vec<&str> = TEST_SERVICE_ACCOUNT_KEY_PEM.lines().collect();
    pem_bytes_cut.remove(3);
    let cases: Vec<(Value, &str)> = vec![
        (json!([1, 2]), "not a credentials JSON object"),
        (json!({"client_id": "x"}), "\"type\" is missing"),
        (
            json!({"type": "external_account"}),
            "unknown \"type\" \"external_account\"",
        ),
        (without(&user, "client_id"), "\"client_id\" is missing"),
        (
            without(&user, "client_secret"),
            "\"client_secret\" is missing",
        ),
        (
            without(&user, "refresh_token"),
            "\"refresh_token\" is missing",
        ),
        (
            with(&user, "refresh_token", json!(" ")),
            "\"refresh_token\" is empty",
        ),
        (
            with(&user, "token_uri", json!("ftp://x/token")),
            "must be an https URL",
        ),
        (
            with(&user, "token_uri", json!("http://tokens.internal/token")),
            "must be an https URL",
        ),
        (with(&user, "client_secret", json!(42)), "unexpected value"),
        (without(&sa, "client_email"), "\"client_email\" is missing"),
        (
            without(&sa, "private_key_id"),
            "\"private_key_id\" is missing",
        ),
        (without(&sa, "private_key"), "\"private_key\" is missing"),
        (without(&sa, "token_uri"), "\"token_uri\" is missing"),
        (with(&sa, "private_key", json!("MIIEv…")), "not a PEM block"),
        (
            with(&sa, "private_key", json!(pem_truncated)),
            "no -----END PRIVATE KEY----- line",
        ),
        (
            with(&sa, "private_key", json!(pem_body_broken)),
            "not base64",
        ),
        (
            with(&sa, "private_key", json!(pem_bytes_cut.join("\n"))),
            "not an RSA key",
        ),
        (
            with(
                &sa,
                "private_key",
                json!("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"),
            ),
            "\"CERTIFICATE\" PEM block",
        ),
    ];
    for (value, expected) in cases {
        // WHEN each is parsed
        let error = parse(&value).expect_err(expected);
        // THEN it is a configuration error saying what is wrong, with no secret in it
        assert!(matches!(error, GoogleError::Config(_)), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains(expected),
            "{message:?} should say {expected:?}"
        );
        assert_no_secret(&message);
    }
    // AND bytes that are not JSON at all
    let error = GoogleCredentials::from_json(b"\xff{not json").unwrap_err();
    assert!(
        error.to_string().contains("syntax error at line 1"),
        "{error}"
    );
}

#[test]
fn a_pem_with_escaped_newlines_still_parses() {
    // GIVEN a key pasted through an environment variable, its newlines left as `\n`
    let mut sa = service_account_value();
    sa["private_key"] = json!(TEST_SERVICE_ACCOUNT_KEY_PEM.replace('\n', "\\n"));
    // THEN it parses to the same key
    let parsed = parse(&sa).unwrap();
    assert_eq!(parsed.grant_kind(), "jwt_bearer");
}

#[tokio::test]
async fn debug_output_never_shows_secrets_or_tokens() {
    // GIVEN both kinds of credentials, token sources that hold a token, and a cache
    let setup = Setup::start().await;
    let user = setup.user_tokens();
    let token = user.token().await.unwrap();
    let service = setup.service_tokens();
    service.token().await.unwrap();
    let cache = TokenCache::new(http(), setup.options());
    cache.tokens(&BandId::parse("band").unwrap(), user.credentials().clone());
    // WHEN they are debug-printed
    let printed = format!(
        "{:?} {:?} {user:?} {service:?} {cache:?}",
        user.credentials(),
        service.credentials()
    );
    // THEN no secret and no access token shows, but the account names do
    assert_no_secret(&printed);
    assert!(!printed.contains(&token), "{printed}");
    assert!(!printed.contains("ya29"), "{printed}");
    assert!(printed.contains(TEST_CLIENT_ID), "{printed}");
    assert!(printed.contains(TEST_SERVICE_ACCOUNT_EMAIL), "{printed}");
    assert!(printed.contains("<redacted>"), "{printed}");
}

// -- refresh-token grant -------------------------------------------------------------

#[tokio::test]
async fn refresh_token_grant_is_cached_until_the_margin_before_expiry() {
    // GIVEN tokens from an authorized_user file; the fake gives 1-hour tokens
    let setup = Setup::start().await;
    setup.fake().set_expires_in(3600);
    let tokens = setup.user_tokens();
    // WHEN a token is asked for ten times
    let first = tokens.token().await.unwrap();
    for _ in 0..9 {
        assert_eq!(tokens.token().await.unwrap(), first);
    }
    // THEN one token request was made, the refresh-token grant of the test client,
    // and the token is one the fake issued
    assert_eq!(setup.fake().request_count(), 1);
    let request = &setup.fake().requests()[0];
    assert_eq!(request.grant_type, "refresh_token");
    assert_eq!(request.client_id.as_deref(), Some(TEST_CLIENT_ID));
    assert_eq!(request.status, 200);
    assert!(setup.fake().is_issued(&first));

    // WHEN the clock reaches 54 minutes: still cached (refreshed 5 minutes early)
    setup.clock.advance(minutes(54));
    assert_eq!(tokens.token().await.unwrap(), first);
    assert_eq!(setup.fake().request_count(), 1);
    // WHEN it reaches 55 minutes: a new token
    setup.clock.advance(minutes(1));
    let second = tokens.token().await.unwrap();
    assert_ne!(second, first);
    assert_eq!(setup.fake().request_count(), 2);
    // AND that one is cached in turn
    assert_eq!(tokens.token().await.unwrap(), second);
    assert_eq!(setup.fake().request_count(), 2);
}

#[tokio::test]
async fn a_configured_token_url_replaces_the_credentials_token_uri() {
    // GIVEN credentials naming Google's token endpoint, and a configured one
    let setup = Setup::start().await;
    let credentials =
        GoogleCredentials::from_json(test_authorized_user_json(DEFAULT_TOKEN_URI).as_bytes())
            .unwrap();
    let options = OAuthOptions {
        token_url: Some(setup.server.token_uri()),
        ..setup.options()
    };
    // WHEN a token is asked for
    let tokens = OAuthTokens::new(http(), credentials, options);
    tokens.token().await.unwrap();
    // THEN the configured endpoint answered it
    assert_eq!(setup.fake().request_count(), 1);
}

#[tokio::test]
async fn the_margin_is_configurable_and_at_most_half_a_short_lifetime() {
    // GIVEN a 1-minute refresh margin and 1-hour tokens
    let setup = Setup::start().await;
    setup.fake().set_expires_in(3600);
    let credentials = GoogleCredentials::from_json(
        test_authorized_user_json(&setup.server.token_uri()).as_bytes(),
    )
    .unwrap();
    let options = setup.options().with_refresh_margin(Duration::from_secs(60));
    let tokens = OAuthTokens::new(http(), credentials, options);
    let first = tokens.token().await.unwrap();
    // THEN the token is kept for 58 minutes, and refreshed at 59
    setup.clock.advance(minutes(58));
    assert_eq!(tokens.token().await.unwrap(), first);
    setup.clock.advance(minutes(1));
    assert_ne!(tokens.token().await.unwrap(), first);
    assert_eq!(setup.fake().request_count(), 2);

    // GIVEN tokens living 2 minutes, shorter than the default 5-minute margin
    setup.fake().set_expires_in(120);
    let short = setup.user_tokens();
    let first = short.token().await.unwrap();
    // THEN each is kept for half its life rather than refreshed on every call
    setup.clock.advance(TimeDelta::seconds(59));
    assert_eq!(short.token().await.unwrap(), first);
    setup.clock.advance(TimeDelta::seconds(1));
    assert_ne!(short.token().await.unwrap(), first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_refresh() {
    // GIVEN tokens with nothing cached, and a token endpoint taking 100 ms to answer
    let setup = Setup::start().await;
    setup.fake().set_latency(Duration::from_millis(100));
    let tokens = Arc::new(setup.user_tokens());
    // WHEN 20 tasks ask for a token at once (released together by a barrier)
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (tokens, barrier) = (tokens.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                tokens.token().await
            })
        })
        .collect();
    let mut got = Vec::new();
    for task in tasks {
        got.push(task.await.unwrap().unwrap());
    }
    // THEN exactly one token request was made and all got its token
    assert_eq!(setup.fake().request_count(), 1);
    assert!(got.iter().all(|t| *t == got[0]));

    // AND after expiry, 20 concurrent callers again cause one refresh
    setup.clock.advance(minutes(60));
    let again = futures_util::future::join_all((0..20).map(|_| tokens.token())).await;
    assert_eq!(setup.fake().request_count(), 2);
    let again: Vec<String> = again.into_iter().map(Result::unwrap).collect();
    assert!(again.iter().all(|t| *t == again[0] && *t != got[0]));
}

#[tokio::test]
async fn invalid_grant_is_permanent_and_quotes_no_secret() {
    // GIVEN a refresh token the user revoked
    let setup = Setup::start().await;
    setup.fake().revoke(TEST_REFRESH_TOKEN);
    let tokens = setup.user_tokens();
    // WHEN a token is asked for
    let error = tokens.token().await.unwrap_err();
    // THEN it is Google's 400 invalid_grant, not retried, with no secret in it
    assert_eq!(
        error,
        GoogleError::Http {
            status: 400,
            reason: "invalid_grant".into(),
            message: "Bad Request".into()
        }
    );
    assert_eq!(setup.fake().request_count(), 1);
    assert!(setup.sleeper.delays().is_empty());
    assert_no_secret(&error.to_string());
    assert_no_secret(&format!("{error:?}"));
    // AND the next call asks again (a failure is not cached), failing the same way
    assert_eq!(tokens.token().await.unwrap_err(), error);
    assert_eq!(setup.fake().request_count(), 2);
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_permanent_invalid_client() {
    // GIVEN credentials whose client secret is wrong
    let setup = Setup::start().await;
    let json = test_authorized_user_json(&setup.server.token_uri())
        .replace(TEST_CLIENT_SECRET, "GOCSPX-wrong");
    let tokens = setup.tokens(&json);
    // WHEN a token is asked for
    let error = tokens.token().await.unwrap_err();
    // THEN it is the 401 invalid_client, not retried, without either secret
    assert_permanent(&setup, &error, 401, "invalid_client");
    assert!(!error.to_string().contains("GOCSPX"), "{error}");
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retried_then_succeed() {
    // GIVEN a token endpoint answering 503, 500, then 429, then normally
    let setup = Setup::start().await;
    setup.fake().fail_next(1, 503);
    setup.fake().fail_next(1, 500);
    setup.fake().fail_next(1, 429);
    let tokens = setup.user_tokens();
    // WHEN a token is asked for
    let token = tokens.token().await.unwrap();
    // THEN it came on the fourth request, after three backoffs
    assert!(setup.fake().is_issued(&token));
    let statuses: Vec<u16> = setup.fake().requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 500, 429, 200]);
    assert_eq!(setup.sleeper.delays().len(), 3);
}

#[tokio::test]
async fn retries_stop_after_max_attempts_with_the_last_error() {
    // GIVEN a token endpoint that keeps answering 503
    let setup = Setup::start().await;
    setup.fake().fail_next(10, 503);
    let tokens = setup.user_tokens();
    // WHEN a token is asked for
    let error = tokens.token().await.unwrap_err();
    // THEN the 4 attempts of the policy were made and the 503 is the result
    assert_eq!(error.status(), Some(503));
    assert_eq!(setup.fake().request_count(), 4);
}

#[tokio::test]
async fn an_unreachable_token_endpoint_is_a_retried_transport_error() {
    // GIVEN credentials pointing at a port nobody listens on
    let setup = Setup::start().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/token", listener.local_addr().unwrap());
    drop(listener);
    let tokens = setup.tokens(&test_authorized_user_json(&dead));
    // WHEN a token is asked for
    let error = tokens.token().await.unwrap_err();
    // THEN it is a transport error, after the retries, naming no secret
    assert!(matches!(error, GoogleError::Transport(_)), "{error:?}");
    assert_eq!(setup.sleeper.delays().len(), 3);
    assert_no_secret(&error.to_string());
}

#[tokio::test]
async fn invalidate_reject_and_force_refresh_get_a_new_token() {
    let setup = Setup::start().await;
    let tokens = setup.user_tokens();
    let first = tokens.token().await.unwrap();
    // WHEN a token other than the cached one is rejected: nothing changes
    tokens.reject("ya29.some-older-token").await;
    assert_eq!(tokens.token().await.unwrap(), first);
    // WHEN the cached one is rejected: the next call gets a new one
    tokens.reject(&first).await;
    let second = tokens.token().await.unwrap();
    assert_ne!(second, first);
    // WHEN invalidated: a new one again
    tokens.invalidate().await;
    let third = tokens.token().await.unwrap();
    assert_ne!(third, second);
    // WHEN forced: a new one, which is then the cached one
    let fourth = tokens.force_refresh().await.unwrap();
    assert_ne!(fourth, third);
    assert_eq!(tokens.token().await.unwrap(), fourth);
    assert_eq!(setup.fake().request_count(), 4);
}

// -- service accounts ----------------------------------------------------------------

#[tokio::test]
async fn a_service_account_assertion_is_signed_verified_and_accepted() {
    // GIVEN a service-account key file delegating to a user, with one scope
    let setup = Setup::start().await;
    let json = test_service_account_json(&setup.server.token_uri());
    let credentials = GoogleCredentials::from_json(json.as_bytes())
        .unwrap()
        .with_subject("drummer@band.example")
        .with_scopes(["https://www.googleapis.com/auth/drive.readonly"]);
    let tokens = OAuthTokens::new(http(), credentials, setup.options());
    // WHEN a token is asked for
    let token = tokens.token().await.unwrap();
    // THEN the fake verified the RS256 assertion and issued it
    assert!(setup.fake().is_issued(&token));
    let request = &setup.fake().requests()[0];
    assert_eq!(request.grant_type, JWT_BEARER_GRANT);
    assert_eq!(request.status, 200);
    // AND the assertion carries the documented header and claims
    let header = request.jwt_header.as_ref().unwrap();
    assert_eq!(
        *header,
        json!({"alg": "RS256", "typ": "JWT", "kid": TEST_SERVICE_ACCOUNT_KEY_ID})
    );
    let claims = request.jwt_claims.as_ref().unwrap();
    let iat = setup.clock.now().timestamp();
    assert_eq!(
        *claims,
        json!({
            "iss": TEST_SERVICE_ACCOUNT_EMAIL,
            "scope": "https://www.googleapis.com/auth/drive.readonly",
            "aud": setup.server.token_uri(),
            "iat": iat,
            "exp": iat + 3600,
            "sub": "drummer@band.example",
        })
    );
    // AND it is cached like any token
    assert_eq!(tokens.token().await.unwrap(), token);
    assert_eq!(setup.fake().request_count(), 1);
}

#[tokio::test]
async fn default_scopes_are_asked_for_space_separated_without_a_subject() {
    let setup = Setup::start().await;
    setup.service_tokens().token().await.unwrap();
    let claims = setup.fake().requests()[0].jwt_claims.clone().unwrap();
    assert_eq!(claims["scope"], DEFAULT_SCOPES.join(" "));
    assert!(claims.get("sub").is_none(), "{claims}");
}

/// POST a jwt-bearer grant with `assertion` straight to the fake.
async fn post_assertion(setup: &Setup, assertion: &str) -> (u16, Value) {
    let response = http()
        .post(setup.server.token_uri())
        .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", assertion)])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn service_account(setup: &Setup) -> ServiceAccount {
    service_account_with(setup, |_| {})
}

/// The test service account, its key file edited by `edit` first.
fn service_account_with(setup: &Setup, edit: impl FnOnce(&mut Value)) -> ServiceAccount {
    let mut file: Value =
        serde_json::from_str(&test_service_account_json(&setup.server.token_uri())).unwrap();
    edit(&mut file);
    match GoogleCredentials::from_json(file.to_string().as_bytes()).unwrap() {
        GoogleCredentials::ServiceAccount(sa) => sa,
        other => panic!("expected a service account, got {other:?}"),
    }
}

#[tokio::test]
async fn the_fake_refuses_a_tampered_signature_and_accepts_the_genuine_one() {
    // GIVEN a genuine assertion
    let setup = Setup::start().await;
    let sa = service_account(&setup);
    let scopes = vec!["s".to_owned()];
    let genuine = sa.assertion(&scopes, setup.clock.now()).unwrap();
    let (head, signature) = genuine.rsplit_once('.').unwrap();
    // WHEN one byte of its signature is changed
    let mut bytes = B64URL.decode(signature).unwrap();
    bytes[17] ^= 0x01;
    let tampered = format!("{head}.{}", B64URL.encode(&bytes));
    let (status, body) = post_assertion(&setup, &tampered).await;
    // THEN the fake refuses it as Google does
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    );
    // WHEN the claims are changed under the genuine signature (another subject)
    let (header, _) = head.split_once('.').unwrap();
    let forged_claims = B64URL.encode(
        json!({"iss": TEST_SERVICE_ACCOUNT_EMAIL, "scope": "s", "aud": setup.server.token_uri(),
            "iat": setup.clock.now().timestamp(), "exp": setup.clock.now().timestamp() + 3600,
            "sub": "ceo@band.example"})
        .to_string(),
    );
    let (status, body) =
        post_assertion(&setup, &format!("{header}.{forged_claims}.{signature}")).await;
    // THEN it is refused too
    assert_eq!(
        (status, body["error_description"].as_str()),
        (400, Some("Invalid JWT Signature."))
    );
    // AND the genuine assertion is accepted
    let (status, body) = post_assertion(&setup, &genuine).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "s");
    assert!(body["expires_in"].as_u64().is_some());
}

#[tokio::test]
async fn the_fake_checks_audience_lifetime_issuer_and_key_id() {
    let setup = Setup::start().await;
    let sa = service_account(&setup);
    let scopes = vec!["s".to_owned()];
    let now = setup.clock.now();
    let refused = |body: &Value| body["error_description"].as_str().unwrap_or("").to_owned();
    // GIVEN an assertion issued two hours ago (expired)
    let (status, body) =
        post_assertion(&setup, &sa.assertion(&scopes, now - minutes(120)).unwrap()).await;
    assert_eq!(status, 400);
    assert!(refused(&body).contains("short-lived token"), "{body}");
    // GIVEN one issued an hour from now
    let (status, _) =
        post_assertion(&setup, &sa.assertion(&scopes, now + minutes(60)).unwrap()).await;
    assert_eq!(status, 400);
    // GIVEN no scope
    let (status, body) = post_assertion(&setup, &sa.assertion(&[], now).unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    // GIVEN another audience
    let elsewhere = service_account_with(&setup, |f| {
        f["token_uri"] = json!("https://oauth2.googleapis.com/token")
    });
    let (status, body) = post_assertion(&setup, &elsewhere.assertion(&scopes, now).unwrap()).await;
    assert_eq!(status, 400);
    assert!(refused(&body).contains("audience"), "{body}");
    // GIVEN another key id
    let other_key = service_account_with(&setup, |f| f["private_key_id"] = json!("another-key"));
    let (status, body) = post_assertion(&setup, &other_key.assertion(&scopes, now).unwrap()).await;
    assert_eq!(
        (status, refused(&body).as_str()),
        (400, "Invalid JWT Signature.")
    );
    // GIVEN an account the fake does not know
    let sa = service_account_with(&setup, |f| {
        f["client_email"] = json!("stranger@elsewhere.iam.gserviceaccount.com")
    });
    let (status, body) = post_assertion(&setup, &sa.assertion(&scopes, now).unwrap()).await;
    assert_eq!(status, 400);
    assert!(refused(&body).contains("account not found"), "{body}");
    // GIVEN garbage
    let (status, _) = post_assertion(&setup, "not.a.jwt").await;
    assert_eq!(status, 400);
    // AND none of these was issued a token
    assert!(setup.fake().issued_tokens().is_empty());
}

#[tokio::test]
async fn a_service_account_the_endpoint_refuses_is_a_permanent_error() {
    // GIVEN the fake checking assertions against a clock two hours ahead
    let setup = Setup::start().await;
    let ahead = Arc::new(FixedClock::new(setup.clock.now() + minutes(120)));
    setup.fake().set_clock(ahead);
    let tokens = setup.service_tokens();
    // WHEN a token is asked for
    let error = tokens.token().await.unwrap_err();
    // THEN the invalid_grant comes back at once, without the assertion or the key
    assert_permanent(&setup, &error, 400, "invalid_grant");
    assert!(!error.to_string().contains("eyJ"), "{error}");
}

// -- the per-process cache -----------------------------------------------------------

#[tokio::test]
async fn the_token_cache_keeps_one_source_per_band_until_its_credentials_change() {
    let setup = Setup::start().await;
    let cache = TokenCache::new(http(), setup.options());
    let band = BandId::parse("the-beatles").unwrap();
    let other = BandId::parse("the-stones").unwrap();
    let user_json = test_authorized_user_json(&setup.server.token_uri());
    let user = || GoogleCredentials::from_json(user_json.as_bytes()).unwrap();
    // GIVEN a band's tokens, used once
    let first = cache.tokens(&band, user());
    let token = first.token().await.unwrap();
    // WHEN the same credentials come again (a warm invocation)
    let again = cache.tokens(&band, user());
    // THEN it is the same source, with the token still cached
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(again.token().await.unwrap(), token);
    assert_eq!(setup.fake().request_count(), 1);
    // AND another band gets its own
    let others = cache.tokens(&other, user());
    assert!(!Arc::ptr_eq(&first, &others));
    assert_eq!(cache.len(), 2);
    // WHEN the band's credentials change (a new refresh token)
    setup
        .fake()
        .add_refresh_token(TEST_CLIENT_ID, "1//0new-refresh-token", TEST_REFRESH_SCOPE);
    let changed = user_json.replace(TEST_REFRESH_TOKEN, "1//0new-refresh-token");
    let replaced = cache.tokens(
        &band,
        GoogleCredentials::from_json(changed.as_bytes()).unwrap(),
    );
    // THEN the entry is replaced, and a new token fetched with them
    assert!(!Arc::ptr_eq(&first, &replaced));
    assert_ne!(replaced.token().await.unwrap(), token);
    assert!(Arc::ptr_eq(
        &replaced,
        &cache.tokens(
            &band,
            GoogleCredentials::from_json(changed.as_bytes()).unwrap()
        )
    ));
    assert_eq!(cache.len(), 2);
    // AND removing a band forgets it
    cache.remove(&other);
    assert_eq!(cache.len(), 1);
}

#[tokio::test]
async fn on_aws_the_token_cache_refuses_a_plain_http_token_uri() {
    // GIVEN a band's stored credentials whose token_uri is plain http to loopback
    // (stored before the API refused them; inside Lambda that is the Runtime API)
    let setup = Setup::start().await;
    let cache = TokenCache::new(http(), setup.options());
    let key = CredentialKey::generate().unwrap();
    let band = BandId::parse("the-beatles").unwrap();
    let json = test_service_account_json(&setup.server.token_uri());
    let stored = sealed::seal(&key, json.as_bytes(), &sealed::credentials_context(&band)).unwrap();
    // WHEN the worker on AWS opens them
    let error = cache.tokens_from_sealed(&band, &stored, &key).unwrap_err();
    // THEN they are refused as a configuration error, and nothing was asked of it
    assert!(
        matches!(&error, GoogleError::Config(m) if m.contains("https")),
        "{error:?}"
    );
    assert_eq!(setup.fake().request_count(), 0);
    assert!(cache.is_empty());
}

#[tokio::test]
async fn the_token_cache_opens_sealed_credentials_for_their_band_only() {
    // GIVEN a band's service-account file sealed under the credentials key
    let setup = Setup::start().await;
    let local = OAuthOptions {
        deployment: bandsync::deployment::Deployment::Local,
        ..setup.options()
    };
    let cache = TokenCache::new(http(), local);
    let key = CredentialKey::generate().unwrap();
    let band = BandId::parse("the-beatles").unwrap();
    let json = test_service_account_json(&setup.server.token_uri());
    let stored = sealed::seal(&key, json.as_bytes(), &sealed::credentials_context(&band)).unwrap();
    // WHEN the band's tokens are built from it
    let tokens: Arc<dyn AccessTokens> = cache.tokens_from_sealed(&band, &stored, &key).unwrap();
    // THEN they work
    assert!(setup.fake().is_issued(&tokens.token().await.unwrap()));
    // AND the same sealed value on another band, or under another key, is refused
    // with a configuration error that names the band and shows nothing secret
    let thief = BandId::parse("the-stones").unwrap();
    let error = cache.tokens_from_sealed(&thief, &stored, &key).unwrap_err();
    assert!(
        matches!(&error, GoogleError::Config(m) if m.contains("the-stones") && m.contains("does not open")),
        "{error:?}"
    );
    let other_key = CredentialKey::generate().unwrap();
    assert!(
        cache
            .tokens_from_sealed(&band, &stored, &other_key)
            .is_err()
    );
    assert_eq!(cache.len(), 1);
    // AND sealed garbage is a parse error, not a panic
    let junk = sealed::seal(&key, b"{}", &sealed::credentials_context(&band)).unwrap();
    let error = cache.tokens_from_sealed(&band, &junk, &key).unwrap_err();
    assert!(error.to_string().contains("\"type\" is missing"), "{error}");
}

#[test]
fn the_process_wide_cache_is_one_instance() {
    let a = TokenCache::process_wide().unwrap();
    let b = TokenCache::process_wide().unwrap();
    assert!(std::ptr::eq(a, b));
}
